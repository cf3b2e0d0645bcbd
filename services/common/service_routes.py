"""Health, readiness and metrics routes that every model service exposes the same way."""

from __future__ import annotations

from typing import Protocol

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from services.common.errors import error_body
from services.common.metrics import ServiceMetrics
from services.common.readiness import Readiness
from services.common.schemas import Status, error_responses


class ObservableService(Protocol):
    """Service fields that these routes read from `app.state.service`."""

    @property
    def readiness(self) -> Readiness: ...

    @property
    def metrics(self) -> ServiceMetrics: ...


def _service(request: Request) -> ObservableService:
    service: ObservableService = request.app.state.service
    return service


router = APIRouter()


@router.get("/healthz")
async def healthz() -> Status:
    """Report that the process is alive; always 200."""
    return Status(status="alive")


@router.get("/readyz", response_model=Status, responses=error_responses(503))
async def readyz(request: Request) -> Status | JSONResponse:
    """Report 200 once every model is loaded and warmed up, 503 before that."""
    error = _service(request).readiness.unavailable_error()
    if error is not None:
        # Returned rather than raised: the error handler would log every probe
        # during start-up at ERROR level.
        body = error_body(error.code, error.message)
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)
    return Status(status="ready")


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Expose Prometheus metrics."""
    return _service(request).metrics.render()
