"""HTTP routes of the gateway. Calls to backends go through `services.gateway.backend`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from services.common.errors import InvalidParameter, error_body
from services.gateway.backend import Backends
from services.gateway.body import read_limited_body
from services.gateway.metrics import GatewayMetrics
from services.gateway.openapi import (
    CLASSIFY_RESPONSE_DESCRIPTION,
    IMAGE_UPLOAD_BODY,
    ErrorResponse,
    error_responses,
)
from services.gateway.readiness import ReadinessMonitor
from services.gateway.settings import GatewaySettings
from services.gateway.shutdown import GracefulShutdown

CLASSIFY_QUERY_PARAMETERS = frozenset({"model", "top_k"})


def get_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def get_backends(request: Request) -> Backends:
    backends: Backends = request.app.state.backends
    return backends


def get_readiness(request: Request) -> ReadinessMonitor:
    readiness: ReadinessMonitor = request.app.state.readiness
    return readiness


def get_shutdown(request: Request) -> GracefulShutdown:
    shutdown: GracefulShutdown = request.app.state.shutdown
    return shutdown


def get_metrics(request: Request) -> GatewayMetrics:
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
    responses={
        200: {"description": CLASSIFY_RESPONSE_DESCRIPTION},
        **error_responses(400, 404, 413, 415, 422, 502, 503, 504),
    },
)
async def classify(
    request: Request,
    settings: SettingsDep,
    backends: BackendsDep,
    model: Annotated[
        str | None, Query(description="Model name. Omit it for the classifier's default model.")
    ] = None,
    top_k: Annotated[
        int | None, Query(description="Number of predictions to return, most probable first.")
    ] = None,
) -> JSONResponse:
    """Classify one image with the classifier service."""
    reject_unknown_query_parameters(request, CLASSIFY_QUERY_PARAMETERS)
    body = await read_limited_body(request, settings.max_body_bytes)

    params = {"model": model, "top_k": None if top_k is None else str(top_k)}
    response = await backends.classifier.post(
        "/v1/classify",
        content=body,
        content_type=request.headers.get("content-type"),
        params={name: value for name, value in params.items() if value is not None},
        # Inference changes no state on the classifier, so a retried call is safe.
        idempotent=True,
    )
    return JSONResponse(response.body, status_code=response.status_code)


@router.get("/v1/models", responses=error_responses(502, 503, 504))
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
