"""Rate limits per client key, counted in Redis so that every gateway process shares them.

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept as
one timestamp per key). A tier allows `requests` per `per_seconds`, in a
burst of up to `requests`, refilling one request every
`per_seconds / requests`. One Lua script reads and updates the key with the
clock of the Redis server. Redis runs a script atomically, so concurrent
requests through any number of gateway processes are counted one by one, and
clock skew between gateway hosts does not matter.

Responses carry the `RateLimit-Limit`, `RateLimit-Remaining` and
`RateLimit-Reset` headers of the IETF draft "RateLimit header fields for
HTTP" (draft-ietf-httpapi-ratelimit-headers), and a 429 adds `Retry-After`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import ServiceUnavailable, TooManyRequests
from services.gateway.auth import ANONYMOUS, ClientIdentity
from services.gateway.redis_settings import RateLimitTier
from services.gateway.redis_state import RedisState, RedisUnavailable

MICROSECONDS = 1_000_000

# KEYS[1]: the client's key. ARGV[1]: requests per window. ARGV[2]: microseconds
# between two requests at the steady rate, a whole number so that every sum
# below is exact in Lua's doubles. The key contains the theoretical arrival time
# (TAT) in microseconds: the time at which the bucket would be full again.
# Returns {allowed (1 or 0), remaining, microseconds until the bucket is full,
# microseconds until the next request is allowed}.
GCRA_SCRIPT = """
local limit = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local capacity = interval * limit
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > capacity then
  return {0, 0, tat - now, new_tat - capacity - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((capacity - (new_tat - now)) / interval), new_tat - now, 0}
"""


@dataclass(frozen=True)
class RateLimitDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers


class RateLimiter:
    """Checks and counts one request of a client against its tier's limit."""

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._settings = state.settings

    async def check(self, client: ClientIdentity) -> dict[str, str]:
        """Count one request of `client` and return the rate-limit headers of the response.

        Raises TooManyRequests (429) over the limit. While Redis is down it
        returns no headers (failure mode open) or raises ServiceUnavailable
        (503, failure mode closed). Clients of a tier without a limit pass.
        """
        tier = self._settings.rate_limit_for(client.tier)
        if tier is None:
            return {}
        try:
            decision = await self._count(client.key_id, tier)
        except RedisUnavailable:
            if self._settings.redis_failure_mode == "closed":
                raise ServiceUnavailable(
                    "rate limiting is unavailable, so this route is closed. Retry shortly.",
                    headers={
                        "Retry-After": str(math.ceil(self._settings.redis_health_check_seconds))
                    },
                ) from None
            return {}
        if not decision.allowed:
            self._state.metrics.count_rejection(client.tier)
            raise TooManyRequests(
                f"rate limit exceeded: {tier.requests} requests per {tier.per_seconds:g} s "
                f"for this client. Retry after {decision.retry_after_seconds} s.",
                headers=decision.headers(),
            )
        return decision.headers()

    async def _count(self, key_id: str, tier: RateLimitTier) -> RateLimitDecision:
        interval = math.ceil(tier.per_seconds * MICROSECONDS / tier.requests)
        key = f"{self._state.key_prefix}:ratelimit:{key_id}"
        allowed, remaining, reset_us, retry_us = await self._state.run_script(
            GCRA_SCRIPT, [key], [tier.requests, interval]
        )
        return RateLimitDecision(
            allowed=bool(allowed),
            limit=tier.requests,
            remaining=int(remaining),
            reset_seconds=math.ceil(int(reset_us) / MICROSECONDS),
            # At least 1: "Retry-After: 0" would invite an immediate retry that fails again.
            retry_after_seconds=max(1, math.ceil(int(retry_us) / MICROSECONDS)),
        )


async def enforce_rate_limit(request: Request) -> None:
    """Count the request against its client's limit, or raise 429 or 503 when it may not run."""
    limiter: RateLimiter = request.app.state.rate_limiter
    # The app-wide authenticate dependency runs before this route dependency
    # and sets the client; a route without authentication counts as anonymous.
    client: ClientIdentity = getattr(request.state, "client", ANONYMOUS)
    headers = await limiter.check(client)
    request.state.response_headers = {**getattr(request.state, "response_headers", {}), **headers}


# Add to the `dependencies` of each route that the rate limits cover.
RATE_LIMITED = Depends(enforce_rate_limit)


def install_response_headers(app: FastAPI) -> None:
    """Copy `request.state.response_headers` onto the response, error responses included.

    Routes return their own Response objects, which FastAPI sends without the
    headers that dependencies set, so the rate-limit headers are added here.
    """
    app.add_middleware(ResponseHeaders)


class ResponseHeaders:
    """ASGI middleware that adds the headers in `request.state.response_headers` to the response.

    A plain ASGI class, because `@app.middleware("http")` runs every request
    through an extra task and memory streams.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra: dict[str, str] = scope.get("state", {}).get("response_headers", {})
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
