"""Cache queries of the gateway routes: canonical parameters, image digests and settings."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from services.common.settings import InvalidSettingsError, load_settings
from services.gateway.cache_queries import (
    analyze_query,
    classify_query,
    detect_query,
    image_sha256,
)
from services.gateway.response_cache import CacheQuery
from services.gateway.settings import GatewaySettings
from tests.images import RED, solid_png

IMAGE = solid_png(RED)


def detect(params: list[tuple[str, str]]) -> CacheQuery | None:
    return asyncio.run(detect_query(IMAGE, "image/png", httpx.QueryParams(params)))


def detection_parameters(params: list[tuple[str, str]]) -> dict[str, str | None]:
    query = detect(params)
    assert query is not None
    return dict(query.models[0].parameters)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ([("conf", "0.25")], [("conf", "0.250")]),
        ([("conf", "0.1")], [("conf", "1e-1")]),
        ([("iou", "1")], [("iou", "1.0")]),
        ([("classes", "2,0")], [("classes", "0"), ("classes", "2")]),
        ([("classes", "0, 2, 2")], [("classes", "2,0")]),
        ([("agnostic_nms", "Yes")], [("agnostic_nms", "true")]),
        ([("agnostic_nms", "0")], [("agnostic_nms", "off")]),
        ([("max_det", "007")], [("max_det", "7")]),
    ],
)
def test_spellings_of_one_value_share_a_key(
    first: list[tuple[str, str]], second: list[tuple[str, str]]
) -> None:
    assert detection_parameters(first) == detection_parameters(second)


def test_omitted_parameters_wait_for_the_published_defaults() -> None:
    parameters = detection_parameters([("conf", "0.5")])

    assert parameters == {
        "conf": "0.5", "iou": None, "classes": None, "agnostic_nms": None, "max_det": None
    }  # fmt: skip


@pytest.mark.parametrize(
    "params",
    [
        [("conf", "0.3"), ("conf", "0.4")],
        [("conf", "nan")],
        [("conf", "high")],
        [("max_det", "5.0")],
        [("classes", "1,,2")],
        [("classes", "red")],
        [("agnostic_nms", "maybe")],
        [("model", "Not A Model")],
    ],
)
def test_ambiguous_parameter_bypasses(params: list[tuple[str, str]]) -> None:
    assert detect(params) is None


def test_multipart_upload_is_keyed_by_its_file() -> None:
    request = httpx.Request("POST", "http://gateway", files={"file": ("a.png", IMAGE, "image/png")})
    body = request.read()

    query = asyncio.run(classify_query(body, request.headers["Content-Type"], None, None))

    assert query is not None
    assert query.image_sha256 == image_sha256(IMAGE)
    assert query.models[0].model is None
    assert query.models[0].parameters == {"top_k": None}


def test_form_without_file_field_bypasses() -> None:
    files = {"image": ("a.png", IMAGE, "image/png")}
    request = httpx.Request("POST", "http://gateway", files=files)
    content_type = request.headers["Content-Type"]

    assert content_type.startswith("multipart/form-data")
    assert asyncio.run(classify_query(request.read(), content_type, None, 2)) is None


def test_analyze_key_holds_both_models_and_the_margin() -> None:
    params = httpx.QueryParams([("model", "digits-yolov8n"), ("max_det", "16")])

    query = analyze_query(IMAGE, params, "digits-cnn", 0.1)

    assert query is not None
    assert query.route_parameters == {"margin": "0.1"}
    detector, classifier = query.models
    assert (detector.service, detector.model, detector.body_field) == (
        "detector", "digits-yolov8n", "detector_model"
    )  # fmt: skip
    assert detector.parameters["max_det"] == "16"
    assert (classifier.service, classifier.model, classifier.body_field) == (
        "classifier", "digits-cnn", "classifier_model"
    )  # fmt: skip


def test_rate_limits_must_be_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VS_GATEWAY_RATE_LIMITS", "{not json")

    with pytest.raises(InvalidSettingsError, match="VS_GATEWAY_RATE_LIMITS"):
        load_settings(GatewaySettings)


def test_rate_limits_need_a_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VS_GATEWAY_RATE_LIMITS", '{"default": {"requests": 5, "per_seconds": 1}}')
    monkeypatch.setenv("VS_GATEWAY_REDIS_URL", "")

    with pytest.raises(InvalidSettingsError, match="needs redis_url"):
        load_settings(GatewaySettings)


def test_redis_url_needs_a_redis_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VS_GATEWAY_REDIS_URL", "http://127.0.0.1:6379")

    with pytest.raises(InvalidSettingsError, match="VS_GATEWAY_REDIS_URL"):
        load_settings(GatewaySettings)
