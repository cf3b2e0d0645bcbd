"""BentoML serving the same two models with the same preprocessing, for `python -m bench.serving`.

Runs only in the BentoML virtualenv (`make bench-bentoml-venv`):

    BENTOML_DO_NOT_TRACK=True BENCH_MODEL_REPOSITORY=models \\
    BENCH_CLASSIFIER_MODEL=imagenet-efficientnet-lite0 BENCH_DETECTOR_MODEL=digits-yolov8n \\
        bench/.venv-bentoml/bin/bentoml serve bench.bentoml_service:VisionBento \\
        --host 127.0.0.1 --port 3000

The routes take a multipart form with an image field named `file`, which
BentoML decodes into a PIL image. Each route then calls `BaselineModel`, the
model code the naive baseline uses too. The service keeps BentoML's defaults
apart from one worker process, the count the VisionServe services run with.
"""

from __future__ import annotations

from typing import Any

import bentoml
from PIL import Image

from bench.baseline_models import load_models


@bentoml.service(workers=1, traffic={"timeout": 300})
class VisionBento:
    """The classifier and the detector behind BentoML's HTTP server."""

    def __init__(self) -> None:
        self.models = load_models()

    @bentoml.api(route="/classify")
    def classify(self, file: Image.Image) -> dict[str, Any]:
        return self.models["classify"].predict(file.convert("RGB"))

    @bentoml.api(route="/detect")
    def detect(self, file: Image.Image) -> dict[str, Any]:
        return self.models["detect"].predict(file.convert("RGB"))
