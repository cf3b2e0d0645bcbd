"""The FastAPI app of a model service: metrics, error handling, health routes, model loading."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import anyio
from fastapi import APIRouter, FastAPI

from services.common import service_routes
from services.common.errors import install_error_handlers
from services.common.metrics import ServiceMetrics, install_http_middleware
from services.common.readiness import Readiness


class LoadableService(Protocol):
    """A service whose models load in the background after the server starts listening."""

    @property
    def readiness(self) -> Readiness: ...

    @property
    def metrics(self) -> ServiceMetrics: ...

    def load_models(self) -> None: ...

    async def watch_versions(self) -> None: ...

    async def publish_live_versions(self) -> None: ...

    async def write_prediction_log(self) -> None: ...


def create_service_app(
    service: LoadableService, router: APIRouter, *, title: str, summary: str
) -> FastAPI:
    """Build the app around `service`, with `router` and the common health routes.

    Call `configure_logging` before, so that start-up problems are logged as JSON.
    """
    app = FastAPI(title=title, summary=summary, version="1", lifespan=_lifespan)
    app.state.service = service
    install_http_middleware(app, service.metrics)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(service_routes.router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: LoadableService = app.state.service
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(service.readiness.load, service.load_models)
        tasks.start_soon(service.watch_versions)
        tasks.start_soon(service.publish_live_versions)
        tasks.start_soon(service.write_prediction_log)
        yield
        # NOTE: a load still running at shutdown finishes first, because a
        # worker thread cannot be interrupted.
        tasks.cancel_scope.cancel()
