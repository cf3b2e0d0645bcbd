"""HTTP routes of the classifier. Model work happens in `services.classifier.model`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from services.classifier.model import Classifier
from services.classifier.schemas import (
    IMAGE_REQUEST_BODY,
    ClassificationPublic,
    ModelPublic,
    ModelsPublic,
    Status,
    error_responses,
)
from services.classifier.service import ClassifierService
from services.common.errors import error_body
from services.common.upload import read_image_body

router = APIRouter()


def get_service(request: Request) -> ClassifierService:
    service: ClassifierService = request.app.state.service
    return service


def get_ready_classifier(service: Annotated[ClassifierService, Depends(get_service)]) -> Classifier:
    return service.ready_classifier()


ServiceDep = Annotated[ClassifierService, Depends(get_service)]
ClassifierDep = Annotated[Classifier, Depends(get_ready_classifier)]
ModelQuery = Annotated[
    str | None,
    Query(description="Model name. Defaults to the service's default model."),
]
TopKQuery = Annotated[
    int | None,
    Query(
        description=(
            "Number of predictions, from 1 to the smaller of max_top_k and the model's "
            "number of labels. Defaults to default_top_k, capped at that range."
        )
    ),
]


@router.post(
    "/v1/classify",
    openapi_extra=IMAGE_REQUEST_BODY,
    responses=error_responses(400, 404, 413, 415, 422, 503),
)
async def classify(
    request: Request, classifier: ClassifierDep, model: ModelQuery = None, top_k: TopKQuery = None
) -> ClassificationPublic:
    """Classify one image and return its most probable labels."""
    target, count = classifier.select(model, top_k)
    data = await read_image_body(request, max_body_bytes=classifier.settings.max_body_bytes)
    result = await classifier.classify(data, target, count)
    return ClassificationPublic.from_result(result)


@router.get("/v1/models", responses=error_responses(503))
async def list_models(classifier: ClassifierDep) -> ModelsPublic:
    """List the served models with their versions, input shape and metrics."""
    models = [ModelPublic.from_model(model) for model in classifier.repository.models()]
    return ModelsPublic(default_model=classifier.default_model, models=models)


@router.get("/healthz")
async def healthz() -> Status:
    """Report that the process is alive; always 200."""
    return Status(status="alive")


@router.get("/readyz", response_model=Status, responses=error_responses(503))
async def readyz(service: ServiceDep) -> Status | JSONResponse:
    """Report 200 once every model is loaded and warmed up, 503 before that."""
    error = service.readiness.unavailable_error()
    if error is not None:
        # Returned rather than raised: the error handler would log every probe
        # during start-up at ERROR level.
        body = error_body(error.code, error.message)
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)
    return Status(status="ready")


@router.get("/metrics", include_in_schema=False)
async def metrics(service: ServiceDep) -> Response:
    """Expose Prometheus metrics."""
    return service.metrics.render()
