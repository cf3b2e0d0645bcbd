"""The gateway's response cache in the shared Redis, with the real classifier and detector.

The model services publish their live versions under the same key prefix as
the gateway, one new prefix per module (per test for the reload test). Each
test sends images of its own, so that no test finds another test's entries.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from PIL import Image

from tests.detection_models import COLOUR_DETECTOR, build_colour_detector_repository
from tests.images import BLUE, RED, encode, solid_png
from tests.onnx_models import (
    COLOUR_LABELS,
    COLOUR_MODEL,
    build_colour_repository,
    colour_classifier,
    colour_metadata,
    write_model_version,
)
from tests.redis_servers import SHARED_REDIS_URL, private_redis, shared_redis_prefix
from tests.scraping import metric
from tests.servers import GATEWAY_OPEN_ACCESS_ENV, Server, running_server

pytestmark = pytest.mark.slow

CLASSIFIER_APP = "services.classifier.app:create_app"
DETECTOR_APP = "services.detector.app:create_app"
GATEWAY_APP = "services.gateway.app:create_app"
ADMIN_TOKEN = "cache-test-admin-token-0123456789"
GREY = (114, 114, 114)
# The colour model has three labels, so a request without top_k gets min(5, 3).
DEFAULT_TOP_K = 3


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache-logs")


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    with shared_redis_prefix("cache") as value:
        yield value


def publishing(service: str, repository: Path, prefix: str, **settings: str) -> dict[str, str]:
    """Return the environment of a model service that publishes its live versions."""
    variables = {
        "MODEL_REPOSITORY": str(repository),
        "INTRA_OP_THREADS": "1",
        "REDIS_URL": SHARED_REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        **settings,
    }
    return {f"VS_{service.upper()}_{name}": value for name, value in variables.items()}


def gateway_env(classifier: Server, detector: Server | None, prefix: str) -> dict[str, str]:
    return {
        **GATEWAY_OPEN_ACCESS_ENV,
        "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
        "VS_GATEWAY_DETECTOR_URL": detector.url if detector else "",
        "VS_GATEWAY_REDIS_URL": SHARED_REDIS_URL,
        "VS_GATEWAY_REDIS_KEY_PREFIX": prefix,
    }


@pytest.fixture(scope="module")
def classifier(
    tmp_path_factory: pytest.TempPathFactory, log_dir: Path, prefix: str
) -> Iterator[Server]:
    repository = build_colour_repository(tmp_path_factory.mktemp("classifiers"))
    with running_server(
        CLASSIFIER_APP, publishing("classifier", repository, prefix), log_dir
    ) as server:
        yield server


@pytest.fixture(scope="module")
def detector(
    tmp_path_factory: pytest.TempPathFactory, log_dir: Path, prefix: str
) -> Iterator[Server]:
    repository = build_colour_detector_repository(tmp_path_factory.mktemp("detectors"))
    with running_server(
        DETECTOR_APP, publishing("detector", repository, prefix), log_dir
    ) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(classifier: Server, detector: Server, log_dir: Path, prefix: str) -> Iterator[Server]:
    with running_server(GATEWAY_APP, gateway_env(classifier, detector, prefix), log_dir) as server:
        yield server


def shade_of_red(index: int) -> bytes:
    """A red PNG of its own for each index, still classified as red."""
    return solid_png((255 - index, 0, 0))


def two_squares(offset: int) -> bytes:
    """A grey PNG with a red and a blue square, moved by `offset` pixels."""
    image = Image.new("RGB", (200, 120), GREY)
    image.paste(RED, (20 + offset, 20, 60 + offset, 60))
    image.paste(BLUE, (120, 50, 180, 110))
    return encode(image, "PNG")


def post(server: Server, path: str, image: bytes, params: Any = None) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}",
        params=params,
        content=image,
        headers={"Content-Type": "image/png"},
        timeout=60.0,
    )


def post_form(server: Server, path: str, image: bytes, params: Any = None) -> httpx.Response:
    files = {"file": ("image.png", image, "image/png")}
    return httpx.post(f"{server.url}{path}", params=params, files=files, timeout=60.0)


def cache_count(gateway: Server, route: str, result: str) -> float:
    return metric(gateway, "visionserve_cache_requests_total", route=route, result=result)


def backend_calls(server: Server, route: str) -> float:
    return metric(server, "visionserve_requests_total", route=route, status="200")


def test_services_publish_live_versions(classifier: Server, detector: Server, prefix: str) -> None:
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    try:
        classifier_record = json.loads(client.get(f"{prefix}:live:classifier:{COLOUR_MODEL}"))
        detector_record = json.loads(client.get(f"{prefix}:live:detector:{COLOUR_DETECTOR}"))
        default_classifier = client.get(f"{prefix}:default:classifier")
        ttl = client.pttl(f"{prefix}:live:classifier:{COLOUR_MODEL}")
    finally:
        client.close()

    assert classifier_record == {"version": 1, "defaults": {"top_k": str(DEFAULT_TOP_K)}}
    assert detector_record == {
        "version": 1,
        "defaults": {
            "conf": "0.25", "iou": "0.45", "max_det": "300", "classes": "all",
            "agnostic_nms": "false",
        },
    }  # fmt: skip
    assert default_classifier == COLOUR_MODEL.encode()
    assert 0 < ttl <= 10_000


def test_classify_miss_then_hit_with_identical_body(gateway: Server, classifier: Server) -> None:
    image = shade_of_red(1)
    calls_before = backend_calls(classifier, "/v1/classify")
    hits_before = cache_count(gateway, "classify", "hit")
    misses_before = cache_count(gateway, "classify", "miss")

    first = post_form(gateway, "/v1/classify", image)
    second = post_form(gateway, "/v1/classify", image)

    assert first.status_code == 200, first.text
    assert first.headers["X-Cache"] == "miss"
    assert second.status_code == 200
    assert second.headers["X-Cache"] == "hit"
    assert second.headers["content-type"] == "application/json"
    assert second.content == first.content
    assert first.json()["predictions"][0]["label"] == "red"
    assert backend_calls(classifier, "/v1/classify") == calls_before + 1
    assert cache_count(gateway, "classify", "hit") == hits_before + 1
    assert cache_count(gateway, "classify", "miss") == misses_before + 1


def test_raw_body_hits_entry_of_multipart_upload(gateway: Server) -> None:
    image = shade_of_red(2)

    first = post_form(gateway, "/v1/classify", image)
    second = post(gateway, "/v1/classify", image)

    assert first.headers["X-Cache"] == "miss"
    assert second.headers["X-Cache"] == "hit"


def test_classify_parameter_change_misses(gateway: Server) -> None:
    image = shade_of_red(3)

    outcomes = [
        post(gateway, "/v1/classify", image, params).headers["X-Cache"]
        for params in (
            {"top_k": 1},
            {"top_k": 2},
            {"top_k": 1},
            {"model": COLOUR_MODEL, "top_k": 2},
        )
    ]

    assert outcomes == ["miss", "miss", "hit", "hit"]


def test_omitted_parameter_hits_entry_of_its_default(gateway: Server) -> None:
    image = shade_of_red(4)

    without = post(gateway, "/v1/classify", image)
    explicit = post(gateway, "/v1/classify", image, {"top_k": DEFAULT_TOP_K})

    assert without.headers["X-Cache"] == "miss"
    assert explicit.headers["X-Cache"] == "hit"
    assert len(explicit.json()["predictions"]) == DEFAULT_TOP_K


def test_other_image_misses(gateway: Server) -> None:
    assert post(gateway, "/v1/classify", shade_of_red(5)).headers["X-Cache"] == "miss"
    assert post(gateway, "/v1/classify", shade_of_red(6)).headers["X-Cache"] == "miss"


def test_detect_parameters_in_canonical_form(gateway: Server, detector: Server) -> None:
    image = two_squares(offset=1)
    calls_before = backend_calls(detector, "/v1/detect")
    cases = [
        ({}, "miss"),
        ({"conf": "0.25"}, "hit"),  # the model's default
        ({"conf": "0.250", "agnostic_nms": "false"}, "hit"),
        ({"conf": "0.5"}, "miss"),
        ({"classes": "2,0"}, "miss"),
        ([("classes", "0"), ("classes", "2")], "hit"),
        ({"classes": "0, 2", "max_det": "300"}, "hit"),
        ({"agnostic_nms": "yes"}, "miss"),
        ({"agnostic_nms": "true"}, "hit"),
    ]

    outcomes = [post(gateway, "/v1/detect", image, params) for params, _ in cases]

    assert [response.status_code for response in outcomes] == [200] * len(cases)
    assert [response.headers["X-Cache"] for response in outcomes] == [case[1] for case in cases]
    assert backend_calls(detector, "/v1/detect") == calls_before + 4


def test_analyze_miss_then_hit(gateway: Server) -> None:
    image = two_squares(offset=2)

    first = post(gateway, "/v1/analyze", image, {"margin": 0})
    second = post(gateway, "/v1/analyze", image, {"margin": "0.0"})
    wider = post(gateway, "/v1/analyze", image, {"margin": 0.5})

    assert first.status_code == 200, first.text
    assert first.headers["X-Cache"] == "miss"
    assert second.headers["X-Cache"] == "hit"
    assert second.content == first.content
    assert first.json()["classifier_model"] == {"name": COLOUR_MODEL, "version": 1}
    assert wider.headers["X-Cache"] == "miss"


def test_render_is_not_cached(gateway: Server) -> None:
    response = post(gateway, "/v1/detect/render", two_squares(offset=3))

    assert response.status_code == 200
    assert "X-Cache" not in response.headers
    Image.open(io.BytesIO(response.content)).verify()


def test_errors_are_not_cached(gateway: Server, detector: Server) -> None:
    image = two_squares(offset=4)
    rejected_before = metric(
        detector, "visionserve_requests_total", route="/v1/detect", status="422"
    )

    statuses = [post(gateway, "/v1/detect", image, {"conf": 3}).status_code for _ in range(2)]

    assert statuses == [422, 422]
    rejected = metric(detector, "visionserve_requests_total", route="/v1/detect", status="422")
    assert rejected == rejected_before + 2


def test_unusual_parameter_spelling_bypasses(gateway: Server) -> None:
    response = post(
        gateway, "/v1/detect", two_squares(offset=5), [("conf", "0.3"), ("conf", "0.4")]
    )

    assert response.status_code == 200
    assert response.headers["X-Cache"] == "bypass"


def test_no_published_version_bypasses(classifier: Server, detector: Server, log_dir: Path) -> None:
    # The model services publish under the module's prefix, not under this one.
    with (
        shared_redis_prefix("unpublished") as other_prefix,
        running_server(
            GATEWAY_APP, gateway_env(classifier, detector, other_prefix), log_dir
        ) as server,
    ):
        outcomes = [
            post(server, "/v1/classify", shade_of_red(7)).headers["X-Cache"] for _ in range(2)
        ]

    assert outcomes == ["bypass", "bypass"]


def test_zero_ttl_turns_cache_off(
    classifier: Server, detector: Server, log_dir: Path, prefix: str
) -> None:
    env = {**gateway_env(classifier, detector, prefix), "VS_GATEWAY_CACHE_TTL_SECONDS": "0"}
    with running_server(GATEWAY_APP, env, log_dir) as server:
        outcomes = [
            post(server, "/v1/classify", shade_of_red(8)).headers["X-Cache"] for _ in range(2)
        ]

    assert outcomes == ["bypass", "bypass"]


def test_reload_never_serves_old_version_from_cache(tmp_path: Path) -> None:
    repository = build_colour_repository(tmp_path / "models")
    image = solid_png(RED)
    with shared_redis_prefix("reload") as prefix:
        env = publishing("classifier", repository, prefix, ADMIN_TOKEN=ADMIN_TOKEN)
        with (
            running_server(CLASSIFIER_APP, env, tmp_path) as classifier,
            running_server(GATEWAY_APP, gateway_env(classifier, None, prefix), tmp_path) as gateway,
        ):
            before = [post(gateway, "/v1/classify", image) for _ in range(2)]
            metadata = colour_metadata(
                version=2, labels=tuple(f"{label}-v2" for label in COLOUR_LABELS)
            )
            write_model_version(repository, colour_classifier(), metadata)
            reload = httpx.post(
                f"{classifier.url}/v1/models/{COLOUR_MODEL}/reload",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=60.0,
            )
            after = [post(gateway, "/v1/classify", image) for _ in range(2)]

    assert [response.headers["X-Cache"] for response in before] == ["miss", "hit"]
    assert before[1].json()["model"] == {"name": COLOUR_MODEL, "version": 1}
    assert reload.status_code == 200, reload.text
    assert reload.json()["version"] == 2
    assert after[0].headers["X-Cache"] == "miss"
    assert after[0].json()["model"] == {"name": COLOUR_MODEL, "version": 2}
    assert after[0].json()["predictions"][0]["label"] == "red-v2"
    assert after[1].headers["X-Cache"] == "hit"
    assert after[1].content == after[0].content


def test_reload_needs_redis_publish(tmp_path: Path) -> None:
    repository = build_colour_repository(tmp_path / "models")
    with private_redis(tmp_path) as redis_server:
        env = {
            **publishing("classifier", repository, "reload-outage", ADMIN_TOKEN=ADMIN_TOKEN),
            "VS_CLASSIFIER_REDIS_URL": redis_server.url,
        }
        with running_server(CLASSIFIER_APP, env, tmp_path) as classifier:
            write_model_version(repository, colour_classifier(), colour_metadata(version=2))
            redis_server.stop()
            rejected = reload_classifier(classifier)
            still_serving = post(classifier, "/v1/classify", solid_png(RED))

            redis_server.start()
            accepted = reload_classifier(classifier)

    assert rejected.status_code == 503
    assert "cannot be published to Redis" in rejected.json()["error"]["message"]
    assert rejected.headers["Retry-After"] == "5"
    assert still_serving.json()["model"]["version"] == 1
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["version"] == 2


def reload_classifier(classifier: Server) -> httpx.Response:
    return httpx.post(
        f"{classifier.url}/v1/models/{COLOUR_MODEL}/reload",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=60.0,
    )
