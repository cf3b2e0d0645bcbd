"""The classifier as a real uvicorn process, serving the colour model of `tests.onnx_models`."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.images import (
    BLUE,
    GREEN,
    RED,
    encode,
    png_header_only,
    solid_jpeg,
    solid_png,
    truncated_jpeg,
    truncated_png,
)
from tests.onnx_models import (
    COLOUR_LABELS,
    COLOUR_MODEL,
    build_colour_repository,
    colour_classifier,
    colour_metadata,
    write_model_version,
)
from tests.servers import Server, running_server

pytestmark = pytest.mark.slow

APP = "services.classifier.app:create_app"
# Small, so that the 413 tests need only small bodies. Every valid test image is far below it.
MAX_BODY_BYTES = 256 * 1024
COLOURS = {"red": RED, "green": GREEN, "blue": BLUE}
TIMING_KEYS = {"decode", "preprocess", "inference", "postprocess", "total"}


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("classifier-logs")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[Server]:
    repository = build_colour_repository(tmp_path_factory.mktemp("models"), versions=(1, 2))
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(repository),
        "VS_CLASSIFIER_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "VS_CLASSIFIER_INTRA_OP_THREADS": "1",
    }
    with running_server(APP, env, log_dir) as running:
        yield running


def post_raw(
    server: Server, body: bytes, content_type: str | None, **params: Any
) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return httpx.post(
        f"{server.url}/v1/classify", params=params, content=body, headers=headers, timeout=30.0
    )


def post_file(server: Server, image: bytes, field: str = "file", **params: Any) -> httpx.Response:
    files = {field: ("upload.bin", image, "application/octet-stream")}
    return httpx.post(f"{server.url}/v1/classify", params=params, files=files, timeout=30.0)


def metric_value(server: Server, name: str, labels: dict[str, str]) -> float:
    """Return one sample of the server's /metrics, or 0.0 if it has not been recorded."""
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def assert_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["error"]["code"] == code
    assert message in body["error"]["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]


# Probes and model listing ------------------------------------------------------


def test_healthz(server: Server) -> None:
    response = httpx.get(f"{server.url}/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readyz(server: Server) -> None:
    response = httpx.get(f"{server.url}/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_models_lists_versions_and_shape(server: Server) -> None:
    response = httpx.get(f"{server.url}/v1/models")

    assert response.status_code == 200
    assert response.json() == {
        "default_model": COLOUR_MODEL,
        "models": [
            {
                "name": COLOUR_MODEL,
                "versions": [1, 2],
                "live_version": 2,
                "task": "classification",
                "input_shape": [3, 8, 8],
                "num_labels": 3,
                "metrics": {"top1_accuracy": 1.0},
            }
        ],
    }


def test_openapi_documents_request_body(server: Server) -> None:
    operation = httpx.get(f"{server.url}/openapi.json").json()["paths"]["/v1/classify"]["post"]

    content = operation["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"]["required"] == ["file"]
    assert "image/jpeg" in content
    assert "application/octet-stream" in content
    assert operation["description"] == "Classify one image and return its most probable labels."


# Classification ---------------------------------------------------------------


@pytest.mark.parametrize("label", COLOUR_LABELS)
def test_classify_multipart(server: Server, label: str) -> None:
    response = post_file(server, solid_png(COLOURS[label], (64, 48)))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": COLOUR_MODEL, "version": 2}
    assert body["image"] == {"width": 64, "height": 48}
    top = body["predictions"][0]
    assert top["label"] == label
    assert top["class_id"] == COLOUR_LABELS.index(label)
    assert top["probability"] > 0.99


@pytest.mark.parametrize(
    ("image", "content_type"),
    [
        (solid_jpeg(GREEN), "image/jpeg"),
        (solid_png(GREEN), "image/png"),
        (encode(Image.new("RGB", (20, 20), GREEN), "WEBP"), "image/webp"),
        (solid_png(GREEN), "application/octet-stream"),
    ],
    ids=["jpeg", "png", "webp", "octet-stream"],
)
def test_classify_raw_body(server: Server, image: bytes, content_type: str) -> None:
    response = post_raw(server, image, content_type)

    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] == "green"


def test_probabilities_sorted_and_bounded(server: Server) -> None:
    response = post_raw(server, solid_jpeg(BLUE), "image/jpeg", top_k=3)

    predictions = response.json()["predictions"]
    probabilities = [prediction["probability"] for prediction in predictions]
    assert len(predictions) == 3
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0.0 <= probability <= 1.0 for probability in probabilities)
    assert sum(probabilities) <= 1.0 + 1e-9
    assert {prediction["label"] for prediction in predictions} == set(COLOUR_LABELS)


def test_stage_timings_present(server: Server) -> None:
    response = post_raw(server, solid_jpeg(RED), "image/jpeg")

    timings = response.json()["timings_ms"]
    assert set(timings) == TIMING_KEYS
    assert all(value >= 0.0 for value in timings.values())
    stages = timings["decode"] + timings["preprocess"] + timings["inference"]
    assert timings["total"] >= stages + timings["postprocess"] - 0.01


def test_top_k_limits_predictions(server: Server) -> None:
    response = post_raw(server, solid_jpeg(RED), "image/jpeg", top_k=1)

    assert [item["label"] for item in response.json()["predictions"]] == ["red"]


def test_default_top_k_capped_at_labels(server: Server) -> None:
    # default_top_k is 5 and the model has 3 labels.
    response = post_raw(server, solid_jpeg(RED), "image/jpeg")

    assert len(response.json()["predictions"]) == 3


@pytest.mark.parametrize("top_k", [0, 4, -1])
def test_top_k_out_of_range(server: Server, top_k: int) -> None:
    response = post_raw(server, solid_jpeg(RED), "image/jpeg", top_k=top_k)

    assert_error(
        response, 422, "invalid_parameter", "'top_k' must be between 1 and 3 for model colours"
    )


def test_top_k_not_an_integer(server: Server) -> None:
    response = post_raw(server, solid_jpeg(RED), "image/jpeg", top_k="many")

    assert_error(response, 422, "invalid_parameter", "query.top_k")


def test_unknown_model(server: Server) -> None:
    response = post_raw(server, solid_jpeg(RED), "image/jpeg", model="resnet50")

    assert_error(
        response, 404, "model_not_found", "model 'resnet50' not found; available models: colours"
    )


def test_metrics_move_after_request(server: Server) -> None:
    requests = {"service": "classifier", "route": "/v1/classify", "method": "POST", "status": "200"}
    inference = {"service": "classifier", "model": COLOUR_MODEL, "version": "2"}
    decode = {"service": "classifier", "model": COLOUR_MODEL, "stage": "decode"}
    requests_before = metric_value(server, "visionserve_requests_total", requests)
    inference_before = metric_value(
        server, "visionserve_inference_duration_seconds_count", inference
    )
    decode_before = metric_value(server, "visionserve_stage_duration_seconds_count", decode)

    assert post_raw(server, solid_jpeg(RED), "image/jpeg").status_code == 200

    assert metric_value(server, "visionserve_requests_total", requests) == requests_before + 1
    assert (
        metric_value(server, "visionserve_inference_duration_seconds_count", inference)
        == inference_before + 1
    )
    assert (
        metric_value(server, "visionserve_stage_duration_seconds_count", decode)
        == decode_before + 1
    )


# Bad input --------------------------------------------------------------------


def chunked(body: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    """Yield `body` in pieces, so httpx sends it without a Content-Length header."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def multipart_post(server: Server, files: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/classify", files=files, timeout=30.0)


TEXT_FILE = b"label,path\nred,images/red.jpg\n" * 8
TOO_BIG = b"\xff\xd8\xff" + bytes(MAX_BODY_BYTES)

BAD_INPUTS: list[tuple[str, Callable[[Server], httpx.Response], int, str, str]] = [
    (
        "empty body",
        lambda s: post_raw(s, b"", "image/jpeg"),
        400,
        "empty_body",
        "the request body is empty",
    ),
    (
        "zero-byte part",
        lambda s: post_file(s, b""),
        400,
        "empty_body",
        "the form field 'file' is empty",
    ),
    (
        "multipart without file",
        lambda s: post_file(s, solid_png(RED), field="image"),
        400,
        "invalid_request",
        "the multipart form has no field named 'file'",
    ),
    (
        "truncated jpeg",
        lambda s: post_raw(s, truncated_jpeg(), "image/jpeg"),
        400,
        "corrupt_image",
        "the JPEG data is truncated",
    ),
    (
        "truncated png",
        lambda s: post_file(s, truncated_png()),
        400,
        "corrupt_image",
        "the PNG data ends inside the IDAT chunk; the file is truncated",
    ),
    (
        "random bytes",
        lambda s: post_raw(s, random.Random(3).randbytes(2048), "image/jpeg"),
        415,
        "unsupported_media_type",
        "the data is not a supported image; send JPEG, PNG, WebP, BMP, TIFF or GIF",
    ),
    (
        "text file",
        lambda s: post_file(s, TEXT_FILE),
        415,
        "unsupported_media_type",
        "the data is not a supported image",
    ),
    (
        "wrong content type",
        lambda s: post_raw(s, b'{"image": "red"}', "application/json"),
        415,
        "unsupported_media_type",
        "content type 'application/json' is not accepted",
    ),
    (
        "missing content type",
        lambda s: post_raw(s, solid_png(RED), None),
        415,
        "unsupported_media_type",
        "content type '(missing)' is not accepted",
    ),
    (
        "declared 50000x50000 png",
        lambda s: post_raw(s, png_header_only(50_000, 50_000), "image/png"),
        413,
        "payload_too_large",
        "the image is 50000x50000 (2500000000 pixels), more than the limit of 50000000",
    ),
    (
        "body over limit",
        lambda s: post_raw(s, TOO_BIG, "image/jpeg"),
        413,
        "payload_too_large",
        f"the request body is larger than the limit of {MAX_BODY_BYTES} bytes",
    ),
    (
        "chunked body over limit",
        lambda s: post_raw(s, chunked(TOO_BIG), "image/jpeg"),  # type: ignore[arg-type]
        413,
        "payload_too_large",
        f"the request body is larger than the limit of {MAX_BODY_BYTES} bytes",
    ),
    (
        "multipart over limit",
        lambda s: post_file(s, TOO_BIG),
        413,
        "payload_too_large",
        f"the request body is larger than the limit of {MAX_BODY_BYTES} bytes",
    ),
    (
        "two files",
        lambda s: multipart_post(
            s, [("file", ("a.png", solid_png(RED))), ("file", ("b.png", solid_png(BLUE)))]
        ),
        400,
        "invalid_request",
        "the multipart body is invalid: Too many files",
    ),
]


@pytest.mark.parametrize(
    ("send", "status", "code", "message"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input(
    server: Server, send: Callable[[Server], httpx.Response], status: int, code: str, message: str
) -> None:
    assert_error(send(server), status, code, message)


def test_still_ready_after_bad_input(server: Server) -> None:
    for _, send, _, _, _ in BAD_INPUTS:
        send(server)

    assert httpx.get(f"{server.url}/readyz").status_code == 200
    response = post_raw(server, solid_png(BLUE), "image/png")
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "blue"
    assert "Traceback" not in server.log()


# Start-up ---------------------------------------------------------------------


def test_failed_load_keeps_process_alive_but_not_ready(tmp_path: Path, log_dir: Path) -> None:
    repository = build_colour_repository(tmp_path / "models")
    (repository / COLOUR_MODEL / "1" / "model.onnx").write_bytes(b"not onnx")
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository)}

    with running_server(APP, env, log_dir, ready_path="/healthz") as broken:
        ready = httpx.get(f"{broken.url}/readyz")
        classify = post_raw(broken, solid_png(RED), "image/png")

    assert_error(ready, 503, "service_unavailable", "models failed to load; see the service log")
    assert_error(classify, 503, "service_unavailable", "models failed to load")
    assert "onnxruntime cannot load" in broken.log()


def test_several_models_need_model_parameter(tmp_path: Path, log_dir: Path) -> None:
    repository = build_colour_repository(tmp_path / "models")
    write_model_version(repository, colour_classifier(), colour_metadata("shades"))
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository)}

    with running_server(APP, env, log_dir) as several:
        without_model = post_raw(several, solid_png(RED), "image/png")
        with_model = post_raw(several, solid_png(RED), "image/png", model="shades")

    assert_error(
        without_model, 422, "invalid_parameter", "'model' is required because several models"
    )
    assert with_model.json()["model"] == {"name": "shades", "version": 1}


def test_invalid_settings_stop_start(tmp_path: Path, log_dir: Path) -> None:
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(build_colour_repository(tmp_path / "models")),
        "VS_CLASSIFIER_ALPHA_BACKGROUND": "[0, 0, 300]",
    }

    with (
        pytest.raises(RuntimeError, match="exited early") as caught,
        running_server(APP, env, log_dir),
    ):
        pass

    assert "alpha_background" in str(caught.value)
