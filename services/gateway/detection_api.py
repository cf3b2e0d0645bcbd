"""Detection routes of the gateway: forwarding to the detector, and the analyze pipeline."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request, Response

from services.common.errors import InvalidParameter
from services.common.upload import read_image_body
from services.gateway.analyze import AnalyzeRequest, analyze
from services.gateway.api import BackendsDep, SettingsDep, reject_unknown_query_parameters
from services.gateway.backend import Backend, Backends
from services.gateway.cache_queries import analyze_query, detect_query
from services.gateway.image_limits import check_declared_pixels, read_image_upload
from services.gateway.openapi import (
    ANALYZE_RESPONSE_DESCRIPTION,
    DETECT_RESPONSE_DESCRIPTION,
    DETECTOR_MODEL_PARAMETER,
    DETECTOR_PARAMETERS,
    FORMAT_PARAMETER,
    MAX_DET_PARAMETER,
    RENDER_RESPONSE_DESCRIPTION,
    error_responses,
    with_query_parameters,
)
from services.gateway.rate_limits import RATE_LIMITED
from services.gateway.response_cache import ResponseCacheDep, respond_with_cache
from services.gateway.settings import GatewaySettings

# The detector validates these itself. The gateway only forwards them.
DETECT_QUERY_PARAMETERS = frozenset({"model", "conf", "iou", "max_det", "classes", "agnostic_nms"})
RENDER_QUERY_PARAMETERS = DETECT_QUERY_PARAMETERS | {"format"}
ANALYZE_QUERY_PARAMETERS = DETECT_QUERY_PARAMETERS | {"classifier_model", "margin"}

router = APIRouter()


def forwarded_parameters(request: Request, names: frozenset[str]) -> httpx.QueryParams:
    """Return the request's query parameters that are in `names`, repeats and order kept."""
    return httpx.QueryParams(
        [(name, value) for name, value in request.query_params.multi_items() if name in names]
    )


async def read_for_detector(
    request: Request, settings: GatewaySettings, backends: Backends, allowed: frozenset[str]
) -> tuple[Backend, bytes]:
    """Check the query and the detector, then read the body to forward.

    The body is read last, so that a rejected request is answered before its
    upload arrives.
    """
    reject_unknown_query_parameters(request, allowed)
    detector = backends.require_detector()
    return detector, await read_image_upload(request, settings)


@router.post(
    "/v1/detect",
    openapi_extra=with_query_parameters(
        DETECTOR_MODEL_PARAMETER, *DETECTOR_PARAMETERS, MAX_DET_PARAMETER
    ),
    dependencies=[RATE_LIMITED],
    responses={
        200: {"description": DETECT_RESPONSE_DESCRIPTION},
        **error_responses(400, 401, 404, 413, 415, 422, 429, 502, 503, 504),
    },
)
async def detect(
    request: Request, settings: SettingsDep, backends: BackendsDep, cache: ResponseCacheDep
) -> Response:
    """Detect objects in one image with the detector service.

    The query parameters are forwarded unchanged, and the detector validates them.
    """
    detector, body = await read_for_detector(request, settings, backends, DETECT_QUERY_PARAMETERS)
    content_type = request.headers.get("content-type")
    params = forwarded_parameters(request, DETECT_QUERY_PARAMETERS)
    query = await detect_query(body, content_type, params) if cache.active else None

    async def forward() -> Any:
        response = await detector.post(
            "/v1/detect",
            content=body,
            content_type=content_type,
            params=params,
            # Detection changes no state on the detector, so a retried call is safe.
            idempotent=True,
        )
        return response.body

    return await respond_with_cache(cache, "detect", query, forward)


@router.post(
    "/v1/detect/render",
    openapi_extra=with_query_parameters(
        DETECTOR_MODEL_PARAMETER, *DETECTOR_PARAMETERS, MAX_DET_PARAMETER, FORMAT_PARAMETER
    ),
    response_class=Response,
    dependencies=[RATE_LIMITED],
    responses={
        200: {
            "description": RENDER_RESPONSE_DESCRIPTION,
            "content": {"image/jpeg": {}, "image/png": {}},
        },
        **error_responses(400, 401, 404, 406, 413, 415, 422, 429, 502, 503, 504),
    },
)
async def render(request: Request, settings: SettingsDep, backends: BackendsDep) -> Response:
    """Return the image with the detected boxes drawn, as JPEG or PNG.

    The format query parameter or the Accept header picks the format, as on
    the detector.
    """
    detector, body = await read_for_detector(request, settings, backends, RENDER_QUERY_PARAMETERS)
    response = await detector.post_for_content(
        "/v1/detect/render",
        content=body,
        content_type=request.headers.get("content-type"),
        params=forwarded_parameters(request, RENDER_QUERY_PARAMETERS),
        accept=request.headers.get("accept"),
        idempotent=True,
    )
    return Response(response.content, media_type=response.content_type)


@router.post(
    "/v1/analyze",
    # max_det is in the signature, because the gateway checks it on this route.
    openapi_extra=with_query_parameters(DETECTOR_MODEL_PARAMETER, *DETECTOR_PARAMETERS),
    dependencies=[RATE_LIMITED],
    responses={
        200: {"description": ANALYZE_RESPONSE_DESCRIPTION},
        **error_responses(400, 401, 404, 413, 415, 422, 429, 502, 503, 504),
    },
)
async def analyze_image(
    request: Request,
    settings: SettingsDep,
    backends: BackendsDep,
    cache: ResponseCacheDep,
    classifier_model: Annotated[
        str | None,
        Query(description="Classifier model for the crops. Omit it for the classifier's default."),
    ] = None,
    margin: Annotated[
        float,
        Query(description="Crop margin on each side, as a fraction of the box size, 0 to 1."),
    ] = 0.1,
    max_det: Annotated[
        int | None,
        Query(description="Maximum objects, from 1 to max_analyze_objects, which is the default."),
    ] = None,
) -> Response:
    """Detect objects, crop each from the original image, and classify all crops in one batch.

    Detector parameters (model, conf, iou, classes, agnostic_nms) are
    forwarded as on /v1/detect.
    """
    reject_unknown_query_parameters(request, ANALYZE_QUERY_PARAMETERS)
    if not 0.0 <= margin <= 1.0:
        raise InvalidParameter(f"query parameter 'margin' must be between 0 and 1; got {margin}")
    limit = settings.max_analyze_objects
    if max_det is not None and not 1 <= max_det <= limit:
        raise InvalidParameter(
            f"query parameter 'max_det' must be between 1 and {limit} on /v1/analyze; got {max_det}"
        )
    image = await read_image_body(request, max_body_bytes=settings.max_body_bytes)
    check_declared_pixels(image, settings.max_pixels)

    detector_params = forwarded_parameters(request, DETECT_QUERY_PARAMETERS - {"max_det"})
    detector_params = detector_params.add("max_det", str(max_det or limit))
    analyze_request = AnalyzeRequest(
        image=image,
        detector_params=detector_params,
        classifier_model=classifier_model,
        margin=margin,
        max_pixels=settings.max_pixels,
    )
    query = None
    if cache.active:
        query = analyze_query(image, detector_params, classifier_model, margin)
    return await respond_with_cache(
        cache, "analyze", query, lambda: analyze(backends, analyze_request)
    )
