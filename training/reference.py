"""Build `reference.json` for an exported model version with the serving code.

The drift job compares the prediction log of the live service with this
profile, so both sides must measure the same things the same way. Each image
therefore goes through the code the service runs on a request. The service's
decode function decodes its encoded bytes, and `measure_input` measures it.
Then it is preprocessed, run through the exported `model.onnx` one image at a
time, and postprocessed with the model's default thresholds. The services'
default settings apply (`max_pixels`, `alpha_background`, `max_det_limit`),
not the environment of the exporting process.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image

from services.classifier import model as classification
from services.classifier.settings import ClassifierSettings
from services.common.input_stats import INPUT_FEATURES, measure_input
from services.common.letterbox import letterbox_tensor
from services.common.metadata import MODEL_FILENAME, ModelMetadata
from services.common.preprocess import preprocess
from services.common.reference_profile import (
    MAX_REFERENCE_SAMPLES,
    ReferenceProfile,
    write_reference,
)
from services.common.repository import LoadedModel, available_threads
from services.common.session_config import SessionConfig, create_session
from services.detector import model as detection
from services.detector.parameters import default_parameters
from services.detector.settings import DetectorSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceImages:
    """Encoded image files to profile, and a description of their origin for `source`."""

    files: Iterable[bytes]
    source: str


@dataclass(frozen=True)
class _Prediction:
    labels: list[str]
    scores: list[float]


def png_bytes(image: Image.Image) -> bytes:
    """Encode `image` as PNG, a lossless format, so the service decodes exactly these pixels."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def build_reference(
    version_dir: Path, metadata: ModelMetadata, images: ReferenceImages
) -> ReferenceProfile:
    """Profile the first MAX_REFERENCE_SAMPLES images with `version_dir/model.onnx`.

    Raise ValueError when `images` is empty.
    """
    session = create_session(
        version_dir / MODEL_FILENAME, SessionConfig(available_threads(), available_threads())
    )
    model = LoadedModel(metadata, session, version_dir, (metadata.version,))
    features: dict[str, list[float]] = {name: [] for name in INPUT_FEATURES}
    confidence: list[float] = []
    box_counts: list[float] = []
    labels: Counter[str] = Counter()

    for data in islice(images.files, MAX_REFERENCE_SAMPLES):
        if metadata.task == "classification":
            inputs, prediction = _classify(model, data)
        else:
            inputs, prediction = _detect(model, data)
        for name, value in inputs.items():
            features[name].append(value)
        confidence.extend(prediction.scores)
        box_counts.append(float(len(prediction.labels)))
        labels.update(prediction.labels)

    image_count = len(features["width"])
    if image_count == 0:
        raise ValueError(
            f"no images to build the reference profile of {metadata.name} version "
            f"{metadata.version} from; pass at least one validation image"
        )
    features["confidence"] = confidence
    if metadata.task == "detection":
        features["box_count"] = box_counts
    total = sum(labels.values())
    return ReferenceProfile(
        model=metadata.name,
        version=metadata.version,
        task=metadata.task,
        source=images.source,
        image_count=image_count,
        features=features,
        label_frequencies={label: count / total for label, count in sorted(labels.items())},
    )


def write_reference_profile(
    version_dir: Path, metadata: ModelMetadata, images: ReferenceImages
) -> Path:
    """Build the reference profile and write it as `reference.json` into `version_dir`."""
    profile = build_reference(version_dir, metadata, images)
    path = write_reference(profile, version_dir)
    logger.info(
        "wrote %s of %s version %d from %d images: %s",
        path.name,
        profile.model,
        profile.version,
        profile.image_count,
        profile.source,
    )
    return path


def _classify(model: LoadedModel, data: bytes) -> tuple[dict[str, float], _Prediction]:
    settings = ClassifierSettings.model_construct()
    spec = model.metadata.preprocess
    decoded = classification.decode_request_image(data, spec, settings)
    tensor = preprocess(decoded.image, spec)
    logits = model.run(tensor[np.newaxis])[0]
    top = classification.top_k_predictions(logits, model.metadata.labels, 1)[0]
    return measure_input(decoded).as_dict(), _Prediction([top.label], [top.probability])


def _detect(model: LoadedModel, data: bytes) -> tuple[dict[str, float], _Prediction]:
    settings = DetectorSettings.model_construct()
    parameters = default_parameters(model, settings.max_det_limit)
    decoded = detection.decode_request_image(data, settings)
    tensor, transform = letterbox_tensor(decoded.image, model.metadata.preprocess)
    output = model.run(tensor[np.newaxis])[0]
    detections = detection.detections_from_output(output, model, parameters, transform)
    prediction = _Prediction(
        [item.label for item in detections], [item.score for item in detections]
    )
    return measure_input(decoded).as_dict(), prediction
