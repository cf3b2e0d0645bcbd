"""The naive baseline: a minimal FastAPI app that serves the same two models.

    BENCH_MODEL_REPOSITORY=models BENCH_CLASSIFIER_MODEL=imagenet-efficientnet-lite0 \\
    BENCH_DETECTOR_MODEL=digits-yolov8n \\
        uvicorn bench.naive_app:create_app --factory --port 8010

It is written the way a first model server often is. The upload is a FastAPI
`UploadFile` and Pillow decodes it at full size. A synchronous route runs
preprocessing and `session.run` in FastAPI's thread pool, one request per
run. It validates nothing, so a bad upload gives FastAPI's 500. It exists only
as a speed reference for `python -m bench.serving`.
"""

from __future__ import annotations

import io
from typing import Any

from fastapi import FastAPI, File, UploadFile
from PIL import Image

from bench.baseline_models import load_models


def decode(upload: UploadFile) -> Image.Image:
    return Image.open(io.BytesIO(upload.file.read())).convert("RGB")


def create_app() -> FastAPI:
    models = load_models()
    app = FastAPI(title="naive baseline")

    @app.post("/classify")
    def classify(file: UploadFile = File(...)) -> dict[str, Any]:
        return models["classify"].predict(decode(file))

    @app.post("/detect")
    def detect(file: UploadFile = File(...)) -> dict[str, Any]:
        return models["detect"].predict(decode(file))

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    return app
