"""The detector's FastAPI app. Run it with

    uvicorn services.detector.app:create_app --factory

Models load in the background after the server starts listening: `/healthz`
responds at once, `/readyz` returns 503 until every model is loaded and warmed up.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.common.inference_protocol.router import install_inference_protocol
from services.common.logging import configure_logging
from services.common.service_app import create_service_app
from services.common.settings import load_settings
from services.detector import api
from services.detector.service import create_detector_service
from services.detector.settings import DetectorSettings
from services.detector.v2 import DetectorProtocolAdapter


def create_app(settings: DetectorSettings | None = None) -> FastAPI:
    """Build the app. Settings come from `VS_DETECTOR_*` variables unless given."""
    settings = settings or load_settings(DetectorSettings)
    configure_logging("detector", settings.log_level)
    service = create_detector_service(settings)
    app = create_service_app(
        service,
        api.router,
        title="VisionServe detector",
        summary="Object detection with YOLO ONNX models served by onnxruntime.",
    )
    install_inference_protocol(app, DetectorProtocolAdapter())
    return app
