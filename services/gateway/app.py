"""Gateway application factory: `uvicorn services.gateway.app:create_app --factory`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from services.common.errors import install_error_handlers
from services.common.logging import configure_logging
from services.common.metrics import install_http_middleware
from services.common.settings import load_settings
from services.gateway.admin_api import router as admin_router
from services.gateway.api import router
from services.gateway.auth import AccessControl, authenticate
from services.gateway.backend import Backend, Backends
from services.gateway.backend_policy import backend_policy
from services.gateway.batch_api import router as batch_router
from services.gateway.detection_api import router as detection_router
from services.gateway.metrics import GatewayMetrics
from services.gateway.query_limits import limit_query_string
from services.gateway.readiness import ReadinessMonitor
from services.gateway.redis_app import install_redis_features, redis_lifespan
from services.gateway.resilience_settings import BackendName
from services.gateway.settings import GatewaySettings
from services.gateway.shutdown import GracefulShutdown

logger = logging.getLogger(__name__)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Build the gateway app. Settings come from `VS_GATEWAY_*` variables unless given."""
    settings = settings or load_settings(GatewaySettings)
    configure_logging("gateway", settings.log_level)
    # httpx logs every backend call at INFO, which repeats the access log line.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    metrics = GatewayMetrics()
    access = AccessControl(settings)
    access.log_configuration()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backends = _create_backends(settings, metrics)
        app.state.backends = backends
        app.state.readiness = ReadinessMonitor(backends, settings.ready_timeout_seconds)
        app.state.shutdown.install()
        logger.info(
            "gateway started",
            extra={
                "classifier_url": settings.classifier_url,
                "detector_url": settings.detector_url or None,
            },
        )
        try:
            async with redis_lifespan(app):
                yield
        finally:
            await backends.aclose()
            logger.info("gateway stopped")

    app = FastAPI(
        title="VisionServe gateway",
        summary="One REST entry point that forwards image requests to the model services.",
        version="0.1.0",
        lifespan=lifespan,
        # Every route needs a key except those in services.gateway.auth.OPEN_ROUTES.
        dependencies=[Depends(authenticate), Depends(limit_query_string)],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.access = access
    app.state.shutdown = GracefulShutdown(settings.shutdown_drain_seconds)
    install_http_middleware(app, metrics)
    install_error_handlers(app)
    install_redis_features(app, metrics)
    app.include_router(router)
    app.include_router(batch_router)
    app.include_router(detection_router)
    app.include_router(admin_router)
    return app


def _create_backends(settings: GatewaySettings, metrics: GatewayMetrics) -> Backends:
    def backend(name: BackendName, url: str) -> Backend:
        return Backend(
            name,
            url,
            policy=backend_policy(settings, name),
            limits=settings.backend_limits(),
            metrics=metrics,
        )

    detector = backend("detector", settings.detector_url) if settings.detector_url else None
    return Backends(classifier=backend("classifier", settings.classifier_url), detector=detector)
