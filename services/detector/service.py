"""The objects one detector process shares between its routes, built once per app."""

from __future__ import annotations

from services.common.model_service import ModelService
from services.detector.model import Detector
from services.detector.settings import DetectorSettings

DetectorService = ModelService[DetectorSettings, Detector]


def create_detector_service(settings: DetectorSettings) -> DetectorService:
    return ModelService(
        settings, service_name="detector", task="detection", build_pipeline=Detector
    )
