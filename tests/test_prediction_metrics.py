"""The model and prediction metrics after real requests to the classifier and the detector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from services.common.metrics import ServiceMetrics
from services.common.prediction_metrics import record_live_models
from services.common.repository import ModelRepository
from tests.detection_models import COLOUR_DETECTOR, build_colour_detector_repository
from tests.images import BLUE, GREEN, RED, encode, solid_png, truncated_png
from tests.onnx_models import COLOUR_MODEL, build_colour_repository
from tests.servers import Server, running_server

CLASSIFIER_APP = "services.classifier.app:create_app"
DETECTOR_APP = "services.detector.app:create_app"
# The colour classifier gives a pure colour a probability of about 0.9993.
COLOUR_PROBABILITY = 0.9993

# Families that the batching and reload code fill. They exist before any sample.
DECLARED_FAMILIES = {
    "visionserve_batch_size": "histogram",
    "visionserve_queue_depth": "gauge",
    "visionserve_queue_rejected": "counter",
    "visionserve_model_reloads": "counter",
    "visionserve_model_info": "gauge",
    "visionserve_predictions": "counter",
    "visionserve_top1_confidence": "histogram",
}


def model_info(metrics: ServiceMetrics) -> dict[tuple[str, str], float]:
    values = {}
    for family in metrics.model_info.collect():
        for sample in family.samples:
            values[(sample.labels["model"], sample.labels["version"])] = sample.value
    return values


def test_model_info_follows_live_version(tmp_path: Path) -> None:
    build_colour_repository(tmp_path, versions=(1,))
    metrics = ServiceMetrics("classifier")
    first = ModelRepository(tmp_path, task="classification")
    first.load()
    record_live_models(metrics, first.models())

    assert model_info(metrics) == {(COLOUR_MODEL, "1"): 1.0}

    build_colour_repository(tmp_path, versions=(2,))
    second = ModelRepository(tmp_path, task="classification")
    second.load()
    record_live_models(metrics, second.models())

    assert model_info(metrics) == {(COLOUR_MODEL, "1"): 0.0, (COLOUR_MODEL, "2"): 1.0}


def samples(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Return every sample of the server's /metrics, keyed by name and labels."""
    text = httpx.get(f"{server.url}/metrics", timeout=10.0).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def family_types(server: Server) -> dict[str, str]:
    text = httpx.get(f"{server.url}/metrics", timeout=10.0).text
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


# Classifier -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repository = build_colour_repository(tmp_path_factory.mktemp("models"), versions=(1, 2))
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository)}
    with running_server(CLASSIFIER_APP, env, tmp_path_factory.mktemp("logs")) as server:
        yield server


def classify(server: Server, colour: tuple[int, int, int]) -> None:
    response = httpx.post(
        f"{server.url}/v1/classify",
        content=solid_png(colour),
        headers={"Content-Type": "image/png"},
        timeout=30.0,
    )
    assert response.status_code == 200, response.text


@pytest.mark.slow
def test_classifier_declares_new_families(classifier: Server) -> None:
    types = family_types(classifier)

    for name, kind in DECLARED_FAMILIES.items():
        assert types.get(name) == kind, name


@pytest.mark.slow
def test_classifier_live_version(classifier: Server) -> None:
    found = samples(classifier)

    live = {"service": "classifier", "model": COLOUR_MODEL, "version": "2"}
    assert value(found, "visionserve_model_info", **live) == 1.0
    # Version 1 was never live in this process, so it has no sample at all.
    older = ("visionserve_model_info", frozenset({**live, "version": "1"}.items()))
    assert older not in found


@pytest.mark.slow
def test_classifier_counts_top1_labels(classifier: Server) -> None:
    for colour in (RED, RED, RED, BLUE, BLUE):
        classify(classifier, colour)
    files = [
        ("file", ("a.png", solid_png(GREEN), "image/png")),
        ("file", ("b.png", solid_png(GREEN), "image/png")),
        ("file", ("c.png", truncated_png(), "image/png")),
    ]
    batch = httpx.post(f"{classifier.url}/v1/classify/batch", files=files, timeout=30.0)
    assert batch.status_code == 200, batch.text

    found = samples(classifier)

    labels = {"service": "classifier", "model": COLOUR_MODEL}
    assert value(found, "visionserve_predictions_total", **labels, label="red") == 3
    assert value(found, "visionserve_predictions_total", **labels, label="blue") == 2
    # The truncated image of the batch was rejected, so it predicts nothing.
    assert value(found, "visionserve_predictions_total", **labels, label="green") == 2
    assert value(found, "visionserve_top1_confidence_count", **labels) == 7
    assert value(found, "visionserve_top1_confidence_bucket", **labels, le="0.9") == 0
    assert value(found, "visionserve_top1_confidence_bucket", **labels, le="1.0") == 7
    assert value(found, "visionserve_top1_confidence_sum", **labels) == pytest.approx(
        7 * COLOUR_PROBABILITY, abs=1e-3
    )


# Detector -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repository = build_colour_detector_repository(tmp_path_factory.mktemp("models"))
    env = {"VS_DETECTOR_MODEL_REPOSITORY": str(repository)}
    with running_server(DETECTOR_APP, env, tmp_path_factory.mktemp("logs")) as server:
        yield server


def detect(server: Server, image: Image.Image) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{server.url}/v1/detect",
        content=encode(image, "PNG"),
        headers={"Content-Type": "image/png"},
        timeout=60.0,
    )
    assert response.status_code == 200, response.text
    detections: list[dict[str, Any]] = response.json()["detections"]
    return detections


@pytest.mark.slow
def test_detector_counts_every_detection(detector: Server) -> None:
    # Red and blue squares on grey, each covering whole 8 px cells of the 64x64 input.
    image = Image.new("RGB", (64, 64), (114, 114, 114))
    image.paste(RED, (8, 8, 24, 24))
    image.paste(BLUE, (40, 40, 64, 64))
    empty = Image.new("RGB", (64, 64), (114, 114, 114))

    detections = detect(detector, image) + detect(detector, empty)

    labels = {"service": "detector", "model": COLOUR_DETECTOR}
    found = samples(detector)
    red = sum(1 for item in detections if item["label"] == "red")
    blue = sum(1 for item in detections if item["label"] == "blue")
    assert red > 0
    assert blue > 0
    assert value(found, "visionserve_predictions_total", **labels, label="red") == red
    assert value(found, "visionserve_predictions_total", **labels, label="blue") == blue
    assert value(found, "visionserve_predictions_total", **labels, label="green") == 0
    assert value(found, "visionserve_top1_confidence_count", **labels) == len(detections)
    scores = sum(item["score"] for item in detections)
    assert value(found, "visionserve_top1_confidence_sum", **labels) == pytest.approx(scores)
    assert value(found, "visionserve_model_info", **labels, version="1") == 1.0
