"""The objects one detector process shares between its routes, built once per app."""

from __future__ import annotations

from services.common.model_service import ModelService
from services.common.redis_keys import canonical_number
from services.common.repository import LoadedModel
from services.detector.model import Detector
from services.detector.parameters import default_parameters
from services.detector.settings import DetectorSettings

DetectorService = ModelService[DetectorSettings, Detector]


def detection_defaults(settings: DetectorSettings, model: LoadedModel) -> dict[str, str]:
    """Return the detection parameters that `model` uses when a request sets none.

    The gateway fills them into its cache keys, so a request that omits a
    parameter and one that sends its default share one cached response.
    """
    parameters = default_parameters(model, settings.max_det_limit)
    return {
        "conf": canonical_number(parameters.conf_threshold),
        "iou": canonical_number(parameters.iou_threshold),
        "max_det": str(parameters.max_det),
        "classes": "all",
        "agnostic_nms": "false",
    }


def create_detector_service(settings: DetectorSettings) -> DetectorService:
    return ModelService(
        settings,
        service_name="detector",
        task="detection",
        build_pipeline=Detector,
        request_defaults=detection_defaults,
    )
