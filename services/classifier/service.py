"""The objects one classifier process shares between its routes, built once per app."""

from __future__ import annotations

from services.classifier.model import Classifier, default_top_k
from services.classifier.settings import ClassifierSettings
from services.common.model_service import ModelService
from services.common.repository import LoadedModel

ClassifierService = ModelService[ClassifierSettings, Classifier]


def classification_defaults(settings: ClassifierSettings, model: LoadedModel) -> dict[str, str]:
    """Return the top_k that `model` uses for a request that sets none, for the gateway's cache."""
    return {"top_k": str(default_top_k(settings, model))}


def create_classifier_service(settings: ClassifierSettings) -> ClassifierService:
    return ModelService(
        settings,
        service_name="classifier",
        task="classification",
        build_pipeline=Classifier,
        request_defaults=classification_defaults,
    )
