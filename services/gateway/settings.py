"""Gateway settings, read from `VS_GATEWAY_*` environment variables."""

from __future__ import annotations

from typing import Self

import httpx
from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.gateway.access_settings import AccessSettings, RequestLimitSettings
from services.gateway.redis_settings import RedisSettings
from services.gateway.resilience_settings import ResilienceSettings

MIB = 1024 * 1024


class GatewaySettings(ResilienceSettings, AccessSettings, RequestLimitSettings, RedisSettings):
    """Backend addresses, timeouts, connection pool, access and upload limits of the gateway.

    Retries, circuit breakers, per-backend overrides and shutdown come from
    `ResilienceSettings`; the Redis, rate-limit and cache settings from `RedisSettings`.
    """

    model_config = SettingsConfigDict(env_prefix="VS_GATEWAY_", extra="ignore", frozen=True)

    classifier_url: str = Field(
        default="http://127.0.0.1:8001",
        description=(
            "Base URL of the classifier service, with scheme and host. A path, if any, "
            "prefixes every backend route."
        ),
    )
    detector_url: str = Field(
        default="http://127.0.0.1:8002",
        description=(
            "Base URL of the detector service, like classifier_url. An empty value turns "
            "the detection routes off: they return 503 and /readyz ignores the detector."
        ),
    )

    connect_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Maximum time in seconds to open a connection to a backend."
    )
    read_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Maximum time in seconds to wait for the next chunk of a backend response. "
            "It includes the backend's inference time. A longer wait returns 504."
        ),
    )
    write_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Maximum time in seconds to send one chunk of a request to a backend.",
    )
    pool_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Maximum time in seconds that a request waits for a free pooled connection "
            "before the gateway returns 503."
        ),
    )
    ready_timeout_seconds: float = Field(
        default=1.0,
        gt=0,
        description=(
            "Maximum time in seconds for each backend /readyz call made by the gateway's "
            "/readyz. Keep it below the timeout of the probe that calls the gateway."
        ),
    )

    max_connections: int = Field(
        default=100, gt=0, description="Maximum open connections to each backend."
    )
    max_keepalive_connections: int = Field(
        default=20, ge=0, description="Maximum idle connections kept open to each backend."
    )
    keepalive_expiry_seconds: float = Field(
        default=4.0,
        gt=0,
        description=(
            "Seconds after which the gateway closes an idle backend connection. Keep it below "
            "the backends' own keep-alive timeout (5 s in uvicorn 0.55 by default), or a "
            "request can be sent on a connection that the backend is closing."
        ),
    )

    max_body_bytes: int = Field(
        default=20 * MIB,
        gt=0,
        description=(
            "Maximum request body size in bytes. Larger uploads get 413 as soon as the "
            "declared Content-Length or the bytes received so far exceed it."
        ),
    )

    max_pixels: int = Field(
        default=50_000_000,
        gt=0,
        description=(
            "Largest image in pixels (width x height) that the gateway forwards, checked "
            "from the image header before the backend call. /v1/analyze also decodes "
            "images up to this size for cropping."
        ),
    )
    max_analyze_objects: int = Field(
        default=32,
        ge=1,
        description=(
            "Largest max_det of a /v1/analyze request, and its default. Keep it at or below "
            "the classifier's max_batch_images, because all crops go in one batch."
        ),
    )

    @field_validator("detector_url")
    @classmethod
    def _validate_optional_backend_url(cls, value: str) -> str:
        return cls._validate_backend_url(value) if value else ""

    @field_validator("classifier_url")
    @classmethod
    def _validate_backend_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as error:
            raise ValueError(f"invalid URL {value!r}: {error}") from error
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"expected an absolute http(s) URL such as http://127.0.0.1:8001, got {value!r}"
            )
        if url.port is not None and not 0 < url.port < 65536:
            raise ValueError(f"port must be between 1 and 65535, got {url.port} in {value!r}")
        if url.query or url.fragment:
            raise ValueError(f"expected a base URL without query or fragment, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _validate_pool_limits(self) -> Self:
        if self.max_keepalive_connections > self.max_connections:
            raise ValueError(
                f"max_keepalive_connections ({self.max_keepalive_connections}) must not "
                f"exceed max_connections ({self.max_connections})"
            )
        return self

    def backend_limits(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_keepalive_connections,
            keepalive_expiry=self.keepalive_expiry_seconds,
        )
