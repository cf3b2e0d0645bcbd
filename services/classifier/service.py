"""The objects one classifier process shares between its routes, built once per app."""

from __future__ import annotations

from services.classifier.model import Classifier
from services.classifier.settings import ClassifierSettings
from services.common.model_service import ModelService

ClassifierService = ModelService[ClassifierSettings, Classifier]


def create_classifier_service(settings: ClassifierSettings) -> ClassifierService:
    return ModelService(
        settings, service_name="classifier", task="classification", build_pipeline=Classifier
    )
