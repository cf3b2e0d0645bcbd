"""Gateway settings for Redis, rate limits and the response cache (`VS_GATEWAY_*` variables)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from services.common.redis_keys import DEFAULT_KEY_PREFIX, check_key_prefix, check_redis_url

MIB = 1024 * 1024
DEFAULT_TIER = "default"
RedisFailureMode = Literal["open", "closed"]


class RateLimitTier(BaseModel):
    """The rate limit of every client key of one tier: `requests` per `per_seconds`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: int = Field(ge=1, description="Requests allowed per window, and the largest burst.")
    per_seconds: float = Field(gt=0, le=86_400, description="Window length in seconds.")


class RedisSettings(BaseSettings):
    """Redis connection, rate limits and response cache, mixed into GatewaySettings."""

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description=(
            "Redis that holds the rate-limit state and the response cache, shared by every "
            "gateway process. Empty turns both off."
        ),
    )
    redis_key_prefix: str = Field(
        default=DEFAULT_KEY_PREFIX,
        description=(
            "Prefix of every key the gateway reads or writes. Use one prefix per deployment, "
            "the same as the model services' redis_key_prefix."
        ),
    )
    redis_timeout_seconds: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description=(
            "Maximum time in seconds to connect to Redis or to wait for one reply. A request "
            "that hits it continues without Redis, and Redis counts as down."
        ),
    )
    redis_health_check_seconds: float = Field(
        default=1.0,
        gt=0,
        description=(
            "Seconds between PINGs to Redis. While Redis is down, requests skip it and the "
            "next successful PING brings caching and rate limits back."
        ),
    )
    redis_outage_log_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between the log lines that report that Redis is still down.",
    )
    redis_failure_mode: RedisFailureMode = Field(
        default="open",
        description=(
            "What rate-limited routes do while Redis is down: open serves them without rate "
            "limits (and without the cache), closed returns 503."
        ),
    )
    rate_limits: Annotated[dict[str, RateLimitTier], NoDecode] = Field(
        default_factory=dict,
        description=(
            'Rate limit per client tier as JSON, e.g. {"default": {"requests": 60, '
            '"per_seconds": 60}}. A tier not listed uses "default". Without a "default" '
            "entry its clients are not limited. Empty turns rate limiting off."
        ),
    )
    cache_ttl_seconds: int = Field(
        default=300,
        ge=0,
        description=(
            "Seconds a cached response of /v1/classify, /v1/detect or /v1/analyze is kept. "
            "0 turns the cache off."
        ),
    )
    cache_max_entry_bytes: int = Field(
        default=1 * MIB, gt=0, description="Largest response body in bytes that is cached."
    )

    @field_validator("redis_url", mode="after")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        return check_redis_url(value)

    @field_validator("redis_key_prefix", mode="after")
    @classmethod
    def _check_key_prefix(cls, value: str) -> str:
        return check_key_prefix(value)

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _rate_limits_from_json(cls, value: Any) -> Any:
        # NoDecode leaves the environment value as text, so that invalid JSON
        # becomes a validation error that names the variable.
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            raise ValueError(
                'must be a JSON object of tier name to limit, for example {"default": '
                '{"requests": 60, "per_seconds": 60}}'
            ) from None

    @model_validator(mode="after")
    def _rate_limits_need_redis(self) -> Self:
        if self.rate_limits and not self.redis_url:
            raise ValueError(
                "rate_limits needs redis_url because the limits are counted in Redis. "
                "Set VS_GATEWAY_REDIS_URL or remove VS_GATEWAY_RATE_LIMITS"
            )
        return self

    def rate_limit_for(self, tier: str) -> RateLimitTier | None:
        """Return the limit of `tier`, else the "default" tier's, else None (not limited)."""
        return self.rate_limits.get(tier) or self.rate_limits.get(DEFAULT_TIER)
