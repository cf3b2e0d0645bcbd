"""Comparing a `reference.json` with what a running model service returns for the same images."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.imaging import DecodedImage
from services.common.input_stats import INPUT_FEATURES, measure_input
from services.common.reference_profile import ReferenceProfile

# Maximum difference between a reference confidence and the served one.
CONFIDENCE_TOLERANCE = 1e-5


def model_service_env(service: str, repository: Path, **settings: str) -> dict[str, str]:
    """Return the environment of a model service on `repository`, with one onnxruntime thread.

    `settings` are further settings by field name in upper case, such as REDIS_URL.
    """
    variables = {"MODEL_REPOSITORY": str(repository), "INTRA_OP_THREADS": "1", **settings}
    return {f"VS_{service.upper()}_{name}": value for name, value in variables.items()}


def post_each(url: str, route: str, files: Sequence[bytes]) -> list[dict[str, Any]]:
    """POST each file to `route` one at a time and return the JSON bodies, in order."""
    bodies = []
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for data in files:
            response = client.post(route, content=data, headers={"Content-Type": "image/png"})
            assert response.status_code == 200, response.text
            bodies.append(response.json())
    return bodies


def check_input_features(profile: ReferenceProfile, decoded: Sequence[DecodedImage]) -> None:
    """Assert that each input feature equals `measure_input` of the image at the same index."""
    assert profile.image_count == len(decoded)
    for index, image in enumerate(decoded):
        expected = measure_input(image).as_dict()
        for name in INPUT_FEATURES:
            assert profile.features[name][index] == pytest.approx(expected[name]), (name, index)


def check_label_frequencies(profile: ReferenceProfile, labels: Sequence[str]) -> None:
    counts = Counter(labels)
    expected = {label: count / len(labels) for label, count in counts.items()}
    assert profile.label_frequencies == pytest.approx(expected)


def check_classifications(profile: ReferenceProfile, bodies: Sequence[dict[str, Any]]) -> None:
    """Assert that confidences and labels equal the served top-1 predictions."""
    top = [body["predictions"][0] for body in bodies]
    served = [prediction["probability"] for prediction in top]
    assert profile.features["confidence"] == pytest.approx(served, abs=CONFIDENCE_TOLERANCE)
    check_label_frequencies(profile, [prediction["label"] for prediction in top])


def check_detections(profile: ReferenceProfile, bodies: Sequence[dict[str, Any]]) -> None:
    """Assert that scores, box counts and labels equal the served detections."""
    detections = [body["detections"] for body in bodies]
    scores = [item["score"] for per_image in detections for item in per_image]
    labels = [item["label"] for per_image in detections for item in per_image]
    assert profile.features["box_count"] == [float(len(items)) for items in detections]
    assert profile.features["confidence"] == pytest.approx(scores, abs=CONFIDENCE_TOLERANCE)
    if labels:
        check_label_frequencies(profile, labels)
    else:
        assert profile.label_frequencies == {}
