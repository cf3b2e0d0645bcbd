"""HTTP routes of the classifier. Model work happens in `services.classifier.model`.

`/healthz`, `/readyz` and `/metrics` come from `services.common.service_routes`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from services.classifier.model import Classifier
from services.classifier.schemas import BatchClassificationPublic, ClassificationPublic
from services.classifier.service import ClassifierService
from services.common.schemas import (
    IMAGE_BATCH_REQUEST_BODY,
    IMAGE_REQUEST_BODY,
    ModelPublic,
    ModelsPublic,
    error_responses,
)
from services.common.upload import read_image_body, read_image_files

router = APIRouter()


async def get_ready_classifier(request: Request) -> Classifier:
    service: ClassifierService = request.app.state.service
    return service.ready_pipeline()


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


@router.post(
    "/v1/classify/batch",
    openapi_extra=IMAGE_BATCH_REQUEST_BODY,
    responses=error_responses(400, 404, 413, 415, 422, 503),
)
async def classify_batch(
    request: Request, classifier: ClassifierDep, model: ModelQuery = None, top_k: TopKQuery = None
) -> BatchClassificationPublic:
    """Classify up to max_batch_images images with one inference run.

    An image that cannot be decoded gets an `error` entry, and the others are
    still classified.
    """
    target, count = classifier.select(model, top_k)
    settings = classifier.settings
    images = await read_image_files(
        request, max_body_bytes=settings.max_batch_body_bytes, max_files=settings.max_batch_images
    )
    result = await classifier.classify_batch(images, target, count)
    return BatchClassificationPublic.from_result(result)


@router.get("/v1/models", responses=error_responses(503))
async def list_models(classifier: ClassifierDep) -> ModelsPublic:
    """List the served models with their versions, input shape and metrics."""
    models = [ModelPublic.from_model(model) for model in classifier.repository.models()]
    return ModelsPublic(default_model=classifier.default_model, models=models)
