"""Wiring of the Redis features (rate limits, response cache) into the gateway app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from services.common.metrics import ServiceMetrics
from services.gateway.rate_limits import RateLimiter, install_response_headers
from services.gateway.redis_metrics import RedisMetrics
from services.gateway.redis_settings import RedisSettings
from services.gateway.redis_state import RedisState
from services.gateway.response_cache import ResponseCache


def install_redis_features(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Register the Redis metrics and the middleware that adds the rate-limit headers."""
    app.state.redis_metrics = RedisMetrics(metrics.service, metrics.registry)
    install_response_headers(app)


@asynccontextmanager
async def redis_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Connect to Redis and watch it while the app runs.

    Checks Redis once before the app serves, so that `visionserve_redis_up`
    and the first requests already know whether it is up.
    """
    settings: RedisSettings = app.state.settings
    state = RedisState(settings, app.state.redis_metrics)
    app.state.rate_limiter = RateLimiter(state)
    app.state.response_cache = ResponseCache(state)
    if not state.enabled:
        yield
        return
    await state.check()
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(state.monitor)
            yield
            tasks.cancel_scope.cancel()
    finally:
        await state.aclose()
