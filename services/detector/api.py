"""HTTP routes of the detector. Model work happens in `services.detector.model`.

`/healthz`, `/readyz` and `/metrics` come from `services.common.service_routes`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from services.common.repository import LoadedModel
from services.common.schemas import IMAGE_REQUEST_BODY, ModelPublic, ModelsPublic, error_responses
from services.common.upload import read_image_body
from services.detector.model import Detector
from services.detector.parameters import DetectionParameters
from services.detector.render import MEDIA_TYPES, choose_format
from services.detector.schemas import DetectionsPublic
from services.detector.service import DetectorService

router = APIRouter()


async def get_ready_detector(request: Request) -> Detector:
    service: DetectorService = request.app.state.service
    return service.ready_pipeline()


DetectorDep = Annotated[Detector, Depends(get_ready_detector)]


async def select_request(
    detector: DetectorDep,
    model: Annotated[
        str | None, Query(description="Model name. Defaults to the service's default model.")
    ] = None,
    conf: Annotated[
        float | None,
        Query(description="Minimum class score, from 0 to 1. Defaults to the model's value."),
    ] = None,
    iou: Annotated[
        float | None,
        Query(description="NMS IoU threshold, from 0 to 1. Defaults to the model's value."),
    ] = None,
    max_det: Annotated[
        int | None,
        Query(
            description=(
                "Maximum detections, from 1 to the max_det_limit setting. "
                "Defaults to the model's value."
            )
        ),
    ] = None,
    classes: Annotated[
        list[str] | None,
        Query(description="Class ids to keep, comma-separated or repeated. Default: all."),
    ] = None,
    agnostic_nms: Annotated[
        bool, Query(description="Suppress overlapping boxes across classes too.")
    ] = False,
) -> tuple[LoadedModel, DetectionParameters]:
    """Resolve the model and the detection parameters before the body is read."""
    return detector.select(
        model, conf=conf, iou=iou, max_det=max_det, classes=classes, agnostic=agnostic_nms
    )


SelectionDep = Annotated[tuple[LoadedModel, DetectionParameters], Depends(select_request)]


@router.post(
    "/v1/detect",
    openapi_extra=IMAGE_REQUEST_BODY,
    responses=error_responses(400, 404, 413, 415, 422, 503),
)
async def detect(
    request: Request, detector: DetectorDep, selection: SelectionDep
) -> DetectionsPublic:
    """Detect objects in one image and return their boxes in original pixels."""
    model, parameters = selection
    data = await read_image_body(request, max_body_bytes=detector.settings.max_body_bytes)
    result = await detector.detect(data, model, parameters)
    return DetectionsPublic.from_result(result)


@router.post(
    "/v1/detect/render",
    openapi_extra=IMAGE_REQUEST_BODY,
    response_class=Response,
    responses={
        200: {"content": {media_type: {} for media_type in MEDIA_TYPES.values()}},
        **error_responses(400, 404, 406, 413, 415, 422, 503),
    },
)
async def render(
    request: Request,
    detector: DetectorDep,
    selection: SelectionDep,
    image_format: Annotated[
        str | None,
        Query(
            alias="format",
            description=(
                "jpeg or png. Without it, the Accept header decides, and JPEG is the default."
            ),
        ),
    ] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Detect objects and return the image, in its original size, with the boxes drawn."""
    chosen = choose_format(image_format, accept)
    model, parameters = selection
    data = await read_image_body(request, max_body_bytes=detector.settings.max_body_bytes)
    rendered = await detector.render(data, model, parameters, chosen)
    return Response(rendered.content, media_type=MEDIA_TYPES[rendered.image_format])


@router.get("/v1/models", responses=error_responses(503))
async def list_models(detector: DetectorDep) -> ModelsPublic:
    """List the served models with their versions, input shape and metrics."""
    models = [ModelPublic.from_model(model) for model in detector.repository.models()]
    return ModelsPublic(default_model=detector.default_model, models=models)
