"""Prometheus metrics of the gateway: the common HTTP metrics plus backend calls."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS, ServiceMetrics


class GatewayMetrics(ServiceMetrics):
    """The common service metrics plus the latency and failures of calls to backends."""

    def __init__(self, service: str = "gateway") -> None:
        super().__init__(service)
        self.backend_latency = Histogram(
            "visionserve_backend_request_duration_seconds",
            "Latency in seconds of gateway calls to a backend, by backend and path. "
            "Failed calls count too, up to the moment they failed.",
            ["service", "backend", "path"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.backend_errors = Counter(
            "visionserve_backend_errors_total",
            "Failed gateway calls to a backend, by backend and kind: unavailable, "
            "pool_timeout, timeout, connection_error, client_error (4xx passed through), "
            "server_error (5xx) or invalid_response (2xx body that is not JSON).",
            ["service", "backend", "kind"],
            registry=self.registry,
        )
        self.backend_retries = Counter(
            "visionserve_backend_retries_total",
            "Repeated gateway calls to a backend, by backend and the reason for the retry: "
            "connect_error or unavailable (a backend 503).",
            ["service", "backend", "reason"],
            registry=self.registry,
        )
        self.circuit_state = Gauge(
            "visionserve_circuit_state",
            "State of the circuit breaker of each backend: 0 closed, 1 half-open, 2 open. "
            "Under several workers, the highest value of the live workers.",
            ["service", "backend"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )
