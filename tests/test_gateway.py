"""The gateway in front of the real classifier, both as uvicorn processes.

The classifier serves the tiny colour model from `tests.onnx_models`. Most tests
send the same request to the gateway and to the classifier directly and expect
the same response. Slow and broken backends are tested in test_gateway_faults.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.images import BLUE, RED, png_chunk, solid_jpeg, solid_png
from tests.onnx_models import COLOUR_MODEL, build_colour_repository
from tests.servers import GATEWAY_OPEN_ACCESS_ENV, Server, free_port, running_server

pytestmark = pytest.mark.slow

CLASSIFIER_APP = "services.classifier.app:create_app"
GATEWAY_APP = "services.gateway.app:create_app"
# Small, so that the 413 test needs only a small body. The test images are far below it.
GATEWAY_MAX_BODY_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway-logs")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def classifier(repository: Path, log_dir: Path) -> Iterator[Server]:
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository)}
    with running_server(CLASSIFIER_APP, env, log_dir) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(classifier: Server, log_dir: Path) -> Iterator[Server]:
    env = {
        "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
        "VS_GATEWAY_DETECTOR_URL": "",
        "VS_GATEWAY_MAX_BODY_BYTES": str(GATEWAY_MAX_BODY_BYTES),
        **GATEWAY_OPEN_ACCESS_ENV,
    }
    with running_server(GATEWAY_APP, env, log_dir) as server:
        yield server


def post_multipart(server: Server, image: bytes, **params: Any) -> httpx.Response:
    files = {"file": ("image.png", image, "image/png")}
    return httpx.post(f"{server.url}/v1/classify", params=params, files=files, timeout=30.0)


def post_raw(
    server: Server,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/classify",
        params=params,
        content=body,
        headers={"Content-Type": content_type, **(headers or {})},
        timeout=30.0,
    )


def png_of_size(size: int) -> bytes:
    """Return a valid red PNG of exactly `size` bytes, padded with a tEXt chunk."""
    image = solid_png(RED)
    iend_start = len(image) - 12  # IEND is the last chunk: 4 length + 4 type + 4 CRC bytes.
    keyword = b"Comment\0"
    text_length = size - len(image) - 12 - len(keyword)
    padding = png_chunk(b"tEXt", keyword + b"x" * text_length)
    return image[:iend_start] + padding + image[iend_start:]


def without_timings(body: dict[str, Any]) -> dict[str, Any]:
    """Drop `timings_ms`, the one part of a classify response that changes between calls."""
    return {key: value for key, value in body.items() if key != "timings_ms"}


def log_records(server: Server) -> list[dict[str, Any]]:
    """Parse the JSON log lines of `server`, skipping any line that is not JSON."""
    records = []
    for line in server.log().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def metric_value(server: Server, name: str, labels: dict[str, str]) -> float:
    """Return one sample of the server's /metrics, or 0.0 if it has not been recorded."""
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_classify_multipart_matches_classifier(gateway: Server, classifier: Server) -> None:
    image = solid_png(RED)

    through_gateway = post_multipart(gateway, image)
    direct = post_multipart(classifier, image)

    assert through_gateway.status_code == 200
    assert direct.status_code == 200
    assert without_timings(through_gateway.json()) == without_timings(direct.json())
    assert through_gateway.json()["predictions"][0]["label"] == "red"
    assert "timings_ms" in through_gateway.json()


def test_classify_raw_body_matches_classifier(gateway: Server, classifier: Server) -> None:
    image = solid_jpeg(BLUE)

    through_gateway = post_raw(gateway, image, "image/jpeg")
    direct = post_raw(classifier, image, "image/jpeg")

    assert through_gateway.status_code == 200
    assert direct.status_code == 200
    assert without_timings(through_gateway.json()) == without_timings(direct.json())
    assert through_gateway.json()["predictions"][0]["label"] == "blue"


def test_classify_forwards_model_and_top_k(gateway: Server) -> None:
    response = post_raw(gateway, solid_png(RED), "image/png", model=COLOUR_MODEL, top_k=2)

    assert response.status_code == 200
    body = response.json()
    assert body["model"]["name"] == COLOUR_MODEL
    assert len(body["predictions"]) == 2


@pytest.mark.parametrize(
    ("case", "body", "content_type", "params", "status"),
    [
        ("empty body", b"", "image/png", {}, 400),
        ("text file", b"just some text\n", "text/plain", {}, 415),
        ("unknown model", solid_png(RED), "image/png", {"model": "no-such-model"}, 404),
        ("top_k zero", solid_png(RED), "image/png", {"top_k": 0}, 422),
        # The gateway rejects this one itself, with the same rule and message.
        ("top_k not a number", solid_png(RED), "image/png", {"top_k": "two"}, 422),
    ],
)
def test_classifier_4xx_passes_through(
    gateway: Server,
    classifier: Server,
    case: str,
    body: bytes,
    content_type: str,
    params: dict[str, Any],
    status: int,
) -> None:
    through_gateway = post_raw(gateway, body, content_type, **params)
    direct = post_raw(classifier, body, content_type, **params)

    assert direct.status_code == status, case
    assert through_gateway.status_code == status, case
    assert through_gateway.json()["error"] == direct.json()["error"], case


def test_unknown_query_parameter_rejected(gateway: Server) -> None:
    response = post_raw(gateway, solid_png(RED), "image/png", topk=2)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert "unknown query parameter topk" in error["message"]


def test_body_over_limit_returns_413(gateway: Server) -> None:
    response = post_raw(gateway, b"\0" * (GATEWAY_MAX_BODY_BYTES + 1), "image/png")

    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert f"limit of {GATEWAY_MAX_BODY_BYTES} bytes" in error["message"]


def test_chunked_body_over_limit_returns_413(gateway: Server) -> None:
    # A generator body makes httpx send chunked transfer encoding without a
    # Content-Length, so the gateway must count the bytes as they arrive.
    chunks = (b"\0" * 4096 for _ in range(GATEWAY_MAX_BODY_BYTES // 4096 + 1))

    response = httpx.post(
        f"{gateway.url}/v1/classify",
        content=chunks,
        headers={"Content-Type": "image/png"},
        timeout=30.0,
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_body_at_limit_is_forwarded(gateway: Server) -> None:
    image = png_of_size(GATEWAY_MAX_BODY_BYTES)

    response = post_raw(gateway, image, "image/png")

    assert len(image) == GATEWAY_MAX_BODY_BYTES
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "red"


def test_request_id_reaches_classifier(gateway: Server, classifier: Server) -> None:
    request_id = f"gateway-test-{uuid.uuid4().hex}"

    response = post_raw(gateway, solid_png(RED), "image/png", headers={"X-Request-ID": request_id})

    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id
    classifier_ids = {record.get("request_id") for record in log_records(classifier)}
    assert request_id in classifier_ids


def test_request_id_generated_when_missing(gateway: Server, classifier: Server) -> None:
    response = post_raw(gateway, solid_png(RED), "image/png")

    request_id = response.headers.get("X-Request-ID")
    assert response.status_code == 200
    assert request_id
    classifier_ids = {record.get("request_id") for record in log_records(classifier)}
    assert request_id in classifier_ids


def test_error_body_carries_request_id(gateway: Server) -> None:
    response = post_raw(gateway, b"", "image/png", headers={"X-Request-ID": "gateway-empty-1"})

    assert response.status_code == 400
    assert response.json()["request_id"] == "gateway-empty-1"


def test_models_grouped_by_backend(gateway: Server, classifier: Server) -> None:
    through_gateway = httpx.get(f"{gateway.url}/v1/models")
    direct = httpx.get(f"{classifier.url}/v1/models")

    assert through_gateway.status_code == 200
    assert through_gateway.json() == {"classifier": direct.json()}


def test_health_and_readiness(gateway: Server) -> None:
    health = httpx.get(f"{gateway.url}/healthz")
    ready = httpx.get(f"{gateway.url}/readyz")

    assert health.status_code == 200
    assert health.json() == {"status": "alive"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def test_metrics_count_backend_calls(gateway: Server) -> None:
    calls = {
        "service": "gateway",
        "backend": "classifier",
        "path": "/v1/classify",
    }
    requests = {"service": "gateway", "route": "/v1/classify", "method": "POST", "status": "200"}
    client_errors = {"service": "gateway", "backend": "classifier", "kind": "client_error"}
    calls_before = metric_value(
        gateway, "visionserve_backend_request_duration_seconds_count", calls
    )
    requests_before = metric_value(gateway, "visionserve_requests_total", requests)
    errors_before = metric_value(gateway, "visionserve_backend_errors_total", client_errors)

    post_raw(gateway, solid_png(RED), "image/png")
    post_raw(gateway, b"", "image/png")

    calls_after = metric_value(gateway, "visionserve_backend_request_duration_seconds_count", calls)
    assert calls_after == calls_before + 2
    assert metric_value(gateway, "visionserve_requests_total", requests) == requests_before + 1
    errors_after = metric_value(gateway, "visionserve_backend_errors_total", client_errors)
    assert errors_after == errors_before + 1


def test_docs_describe_classify_body(gateway: Server) -> None:
    docs = httpx.get(f"{gateway.url}/docs")
    spec = httpx.get(f"{gateway.url}/openapi.json").json()

    assert docs.status_code == 200
    operation = spec["paths"]["/v1/classify"]["post"]
    assert operation["description"] == "Classify one image with the classifier service."
    content = operation["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"]["required"] == ["file"]
    assert content["image/jpeg"]["schema"]["format"] == "binary"
    assert content["image/png"]["schema"]["format"] == "binary"
    parameters = {parameter["name"] for parameter in operation["parameters"]}
    assert parameters == {"model", "top_k"}


def test_classifier_restart(repository: Path, tmp_path: Path) -> None:
    """Stop the classifier under a running gateway, then start it again on the same port."""
    classifier = Server(
        app=CLASSIFIER_APP,
        port=free_port(),
        env={"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository)},
        log_path=tmp_path / "classifier.log",
    )
    classifier.start()
    try:
        env = {
            "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
            "VS_GATEWAY_DETECTOR_URL": "",
            **GATEWAY_OPEN_ACCESS_ENV,
        }
        with running_server(GATEWAY_APP, env, tmp_path) as gateway:
            assert post_raw(gateway, solid_png(RED), "image/png").status_code == 200
            classifier.stop()

            started = time.monotonic()
            down = post_raw(gateway, solid_png(RED), "image/png")
            elapsed = time.monotonic() - started
            not_ready = httpx.get(f"{gateway.url}/readyz")
            health = httpx.get(f"{gateway.url}/healthz")

            assert down.status_code == 503
            assert down.json()["error"]["code"] == "service_unavailable"
            message = down.json()["error"]["message"]
            assert f"classifier service unavailable at {classifier.url}" in message
            assert message.endswith("retry later")
            # The read timeout is 30 s, so a refused connection must not wait for it.
            assert elapsed < 2.0
            assert not_ready.status_code == 503
            assert "classifier" in not_ready.json()["error"]["message"]
            assert health.status_code == 200
            unavailable = {"service": "gateway", "backend": "classifier", "kind": "unavailable"}
            assert metric_value(gateway, "visionserve_backend_errors_total", unavailable) >= 1

            classifier.start()

            assert httpx.get(f"{gateway.url}/readyz").status_code == 200
            recovered = post_raw(gateway, solid_png(RED), "image/png")
            assert recovered.status_code == 200
            assert recovered.json()["predictions"][0]["label"] == "red"
    finally:
        classifier.stop()
