"""The classifier's FastAPI app. Run it with

    uvicorn services.classifier.app:create_app --factory

Models load in the background after the server starts listening: `/healthz`
responds at once, `/readyz` returns 503 until every model is loaded and warmed up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from services.classifier import api
from services.classifier.service import ClassifierService
from services.classifier.settings import ClassifierSettings
from services.common.errors import install_error_handlers
from services.common.logging import configure_logging
from services.common.metrics import install_http_middleware


def create_app(settings: ClassifierSettings | None = None) -> FastAPI:
    """Build the app. Settings come from `VS_CLASSIFIER_*` variables unless given."""
    settings = settings or ClassifierSettings()
    configure_logging("classifier", settings.log_level)
    service = ClassifierService.from_settings(settings)

    app = FastAPI(
        title="VisionServe classifier",
        summary="Image classification with ONNX models served by onnxruntime.",
        version="1",
        lifespan=_lifespan,
    )
    app.state.service = service
    install_http_middleware(app, service.metrics)
    install_error_handlers(app)
    app.include_router(api.router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: ClassifierService = app.state.service
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(service.readiness.load, service.load_models)
        yield
        # NOTE: a load still running at shutdown finishes first, because a
        # worker thread cannot be interrupted.
        tasks.cancel_scope.cancel()
