"""The default models classify real photos and held-out digits through the gateway.

Runs the classifier and the gateway as real uvicorn processes on the models
that `make demo` builds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scripts.demo import DIGITS_MODEL, IMAGENET_MODEL, local_stack
from scripts.digit_samples import load_digit_samples
from scripts.sample_images import SamplePhoto, imagenet_samples

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(
    default_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    log_dir = tmp_path_factory.mktemp("end-to-end-logs")
    with (
        local_stack(default_repository, log_dir) as servers,
        httpx.Client(base_url=servers["gateway"].url, timeout=60.0) as client,
    ):
        yield client


@pytest.mark.parametrize("photo", imagenet_samples(), ids=lambda photo: photo.name.split()[0])
def test_real_photo_top_labels(gateway: httpx.Client, photo: SamplePhoto) -> None:
    response = gateway.post(
        "/v1/classify",
        params={"model": IMAGENET_MODEL, "top_k": 3},
        files={"file": ("photo.jpg", photo.jpeg, "image/jpeg")},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    labels = [prediction["label"] for prediction in body["predictions"]]
    assert body["model"]["name"] == IMAGENET_MODEL
    assert photo.check(labels), (
        f"{photo.name}: got {labels}, expected one of {sorted(photo.expected_labels)}"
    )


def test_digits_match_training_evaluation(gateway: httpx.Client, default_repository: Path) -> None:
    samples, reported_accuracy = load_digit_samples(default_repository, DIGITS_MODEL)
    served_labels = []
    for sample in samples:
        response = gateway.post(
            "/v1/classify",
            params={"model": DIGITS_MODEL, "top_k": 1},
            content=sample.png,
            headers={"Content-Type": "image/png"},
        )
        assert response.status_code == 200, response.text
        served_labels.append(response.json()["predictions"][0]["label"])

    disagreements = [
        (sample.path.name, sample.training_prediction, served)
        for sample, served in zip(samples, served_labels, strict=True)
        if sample.training_prediction != served
    ]
    correct = sum(
        sample.label == served for sample, served in zip(samples, served_labels, strict=True)
    )
    assert len(samples) >= 250
    assert disagreements == []
    assert correct / len(samples) == pytest.approx(reported_accuracy)
    assert reported_accuracy >= 0.97


def test_gateway_lists_default_models(gateway: httpx.Client) -> None:
    response = gateway.get("/v1/models")

    assert response.status_code == 200
    names = {model["name"] for model in response.json()["classifier"]["models"]}
    assert names == {IMAGENET_MODEL, DIGITS_MODEL}
