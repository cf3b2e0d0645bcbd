"""Prometheus metrics of the gateway's Redis connection, response cache and rate limits."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RedisMetrics:
    """Registered on the gateway's registry, with the same `service` label as its other metrics."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.service = service
        # The minimum over live workers: 0 while any gateway worker finds Redis down.
        self.redis_up = Gauge(
            "visionserve_redis_up",
            "1 while the gateway can reach Redis, 0 while it cannot.",
            ["service"],
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.cache_requests = Counter(
            "visionserve_cache_requests_total",
            "Cacheable requests by route and result: hit, miss, or bypass (cache off, Redis "
            "down, or no live model version published).",
            ["service", "route", "result"],
            registry=registry,
        )
        self.rate_limit_rejections = Counter(
            "visionserve_rate_limit_rejections_total",
            "Requests rejected with 429 because their client key exceeded its rate limit, by tier.",
            ["service", "tier"],
            registry=registry,
        )

    def set_redis_up(self, up: bool) -> None:
        self.redis_up.labels(self.service).set(1 if up else 0)

    def count_cache(self, route: str, result: str) -> None:
        self.cache_requests.labels(self.service, route, result).inc()

    def count_rejection(self, tier: str) -> None:
        self.rate_limit_rejections.labels(self.service, tier).inc()
