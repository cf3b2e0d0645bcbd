"""The gateway's batch classification route, forwarded to the classifier's own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from services.common.schemas import IMAGE_BATCH_REQUEST_BODY
from services.gateway.api import (
    CLASSIFY_QUERY_PARAMETERS,
    BackendsDep,
    SettingsDep,
    reject_unknown_query_parameters,
)
from services.gateway.body import read_limited_body
from services.gateway.openapi import BATCH_RESPONSE_DESCRIPTION, error_responses
from services.gateway.rate_limits import RATE_LIMITED

router = APIRouter()


@router.post(
    "/v1/classify/batch",
    openapi_extra=IMAGE_BATCH_REQUEST_BODY,
    dependencies=[RATE_LIMITED],
    responses={
        200: {"description": BATCH_RESPONSE_DESCRIPTION},
        **error_responses(400, 401, 404, 413, 415, 422, 429, 502, 503, 504),
    },
)
async def classify_batch(
    request: Request,
    settings: SettingsDep,
    backends: BackendsDep,
    model: Annotated[
        str | None, Query(description="Model name. Omit it for the classifier's default model.")
    ] = None,
    top_k: Annotated[
        int | None, Query(description="Number of predictions per image, most probable first.")
    ] = None,
) -> JSONResponse:
    """Classify up to the classifier's max_batch_images images with one inference run.

    The multipart form is forwarded unchanged. An image that cannot be decoded
    gets an `error` entry, and the others are still classified.
    """
    reject_unknown_query_parameters(request, CLASSIFY_QUERY_PARAMETERS)
    body = await read_limited_body(request, settings.max_body_bytes)

    params = {"model": model, "top_k": None if top_k is None else str(top_k)}
    response = await backends.classifier.post(
        "/v1/classify/batch",
        content=body,
        content_type=request.headers.get("content-type"),
        params={name: value for name, value in params.items() if value is not None},
        # Inference changes no state on the classifier, so a retried call is safe.
        idempotent=True,
    )
    return JSONResponse(response.body, status_code=response.status_code)
