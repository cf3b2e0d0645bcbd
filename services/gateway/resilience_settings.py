"""Gateway settings for retries, circuit breakers, per-backend overrides and graceful shutdown.

`GatewaySettings` inherits these fields, so they are read from the same
`VS_GATEWAY_*` environment variables.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.settings import ServiceSettings

BackendName = Literal["classifier", "detector"]
PositiveSeconds = Annotated[float, Field(gt=0)]


class BackendOverride(BaseModel):
    """Options of one backend; unset fields take the gateway-wide value of the same name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout_seconds: PositiveSeconds | None = None
    read_timeout_seconds: PositiveSeconds | None = None
    write_timeout_seconds: PositiveSeconds | None = None
    pool_timeout_seconds: PositiveSeconds | None = None
    retries: Annotated[int, Field(ge=0, le=5)] | None = None
    circuit_failure_threshold: Annotated[int, Field(ge=1)] | None = None
    circuit_failure_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    circuit_open_seconds: PositiveSeconds | None = None


class ResilienceSettings(ServiceSettings):
    """Retries, circuit breakers and shutdown of the gateway."""

    retries: int = Field(
        default=2,
        ge=0,
        le=5,
        description=(
            "Extra attempts of an idempotent backend call after a failed connection or a "
            "backend 503. Timeouts, other 5xx and 4xx are never retried."
        ),
    )
    retry_backoff_seconds: float = Field(
        default=0.05,
        gt=0,
        description=(
            "Base of the exponential backoff: retry n waits a random time between 0 and "
            "retry_backoff_seconds * 2**(n-1), at most retry_max_delay_seconds."
        ),
    )
    retry_max_delay_seconds: float = Field(
        default=1.0,
        gt=0,
        description=(
            "Longest wait before a retry. A backend 503 whose Retry-After asks for a longer "
            "wait is not retried but returned to the client with that Retry-After."
        ),
    )
    circuit_failure_threshold: int = Field(
        default=5,
        ge=1,
        description="Consecutive failed calls to a backend that open its circuit.",
    )
    circuit_failure_ratio: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description=(
            "Share of failed calls within circuit_window_seconds that opens the circuit, "
            "once the window holds at least circuit_min_calls calls."
        ),
    )
    circuit_window_seconds: float = Field(
        default=10.0, gt=0, description="Length in seconds of the failure-ratio window."
    )
    circuit_min_calls: int = Field(
        default=20,
        ge=1,
        description="Calls the window must hold before circuit_failure_ratio applies.",
    )
    circuit_open_seconds: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Cool-down in seconds of an open circuit, during which calls to the backend get "
            "503 at once. Then one call goes through as a probe. A backend 503 with a longer "
            "Retry-After extends the cool-down, up to 300 s."
        ),
    )
    backend_overrides: dict[BackendName, BackendOverride] = Field(
        default_factory=dict,
        description=(
            "Per-backend timeouts, retries and circuit options as JSON, e.g. "
            '{"detector": {"read_timeout_seconds": 60, "retries": 0}}.'
        ),
    )
    shutdown_drain_seconds: float = Field(
        default=5.0,
        ge=0,
        description=(
            "Seconds between SIGTERM and the start of the shutdown, during which /readyz "
            "returns 503 while requests are still served, so that load balancers stop "
            "sending new ones. Requests in flight then finish before the process exits."
        ),
    )
