"""The gateway's detection routes and /v1/analyze, with the real detector and classifier processes.

The detector serves the colour detector of `tests.detection_models`, which
puts one box on every 8 px input cell that is red, green or blue. The
classifier serves the colour model of `tests.onnx_models`. So a crop of a red
box must be classified as red.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.detection_models import COLOUR_DETECTOR, build_colour_detector_repository
from tests.images import BLUE, RED, encode, exif_rotated_jpeg
from tests.onnx_models import (
    COLOUR_MODEL,
    build_colour_repository,
    colour_classifier,
    colour_metadata,
    write_model_version,
)
from tests.servers import GATEWAY_OPEN_ACCESS_ENV, Server, free_port, running_server

pytestmark = pytest.mark.slow

CLASSIFIER_APP = "services.classifier.app:create_app"
DETECTOR_APP = "services.detector.app:create_app"
GATEWAY_APP = "services.gateway.app:create_app"
GREY = (114, 114, 114)
MAX_ANALYZE_OBJECTS = 16


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway-detection-logs")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[Server]:
    repository = build_colour_repository(tmp_path_factory.mktemp("classifiers"))
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository), "VS_CLASSIFIER_INTRA_OP_THREADS": "1"}
    with running_server(CLASSIFIER_APP, env, log_dir) as server:
        yield server


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[Server]:
    repository = build_colour_detector_repository(tmp_path_factory.mktemp("detectors"))
    env = {"VS_DETECTOR_MODEL_REPOSITORY": str(repository), "VS_DETECTOR_INTRA_OP_THREADS": "1"}
    with running_server(DETECTOR_APP, env, log_dir) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(classifier: Server, detector: Server, log_dir: Path) -> Iterator[Server]:
    env = {
        "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
        "VS_GATEWAY_DETECTOR_URL": detector.url,
        "VS_GATEWAY_MAX_ANALYZE_OBJECTS": str(MAX_ANALYZE_OBJECTS),
        **GATEWAY_OPEN_ACCESS_ENV,
    }
    with running_server(GATEWAY_APP, env, log_dir) as server:
        yield server


def two_squares(size: tuple[int, int] = (200, 120)) -> Image.Image:
    """A grey image with a red square on the left and a blue one on the right."""
    image = Image.new("RGB", size, GREY)
    image.paste(RED, (20, 20, 60, 60))
    image.paste(BLUE, (120, 50, 180, 110))
    return image


def png(image: Image.Image) -> bytes:
    return encode(image, "PNG")


def post(server: Server, path: str, body: bytes, **params: Any) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}",
        params=params,
        content=body,
        headers={"Content-Type": "image/png"},
        timeout=60.0,
    )


def metric_value(server: Server, name: str, labels: dict[str, str]) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def classifier_calls(classifier: Server, route: str) -> float:
    labels = {"service": "classifier", "route": route, "method": "POST", "status": "200"}
    return metric_value(classifier, "visionserve_requests_total", labels)


def inference_runs(classifier: Server) -> float:
    labels = {"service": "classifier", "model": COLOUR_MODEL, "version": "1"}
    return metric_value(classifier, "visionserve_inference_duration_seconds_count", labels)


# Forwarding -------------------------------------------------------------------


def test_detect_matches_detector(gateway: Server, detector: Server) -> None:
    data = png(two_squares())

    through_gateway = post(gateway, "/v1/detect", data, classes="0,2", conf=0.5)
    direct = post(detector, "/v1/detect", data, classes="0,2", conf=0.5)

    assert through_gateway.status_code == 200, through_gateway.text
    assert through_gateway.json()["detections"] == direct.json()["detections"]
    assert {item["label"] for item in direct.json()["detections"]} == {"red", "blue"}


def test_detect_forwards_repeated_classes(gateway: Server) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/detect",
        params=[("classes", "2"), ("classes", "1")],
        content=png(two_squares()),
        headers={"Content-Type": "image/png"},
        timeout=60.0,
    )

    assert response.status_code == 200, response.text
    assert {item["label"] for item in response.json()["detections"]} == {"blue"}


def test_detector_errors_pass_through(gateway: Server) -> None:
    invalid = post(gateway, "/v1/detect", png(two_squares()), conf=3)
    empty = post(gateway, "/v1/detect", b"")

    assert invalid.status_code == 422
    assert "'conf' must be between 0 and 1" in invalid.json()["error"]["message"]
    assert empty.status_code == 400
    assert empty.json()["error"]["code"] == "empty_body"


def test_unknown_parameter_rejected(gateway: Server) -> None:
    response = post(gateway, "/v1/detect", png(two_squares()), top_k=3)

    assert response.status_code == 422
    assert "unknown query parameter top_k" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("params", "accept", "media_type"),
    [
        ({}, None, "image/jpeg"),
        ({"format": "png"}, None, "image/png"),
        ({}, "image/png", "image/png"),
    ],
)
def test_render_forwarded(
    gateway: Server, params: dict[str, str], accept: str | None, media_type: str
) -> None:
    headers = {"Content-Type": "image/png"}
    if accept:
        headers["Accept"] = accept

    response = httpx.post(
        f"{gateway.url}/v1/detect/render",
        params=params,
        content=png(two_squares()),
        headers=headers,
        timeout=60.0,
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert Image.open(io.BytesIO(response.content)).size == (200, 120)


def test_models_list_both_backends(gateway: Server, classifier: Server, detector: Server) -> None:
    body = httpx.get(f"{gateway.url}/v1/models").json()

    assert body == {
        "classifier": httpx.get(f"{classifier.url}/v1/models").json(),
        "detector": httpx.get(f"{detector.url}/v1/models").json(),
    }


# Analyze ----------------------------------------------------------------------


def test_analyze_classifies_crops_in_one_batch(gateway: Server, classifier: Server) -> None:
    batch_before = classifier_calls(classifier, "/v1/classify/batch")
    single_before = classifier_calls(classifier, "/v1/classify")
    runs_before = inference_runs(classifier)

    response = post(gateway, "/v1/analyze", png(two_squares()), margin=0)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["detector_model"] == {"name": COLOUR_DETECTOR, "version": 1}
    assert body["classifier_model"] == {"name": COLOUR_MODEL, "version": 1}
    assert body["image"] == {"width": 200, "height": 120}
    objects = body["objects"]
    assert len(objects) > 2
    for item in objects:
        assert item["classification"]["label"] == item["label"]
        # Edge boxes hold some grey background, which lowers the probability a little.
        assert item["classification"]["probability"] > 0.9
        assert item["classification_error"] is None
    assert classifier_calls(classifier, "/v1/classify/batch") == batch_before + 1
    assert classifier_calls(classifier, "/v1/classify") == single_before
    assert inference_runs(classifier) == runs_before + 1
    assert set(body["timings_ms"]) == {"decode", "detect", "crop", "classify", "total"}


def test_analyze_crop_box_has_margin(gateway: Server) -> None:
    body = post(gateway, "/v1/analyze", png(two_squares()), margin=0.5).json()

    for item in body["objects"]:
        box, crop = item["box"], item["crop_box"]
        width, height = box["x2"] - box["x1"], box["y2"] - box["y1"]
        assert crop["x1"] <= max(box["x1"] - width / 2, 0) + 1
        assert crop["x2"] >= min(box["x2"] + width / 2, 200) - 1
        assert crop["y1"] <= max(box["y1"] - height / 2, 0) + 1
        assert crop["y2"] >= min(box["y2"] + height / 2, 120) - 1


def test_analyze_crops_exif_rotated_image(gateway: Server) -> None:
    # The user sees a portrait with red at the top and blue at the bottom.
    view = Image.new("RGB", (120, 200), GREY)
    view.paste(RED, (30, 10, 90, 70))
    view.paste(BLUE, (30, 130, 90, 190))

    response = httpx.post(
        f"{gateway.url}/v1/analyze",
        params={"margin": 0},
        content=exif_rotated_jpeg(view),
        headers={"Content-Type": "image/jpeg"},
        timeout=60.0,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {"width": 120, "height": 200}
    labels_by_half = {"top": set(), "bottom": set()}
    for item in body["objects"]:
        centre_y = (item["box"]["y1"] + item["box"]["y2"]) / 2
        labels_by_half["top" if centre_y < 100 else "bottom"].add(item["classification"]["label"])
    assert labels_by_half == {"top": {"red"}, "bottom": {"blue"}}


def test_analyze_without_detections_skips_classifier(gateway: Server, classifier: Server) -> None:
    batch_before = classifier_calls(classifier, "/v1/classify/batch")

    response = post(gateway, "/v1/analyze", png(Image.new("RGB", (50, 40), GREY)))

    assert response.status_code == 200, response.text
    assert response.json()["objects"] == []
    assert response.json()["classifier_model"] is None
    assert classifier_calls(classifier, "/v1/classify/batch") == batch_before


def test_analyze_multipart_and_max_det(gateway: Server) -> None:
    files = {"file": ("squares.png", png(two_squares()), "image/png")}

    response = httpx.post(
        f"{gateway.url}/v1/analyze", params={"max_det": 2}, files=files, timeout=60.0
    )

    assert response.status_code == 200, response.text
    assert len(response.json()["objects"]) == 2


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"margin": "-0.1"}, 422, "'margin' must be between 0 and 1"),
        ({"margin": "2"}, 422, "'margin' must be between 0 and 1"),
        ({"max_det": "0"}, 422, f"'max_det' must be between 1 and {MAX_ANALYZE_OBJECTS}"),
        ({"max_det": str(MAX_ANALYZE_OBJECTS + 1)}, 422, "'max_det' must be between 1"),
        ({"top_k": "1"}, 422, "unknown query parameter top_k"),
        ({"conf": "7"}, 422, "'conf' must be between 0 and 1"),
        ({"classifier_model": "missing"}, 404, "'missing' not found"),
    ],
)
def test_analyze_rejects_invalid_parameters(
    gateway: Server, params: dict[str, str], status: int, message: str
) -> None:
    response = post(gateway, "/v1/analyze", png(two_squares()), **params)

    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


def test_analyze_rejects_bad_image(gateway: Server) -> None:
    not_an_image = post(gateway, "/v1/analyze", b"plain text, not pixels")
    empty = post(gateway, "/v1/analyze", b"")

    assert not_an_image.status_code == 415
    assert empty.status_code == 400


# Readiness --------------------------------------------------------------------


def test_readiness_includes_detector(classifier: Server, tmp_path: Path) -> None:
    env = {
        "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
        "VS_GATEWAY_DETECTOR_URL": f"http://127.0.0.1:{free_port()}",
        **GATEWAY_OPEN_ACCESS_ENV,
    }

    with running_server(GATEWAY_APP, env, tmp_path, ready_path="/healthz") as gateway:
        ready = httpx.get(f"{gateway.url}/readyz")
        detect = post(gateway, "/v1/detect", png(two_squares()))

    assert ready.status_code == 503
    assert "detector service unavailable" in ready.json()["error"]["message"]
    assert detect.status_code == 503


def test_gateway_without_detector(classifier: Server, tmp_path: Path) -> None:
    env = {
        "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
        "VS_GATEWAY_DETECTOR_URL": "",
        **GATEWAY_OPEN_ACCESS_ENV,
    }

    with running_server(GATEWAY_APP, env, tmp_path) as gateway:
        detect = post(gateway, "/v1/detect", png(two_squares()))
        models = httpx.get(f"{gateway.url}/v1/models").json()

    assert detect.status_code == 503
    assert "no detector service" in detect.json()["error"]["message"]
    assert set(models) == {"classifier"}


def test_analyze_names_classifier_model_when_it_is_missing(
    detector: Server, tmp_path: Path
) -> None:
    repository = build_colour_repository(tmp_path / "classifiers")
    write_model_version(repository, colour_classifier(), colour_metadata(name="colours-copy"))
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository)}
    with running_server(CLASSIFIER_APP, env, tmp_path) as two_models:
        gateway_env = {
            "VS_GATEWAY_CLASSIFIER_URL": two_models.url,
            "VS_GATEWAY_DETECTOR_URL": detector.url,
            **GATEWAY_OPEN_ACCESS_ENV,
        }
        with running_server(GATEWAY_APP, gateway_env, tmp_path) as gateway:
            response = post(gateway, "/v1/analyze", png(two_squares()))

    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "query parameter 'classifier_model' is required" in message
    assert "colours, colours-copy" in message
