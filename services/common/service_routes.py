"""Health, readiness, metrics and reload routes that every model service exposes the same way."""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from services.common.admin import check_admin
from services.common.errors import error_body
from services.common.metrics import ServiceMetrics
from services.common.readiness import Readiness
from services.common.reloading import ModelReloader
from services.common.schemas import ReloadPublic, Status, error_responses
from services.common.settings import ModelServiceSettings


class ObservableService(Protocol):
    """Service fields that these routes read from `app.state.service`."""

    @property
    def readiness(self) -> Readiness: ...

    @property
    def metrics(self) -> ServiceMetrics: ...

    @property
    def settings(self) -> ModelServiceSettings: ...

    @property
    def reloader(self) -> ModelReloader: ...


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


@router.post("/v1/models/{name}/reload", responses=error_responses(401, 403, 404, 422, 503))
async def reload_model(
    name: str, request: Request, authorization: Annotated[str | None, Header()] = None
) -> ReloadPublic:
    """Serve the newest (or pinned) version of a model without a restart. Needs the admin token.

    The new version is loaded, checked and warmed up before it replaces the
    live one; requests already running finish on the old version. A version
    that fails its checks is rejected with 422 and the live version keeps serving.
    """
    service = _service(request)
    check_admin(service.settings, authorization)
    service.readiness.check()
    outcome = await service.reloader.reload(name)
    return ReloadPublic.from_outcome(outcome)
