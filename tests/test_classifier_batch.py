"""POST /v1/classify/batch on a real classifier process serving the colour model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.images import BLUE, GREEN, RED, solid_jpeg, solid_png, truncated_png
from tests.onnx_models import (
    COLOUR_MODEL,
    build_colour_repository,
    colour_classifier,
    colour_metadata,
    write_model_version,
)
from tests.servers import Server, running_server

pytestmark = pytest.mark.slow

APP = "services.classifier.app:create_app"
MAX_BATCH_IMAGES = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repository = build_colour_repository(tmp_path_factory.mktemp("models"))
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(repository),
        "VS_CLASSIFIER_MAX_BATCH_IMAGES": str(MAX_BATCH_IMAGES),
        "VS_CLASSIFIER_INTRA_OP_THREADS": "1",
    }
    with running_server(APP, env, tmp_path_factory.mktemp("logs")) as running:
        yield running


def post_batch(server: Server, images: list[bytes], **params: str) -> httpx.Response:
    files = [("file", (f"image-{index}", data, "image/png")) for index, data in enumerate(images)]
    return httpx.post(f"{server.url}/v1/classify/batch", params=params, files=files, timeout=30.0)


def inference_runs(server: Server) -> float:
    labels = {"service": "classifier", "model": COLOUR_MODEL, "version": "1"}
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name == "visionserve_inference_duration_seconds_count" and sample.labels == labels:
                return sample.value
    return 0.0


def test_batch_classifies_in_one_run(server: Server) -> None:
    runs_before = inference_runs(server)

    response = post_batch(server, [solid_png(RED), solid_jpeg(GREEN), solid_png(BLUE, (9, 31))])

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": COLOUR_MODEL, "version": 1}
    labels = [entry["predictions"][0]["label"] for entry in body["results"]]
    assert labels == ["red", "green", "blue"]
    assert [entry["index"] for entry in body["results"]] == [0, 1, 2]
    assert body["results"][2]["image"] == {"width": 9, "height": 31}
    assert inference_runs(server) == runs_before + 1


def test_bad_image_gets_its_own_error(server: Server) -> None:
    response = post_batch(server, [solid_png(RED), truncated_png(), b"", solid_png(BLUE)])

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["predictions"][0]["label"] == "red"
    assert results[1]["error"]["code"] == "corrupt_image"
    assert results[1]["predictions"] is None
    assert results[2]["error"]["code"] == "empty_body"
    assert results[3]["predictions"][0]["label"] == "blue"
    assert results[3]["error"] is None


def test_all_images_bad_runs_nothing(server: Server) -> None:
    runs_before = inference_runs(server)

    response = post_batch(server, [truncated_png()])

    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["error"]["code"] == "corrupt_image"
    assert inference_runs(server) == runs_before


def test_top_k_applies_to_each_image(server: Server) -> None:
    response = post_batch(server, [solid_png(RED), solid_png(GREEN)], top_k="2")

    assert [len(entry["predictions"]) for entry in response.json()["results"]] == [2, 2]


def test_too_many_images_rejected(server: Server) -> None:
    response = post_batch(server, [solid_png(RED)] * (MAX_BATCH_IMAGES + 1))

    assert response.status_code == 400
    assert "Too many files" in response.json()["error"]["message"]


def test_raw_body_rejected(server: Server) -> None:
    response = httpx.post(
        f"{server.url}/v1/classify/batch",
        content=solid_png(RED),
        headers={"Content-Type": "image/png"},
        timeout=30.0,
    )

    assert response.status_code == 415
    assert "one 'file' file field per image" in response.json()["error"]["message"]


def test_form_without_file_field_rejected(server: Server) -> None:
    response = httpx.post(
        f"{server.url}/v1/classify/batch",
        files={"image": ("a.png", solid_png(RED), "image/png")},
        timeout=30.0,
    )

    assert response.status_code == 400
    assert "no field named 'file'" in response.json()["error"]["message"]


def test_batch_dimension_fixed_at_one(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    write_model_version(repository, colour_classifier(batch_dim=1), colour_metadata())
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository)}

    with running_server(APP, env, tmp_path) as fixed:
        response = post_batch(fixed, [solid_png(RED), solid_png(BLUE)])

    assert response.status_code == 200, response.text
    labels = [entry["predictions"][0]["label"] for entry in response.json()["results"]]
    assert labels == ["red", "blue"]
