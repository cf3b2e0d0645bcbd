"""HTTP routes of the gateway. Calls to backends go through `services.gateway.backend`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from services.common.errors import InvalidParameter, error_body
from services.gateway.backend import Backends
from services.gateway.cache_queries import classify_query
from services.gateway.image_limits import read_image_upload
from services.gateway.metrics import GatewayMetrics
from services.gateway.openapi import (
    CLASSIFY_RESPONSE_DESCRIPTION,
    IMAGE_UPLOAD_BODY,
    ErrorResponse,
    error_responses,
)
from services.gateway.rate_limits import RATE_LIMITED
from services.gateway.readiness import ReadinessMonitor
from services.gateway.response_cache import ResponseCacheDep, respond_with_cache
from services.gateway.settings import GatewaySettings
from services.gateway.shutdown import GracefulShutdown

CLASSIFY_QUERY_PARAMETERS = frozenset({"model", "top_k"})


# The dependencies are coroutines: FastAPI runs a plain function in a worker
# thread, a hand-off that costs more than these lookups.
async def get_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


async def get_backends(request: Request) -> Backends:
    backends: Backends = request.app.state.backends
    return backends


async def get_readiness(request: Request) -> ReadinessMonitor:
    readiness: ReadinessMonitor = request.app.state.readiness
    return readiness


async def get_shutdown(request: Request) -> GracefulShutdown:
    shutdown: GracefulShutdown = request.app.state.shutdown
    return shutdown


async def get_metrics(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
BackendsDep = Annotated[Backends, Depends(get_backends)]
ReadinessDep = Annotated[ReadinessMonitor, Depends(get_readiness)]
MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]
ShutdownDep = Annotated[GracefulShutdown, Depends(get_shutdown)]

router = APIRouter()


@router.post(
    "/v1/classify",
    openapi_extra=IMAGE_UPLOAD_BODY,
    dependencies=[RATE_LIMITED],
    responses={
        200: {"description": CLASSIFY_RESPONSE_DESCRIPTION},
        **error_responses(400, 401, 404, 413, 415, 422, 429, 502, 503, 504),
    },
)
async def classify(
    request: Request,
    settings: SettingsDep,
    backends: BackendsDep,
    cache: ResponseCacheDep,
    model: Annotated[
        str | None, Query(description="Model name. Omit it for the classifier's default model.")
    ] = None,
    top_k: Annotated[
        int | None, Query(description="Number of predictions to return, most probable first.")
    ] = None,
) -> Response:
    """Classify one image with the classifier service."""
    reject_unknown_query_parameters(request, CLASSIFY_QUERY_PARAMETERS)
    body = await read_image_upload(request, settings)
    content_type = request.headers.get("content-type")
    query = await classify_query(body, content_type, model, top_k) if cache.active else None

    async def forward() -> Any:
        params = {"model": model, "top_k": None if top_k is None else str(top_k)}
        response = await backends.classifier.post(
            "/v1/classify",
            content=body,
            content_type=content_type,
            params={name: value for name, value in params.items() if value is not None},
            # Inference changes no state on the classifier, so a retried call is safe.
            idempotent=True,
        )
        return response.body

    return await respond_with_cache(cache, "classify", query, forward)


@router.get("/v1/models", responses=error_responses(401, 502, 503, 504))
async def list_models(backends: BackendsDep) -> dict[str, Any]:
    """List the models of every backend, grouped by backend name."""
    results = await asyncio.gather(*(backend.get("/v1/models") for backend in backends.all()))
    return {
        backend.name: result.body for backend, result in zip(backends.all(), results, strict=True)
    }


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Report that the gateway process is alive, whatever the state of its backends."""
    return {"status": "alive"}


@router.get(
    "/readyz",
    responses={
        503: {
            "model": ErrorResponse,
            "description": "A backend is not ready, or the gateway is shutting down.",
        }
    },
)
async def readyz(readiness: ReadinessDep, shutdown: ShutdownDep) -> Response:
    """Report ready only when every backend returns 200 on its own /readyz.

    Returns 503 from SIGTERM on, while the gateway drains before it stops.
    """
    if shutdown.draining:
        message = "the gateway is shutting down; send requests to another instance"
        return JSONResponse(error_body("shutting_down", message), status_code=503)
    problems = await readiness.find_unready_backends()
    if problems:
        # Returned, not raised, because the error handler would log every failed probe.
        # ReadinessMonitor logs only the changes.
        message = "not ready: " + "; ".join(problems.values())
        return JSONResponse(error_body("service_unavailable", message), status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", include_in_schema=False)
async def metrics(service_metrics: MetricsDep) -> Response:
    """Expose Prometheus metrics, including backend call latency and errors."""
    return service_metrics.render()


def reject_unknown_query_parameters(request: Request, allowed: frozenset[str]) -> None:
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        # Names are cut short because the message repeats client input.
        names = ", ".join(name[:40] for name in unknown[:5])
        raise InvalidParameter(
            f"unknown query parameter {names}; "
            f"the allowed parameters are {', '.join(sorted(allowed))}"
        )
