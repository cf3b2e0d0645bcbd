"""The gateway's one Redis client, and what the gateway does while Redis is down.

Every Redis call of the gateway goes through `RedisState.call`. A call that
fails marks Redis as down, and from then on calls raise `RedisUnavailable` at
once, without touching the network, so a dead Redis costs at most one
timeout per outage and per process. A PING every `redis_health_check_seconds`
notices when Redis is back, so the gateway recovers without a restart. The
outage is logged when it starts, then at most once per
`redis_outage_log_seconds`, and once more when it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import anyio
import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from services.common.redis_keys import redacted_redis_url
from services.gateway.redis_metrics import RedisMetrics
from services.gateway.redis_settings import RedisSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[["redis.asyncio.Redis"], Awaitable[T]]


class RedisUnavailable(Exception):
    """Redis is turned off, down, or failed this call. The caller goes on without it."""


class RedisState:
    """Owns the Redis client and tracks whether Redis can be reached."""

    def __init__(self, settings: RedisSettings, metrics: RedisMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.key_prefix = settings.redis_key_prefix
        self._url = redacted_redis_url(settings.redis_url) if settings.redis_url else ""
        self._client = _create_client(settings) if settings.redis_url else None
        # "unknown" until the first PING at start-up.
        self._status: Literal["unknown", "up", "down"] = "unknown"
        self._down_since = time.monotonic()
        self._last_outage_log = self._down_since
        self._calls_skipped = 0
        self._scripts: dict[str, AsyncScript] = {}

    @property
    def enabled(self) -> bool:
        """True when a Redis URL is set, whether or not Redis is up."""
        return self._client is not None

    @property
    def is_up(self) -> bool:
        return self._status == "up"

    async def call(self, operation: Operation[T]) -> T:
        """Run `operation` with the client, or raise RedisUnavailable.

        Raises at once while Redis is off or down. A connection error or a
        timeout marks Redis as down, and an error reply (a bug or a key of the
        wrong type under the prefix) is logged. Both raise RedisUnavailable.
        """
        if self._client is None or self._status != "up":
            self._calls_skipped += 1
            raise RedisUnavailable
        try:
            return await operation(self._client)
        except redis.ResponseError as error:
            logger.error("Redis returned an error: %s", error, extra={"redis_url": self._url})
            raise RedisUnavailable from error
        except (redis.RedisError, OSError) as error:
            self._mark_down(error)
            raise RedisUnavailable from error

    async def run_script(
        self, source: str, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> Any:
        """Run the Lua script `source` through `call`, loading it into Redis when needed."""
        script = self._scripts.get(source)
        if script is None:
            if self._client is None:
                raise RedisUnavailable
            script = self._scripts[source] = self._client.register_script(source)
        return await self.call(
            lambda client: script(keys=list(keys), args=list(args), client=client)
        )

    async def check(self) -> None:
        """PING Redis once and record the result."""
        if self._client is None:
            return
        try:
            await self._client.ping()
        except (redis.RedisError, OSError) as error:
            self._mark_down(error)
        else:
            self._mark_up()

    async def monitor(self) -> None:
        """Call `check` every `redis_health_check_seconds` until cancelled."""
        while True:
            try:
                await self.check()
            except Exception as error:
                # An unexpected error must not end the loop, which would end the app too.
                logger.exception("Redis health check failed")
                self._mark_down(error)
            await anyio.sleep(self.settings.redis_health_check_seconds)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _mark_down(self, error: BaseException) -> None:
        now = time.monotonic()
        if self._status != "down":
            self._status = "down"
            self._down_since = now
            self._last_outage_log = now
            self._calls_skipped = 0
            self.metrics.set_redis_up(False)
            logger.warning(
                "Redis unavailable, so %s until it is back: %s",
                self._outage_consequence(),
                _describe(error),
                extra={"redis_url": self._url},
            )
            return
        if now - self._last_outage_log >= self.settings.redis_outage_log_seconds:
            self._last_outage_log = now
            logger.warning(
                "Redis still unavailable after %.0f s, %d Redis calls skipped so far: %s",
                now - self._down_since,
                self._calls_skipped,
                _describe(error),
                extra={"redis_url": self._url},
            )

    def _mark_up(self) -> None:
        if self._status == "up":
            return
        first_check = self._status == "unknown"
        self._status = "up"
        self.metrics.set_redis_up(True)
        if first_check:
            logger.info("Redis connected", extra={"redis_url": self._url})
            return
        logger.info(
            "Redis available again after %.0f s, %d Redis calls were skipped meanwhile",
            time.monotonic() - self._down_since,
            self._calls_skipped,
            extra={"redis_url": self._url},
        )

    def _outage_consequence(self) -> str:
        if self.settings.redis_failure_mode == "closed" and self.settings.rate_limits:
            return "rate-limited routes return 503 and responses are not cached"
        return "requests are served without rate limits and without the response cache"


def _create_client(settings: RedisSettings) -> redis.asyncio.Redis:
    # No retries: a retry would make the request wait for a Redis that is
    # probably down. The health check brings Redis back instead.
    return redis.asyncio.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        retry=Retry(NoBackoff(), 0),
    )


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
