"""The gateway's own limits on images and query strings, on real processes.

The gateway runs with small limits in front of the real classifier and
detector, whose own limits are far larger. A rejected request must not reach
a backend, which the backend's request counter on /metrics shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.gateway.auth import key_digest
from services.gateway.keys import generate_key
from tests.detection_models import COLOUR_DETECTOR, build_colour_detector_repository
from tests.images import RED, jpeg_with_declared_size, png_header_only, solid_png
from tests.onnx_models import COLOUR_MODEL, build_colour_repository
from tests.scraping import metric_total
from tests.servers import Server, running_server

pytestmark = pytest.mark.slow

CLASSIFIER_APP = "services.classifier.app:create_app"
DETECTOR_APP = "services.detector.app:create_app"
GATEWAY_APP = "services.gateway.app:create_app"
KEY = generate_key()
AUTH = {"X-API-Key": KEY}

MAX_PIXELS = 100 * 100
MAX_QUERY_PARAMETERS = 6
MAX_QUERY_VALUE_CHARS = 40
MAX_MODEL_NAME_CHARS = 16
MAX_CLASSES = 3
# Each route and the backend route that it calls.
IMAGE_ROUTES = {
    "/v1/classify": ("classifier", "/v1/classify"),
    "/v1/detect": ("detector", "/v1/detect"),
    "/v1/detect/render": ("detector", "/v1/detect/render"),
    "/v1/analyze": ("detector", "/v1/detect"),
}


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway-limits-logs")


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
def backends(classifier: Server, detector: Server) -> dict[str, Server]:
    return {"classifier": classifier, "detector": detector}


@pytest.fixture(scope="module")
def gateway(classifier: Server, detector: Server, log_dir: Path) -> Iterator[Server]:
    env = {
        "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
        "VS_GATEWAY_DETECTOR_URL": detector.url,
        "VS_GATEWAY_API_KEYS": json.dumps([{"id": "limits", "sha256": key_digest(KEY)}]),
        "VS_GATEWAY_MAX_PIXELS": str(MAX_PIXELS),
        "VS_GATEWAY_MAX_QUERY_PARAMETERS": str(MAX_QUERY_PARAMETERS),
        "VS_GATEWAY_MAX_QUERY_VALUE_CHARS": str(MAX_QUERY_VALUE_CHARS),
        "VS_GATEWAY_MAX_MODEL_NAME_CHARS": str(MAX_MODEL_NAME_CHARS),
        "VS_GATEWAY_MAX_CLASSES": str(MAX_CLASSES),
    }
    with running_server(GATEWAY_APP, env, log_dir) as server:
        yield server


def post_raw(server: Server, route: str, body: bytes, params: Any = None) -> httpx.Response:
    return httpx.post(
        f"{server.url}{route}",
        params=params,
        content=body,
        headers={"Content-Type": "image/png", **AUTH},
        timeout=30.0,
    )


def post_files(server: Server, route: str, files: list[tuple[str, Any]]) -> httpx.Response:
    return httpx.post(f"{server.url}{route}", files=files, headers=AUTH, timeout=30.0)


def backend_calls(backends: dict[str, Server], route: str) -> float:
    """Return how many requests the backend behind gateway `route` has received."""
    name, backend_route = IMAGE_ROUTES[route]
    return metric_total(backends[name], "visionserve_requests_total", route=backend_route)


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


@pytest.mark.parametrize("route", sorted(IMAGE_ROUTES))
def test_raw_image_over_max_pixels_returns_413(
    gateway: Server, backends: dict[str, Server], route: str
) -> None:
    before = backend_calls(backends, route)

    response = post_raw(gateway, route, solid_png(RED, (101, 100)))

    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert "101x100 (10100 pixels)" in error_of(response)["message"]
    assert "VS_GATEWAY_MAX_PIXELS" in error_of(response)["message"]
    assert backend_calls(backends, route) == before


@pytest.mark.parametrize("route", sorted(IMAGE_ROUTES))
def test_image_at_max_pixels_is_forwarded(
    gateway: Server, backends: dict[str, Server], route: str
) -> None:
    before = backend_calls(backends, route)

    response = post_raw(gateway, route, solid_png(RED, (100, 100)))

    assert response.status_code == 200, response.text
    assert backend_calls(backends, route) == before + 1


@pytest.mark.parametrize("route", ["/v1/classify", "/v1/detect", "/v1/analyze"])
def test_multipart_image_over_max_pixels_returns_413(
    gateway: Server, backends: dict[str, Server], route: str
) -> None:
    before = backend_calls(backends, route)
    files = [("file", ("big.png", solid_png(RED, (100, 101)), "image/png"))]

    response = post_files(gateway, route, files)

    assert response.status_code == 413
    assert "VS_GATEWAY_MAX_PIXELS" in error_of(response)["message"]
    assert backend_calls(backends, route) == before


@pytest.mark.parametrize(
    "image",
    [png_header_only(20000, 20000), jpeg_with_declared_size(20000, 20000)],
    ids=["png", "jpeg"],
)
def test_declared_size_checked_from_header(
    gateway: Server, backends: dict[str, Server], image: bytes
) -> None:
    before = backend_calls(backends, "/v1/classify")

    response = post_raw(gateway, "/v1/classify", image)

    assert response.status_code == 413
    assert "20000x20000" in error_of(response)["message"]
    assert backend_calls(backends, "/v1/classify") == before


@pytest.mark.parametrize("route", ["/v1/classify", "/v1/detect", "/v1/detect/render"])
def test_form_with_two_files_returns_400(
    gateway: Server, backends: dict[str, Server], route: str
) -> None:
    before = backend_calls(backends, route)
    image = solid_png(RED)
    files = [("file", ("a.png", image, "image/png")), ("file", ("b.png", image, "image/png"))]

    response = post_files(gateway, route, files)

    assert response.status_code == 400
    assert "more files than this route takes (1)" in error_of(response)["message"]
    assert backend_calls(backends, route) == before


def test_unreadable_image_is_forwarded(gateway: Server, backends: dict[str, Server]) -> None:
    before = backend_calls(backends, "/v1/classify")

    response = post_raw(gateway, "/v1/classify", b"not an image at all")

    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"
    assert backend_calls(backends, "/v1/classify") == before + 1


def test_too_many_query_parameters_return_422(gateway: Server) -> None:
    image = solid_png(RED)
    at_limit = post_raw(gateway, "/v1/classify", image, [("top_k", "1")] * MAX_QUERY_PARAMETERS)
    over_limit = post_raw(
        gateway, "/v1/classify", image, [("top_k", "1")] * (MAX_QUERY_PARAMETERS + 1)
    )

    assert at_limit.status_code == 200, at_limit.text
    assert over_limit.status_code == 422
    assert "has 7 parameters" in error_of(over_limit)["message"]
    assert "VS_GATEWAY_MAX_QUERY_PARAMETERS" in error_of(over_limit)["message"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"conf": "0." + "5" * MAX_QUERY_VALUE_CHARS}, "query parameter 'conf' is 42 characters"),
        ({"x" * (MAX_QUERY_VALUE_CHARS + 1): "1"}, "a query parameter name is 41 characters"),
    ],
    ids=["value", "name"],
)
def test_overlong_query_parameter_returns_422(
    gateway: Server, params: dict[str, str], message: str
) -> None:
    response = post_raw(gateway, "/v1/detect", solid_png(RED), params)

    assert response.status_code == 422
    assert message in error_of(response)["message"]
    assert "VS_GATEWAY_MAX_QUERY_VALUE_CHARS" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("route", "parameter"),
    [("/v1/classify", "model"), ("/v1/detect", "model"), ("/v1/analyze", "classifier_model")],
)
def test_overlong_model_name_returns_422(
    gateway: Server, backends: dict[str, Server], route: str, parameter: str
) -> None:
    before = backend_calls(backends, route)

    response = post_raw(gateway, route, solid_png(RED), {parameter: "m" * 17})

    assert response.status_code == 422
    assert f"query parameter {parameter!r} is 17 characters long" in error_of(response)["message"]
    assert "VS_GATEWAY_MAX_MODEL_NAME_CHARS" in error_of(response)["message"]
    assert backend_calls(backends, route) == before


def test_model_name_within_limit_is_forwarded(gateway: Server) -> None:
    classified = post_raw(gateway, "/v1/classify", solid_png(RED), {"model": COLOUR_MODEL})
    detected = post_raw(gateway, "/v1/detect", solid_png(RED), {"model": COLOUR_DETECTOR})

    assert classified.status_code == 200, classified.text
    assert detected.status_code == 200, detected.text


@pytest.mark.parametrize(
    "classes",
    [[("classes", "0,1,2,0")], [("classes", "0"), ("classes", "1,2"), ("classes", "0")]],
    ids=["comma-separated", "repeated"],
)
def test_too_many_classes_return_422(gateway: Server, classes: list[tuple[str, str]]) -> None:
    response = post_raw(gateway, "/v1/detect", solid_png(RED), classes)

    assert response.status_code == 422
    assert "lists 4 class ids" in error_of(response)["message"]
    assert "VS_GATEWAY_MAX_CLASSES" in error_of(response)["message"]


def test_classes_at_limit_are_forwarded(gateway: Server) -> None:
    response = post_raw(
        gateway, "/v1/detect", solid_png(RED), [("classes", "0,1"), ("classes", "2")]
    )

    assert response.status_code == 200, response.text
    assert {item["label"] for item in response.json()["detections"]} == {"red"}


def test_limits_checked_after_authentication(gateway: Server) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/classify",
        params=[("top_k", "1")] * (MAX_QUERY_PARAMETERS + 1),
        content=solid_png(RED, (101, 100)),
        headers={"Content-Type": "image/png"},
        timeout=30.0,
    )

    assert response.status_code == 401
