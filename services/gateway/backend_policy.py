"""The timeouts, retries and circuit options of one backend, from the gateway settings."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from services.gateway.circuit import CircuitConfig
from services.gateway.resilience_settings import BackendName, BackendOverride
from services.gateway.retry import RetryPolicy
from services.gateway.settings import GatewaySettings


@dataclass(frozen=True)
class BackendPolicy:
    timeout: httpx.Timeout
    retry: RetryPolicy
    circuit: CircuitConfig


def backend_policy(settings: GatewaySettings, backend: BackendName) -> BackendPolicy:
    """Return the options of `backend`: its entry in backend_overrides, else the shared values."""
    override = settings.backend_overrides.get(backend, BackendOverride())

    def pick(name: str) -> float:
        value = getattr(override, name)
        return float(getattr(settings, name) if value is None else value)

    timeout = httpx.Timeout(
        connect=pick("connect_timeout_seconds"),
        read=pick("read_timeout_seconds"),
        write=pick("write_timeout_seconds"),
        pool=pick("pool_timeout_seconds"),
    )
    retry = RetryPolicy(
        retries=int(pick("retries")),
        backoff_seconds=settings.retry_backoff_seconds,
        max_delay_seconds=settings.retry_max_delay_seconds,
    )
    circuit = CircuitConfig(
        failure_threshold=int(pick("circuit_failure_threshold")),
        failure_ratio=pick("circuit_failure_ratio"),
        window_seconds=settings.circuit_window_seconds,
        min_calls=settings.circuit_min_calls,
        open_seconds=pick("circuit_open_seconds"),
    )
    return BackendPolicy(timeout=timeout, retry=retry, circuit=circuit)
