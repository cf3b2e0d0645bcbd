"""Model code of the comparison servers: a decoded image in, a JSON-ready result out.

The naive FastAPI baseline and the BentoML service both call `BaselineModel`.
So they run the same ONNX file with the same preprocessing as the VisionServe
services: `preprocess` for classification, `letterbox_tensor` for detection.
Postprocessing is the services' too (softmax and top-k, or NMS). What differs
between them, and from VisionServe, is the HTTP layer and how the upload is
decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import onnxruntime as ort
from PIL import Image

from services.classifier.model import top_k_predictions
from services.common.letterbox import letterbox_tensor
from services.common.metadata import MODEL_FILENAME, DetectionSpec, ModelMetadata, read_metadata
from services.common.preprocess import preprocess
from services.common.repository import scan_versions, session_options
from services.detector.postprocess import postprocess

TOP_K = 5
REPOSITORY_VARIABLE = "BENCH_MODEL_REPOSITORY"
CLASSIFIER_VARIABLE = "BENCH_CLASSIFIER_MODEL"
DETECTOR_VARIABLE = "BENCH_DETECTOR_MODEL"


def live_version_dir(repository: Path, model: str) -> Path:
    """Return the folder of the newest version of `model`, which the services serve by default."""
    versions = scan_versions(repository)
    if model not in versions:
        raise SystemExit(
            f"model {model!r} not found in {repository}; models: {', '.join(versions) or '(none)'}"
        )
    return repository / model / str(versions[model][-1])


def open_session(version_dir: Path) -> tuple[ModelMetadata, ort.InferenceSession]:
    """Read `model.json` and open `model.onnx` with the services' session options."""
    session = ort.InferenceSession(
        str(version_dir / MODEL_FILENAME), session_options(), providers=["CPUExecutionProvider"]
    )
    return read_metadata(version_dir), session


@dataclass
class BaselineModel:
    """One classification or detection model behind a comparison server."""

    metadata: ModelMetadata
    session: ort.InferenceSession

    @classmethod
    def load(cls, version_dir: Path) -> Self:
        return cls(*open_session(version_dir))

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Run one (C, H, W) tensor and return the first output of its single batch row."""
        output_name = self.metadata.output_names[0]
        (output,) = self.session.run([output_name], {self.metadata.input_name: tensor[None]})
        return np.asarray(output)[0]

    def predict(self, image: Image.Image) -> dict[str, Any]:
        """Classify or detect on an RGB image and return the result as plain JSON types."""
        if self.metadata.task == "detection":
            return {"detections": self._detect(image)}
        logits = self.run(preprocess(image, self.metadata.preprocess))
        predictions = top_k_predictions(logits, self.metadata.labels, TOP_K)
        return {
            "predictions": [
                {"label": p.label, "class_id": p.class_id, "probability": p.probability}
                for p in predictions
            ]
        }

    def _detect(self, image: Image.Image) -> list[dict[str, Any]]:
        tensor, transform = letterbox_tensor(image, self.metadata.preprocess)
        defaults = self.metadata.detection or DetectionSpec()
        found = postprocess(
            self.run(tensor),
            conf_threshold=defaults.conf_threshold,
            iou_threshold=defaults.iou_threshold,
            max_det=defaults.max_det,
        )
        boxes = transform.to_original(found.boxes)
        return [
            {
                "label": self.metadata.labels[int(class_id)],
                "score": float(score),
                "box": [float(value) for value in box],
            }
            for box, score, class_id in zip(boxes, found.scores, found.class_ids, strict=True)
        ]


def load_models() -> dict[str, BaselineModel]:
    """Load the classifier and the detector that `BENCH_*` variables name, keyed by route."""
    repository = Path(os.environ[REPOSITORY_VARIABLE])
    names = {"classify": os.environ[CLASSIFIER_VARIABLE], "detect": os.environ[DETECTOR_VARIABLE]}
    return {
        route: BaselineModel.load(live_version_dir(repository, name))
        for route, name in names.items()
    }
