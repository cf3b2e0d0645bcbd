"""The classifier's FastAPI app. Run it with

    uvicorn services.classifier.app:create_app --factory

Models load in the background after the server starts listening: `/healthz`
responds at once, `/readyz` returns 503 until every model is loaded and warmed up.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.classifier import api
from services.classifier.service import create_classifier_service
from services.classifier.settings import ClassifierSettings
from services.classifier.v2 import ClassifierProtocolAdapter
from services.common.inference_protocol.router import install_inference_protocol
from services.common.logging import configure_logging
from services.common.service_app import create_service_app
from services.common.settings import load_settings


def create_app(settings: ClassifierSettings | None = None) -> FastAPI:
    """Build the app. Settings come from `VS_CLASSIFIER_*` variables unless given."""
    settings = settings or load_settings(ClassifierSettings)
    configure_logging("classifier", settings.log_level)
    service = create_classifier_service(settings)
    app = create_service_app(
        service,
        api.router,
        title="VisionServe classifier",
        summary="Image classification with ONNX models served by onnxruntime.",
    )
    install_inference_protocol(app, ClassifierProtocolAdapter())
    return app
