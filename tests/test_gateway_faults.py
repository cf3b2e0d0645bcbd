"""Gateway behaviour when a backend is slow, broken or misconfigured.

The gateway runs as a real uvicorn process in front of `tests.faulty_backend`,
a small app that fails on request, because the classifier cannot be made slow
or broken on purpose. Tests with the real classifier are in test_gateway.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from services.gateway.backend_policy import backend_policy
from services.gateway.settings import GatewaySettings
from tests.servers import GATEWAY_OPEN_ACCESS_ENV, Server, free_port, running_server

GATEWAY_APP = "services.gateway.app:create_app"
FAULTY_APP = "tests.faulty_backend:create_app"
READ_TIMEOUT_SECONDS = 0.5
BACKEND_DELAY_SECONDS = 2.0


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway-faults-logs")


@pytest.fixture(scope="module")
def faulty_backend(log_dir: Path) -> Iterator[Server]:
    env = {"VS_FAULTY_DELAY_SECONDS": str(BACKEND_DELAY_SECONDS)}
    with running_server(FAULTY_APP, env, log_dir) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(faulty_backend: Server, log_dir: Path) -> Iterator[Server]:
    env = {
        "VS_GATEWAY_CLASSIFIER_URL": faulty_backend.url,
        "VS_GATEWAY_DETECTOR_URL": "",
        "VS_GATEWAY_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT_SECONDS),
        **GATEWAY_OPEN_ACCESS_ENV,
    }
    with running_server(GATEWAY_APP, env, log_dir) as server:
        yield server


def classify(gateway: Server, behaviour: str, request_id: str = "") -> httpx.Response:
    """Send a small body to the gateway, asking the faulty backend for `behaviour`."""
    headers = {"Content-Type": "image/png"}
    if request_id:
        headers["X-Request-ID"] = request_id
    return httpx.post(
        f"{gateway.url}/v1/classify",
        params={"model": behaviour},
        content=b"image bytes",
        headers=headers,
        timeout=30.0,
    )


def log_records(server: Server) -> list[dict[str, object]]:
    """Parse the JSON log lines of `server`, skipping any line that is not JSON."""
    records = []
    for line in server.log().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def backend_error_count(gateway: Server, kind: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "visionserve_backend_errors_total" and sample.labels == {
                "service": "gateway",
                "backend": "classifier",
                "kind": kind,
            }:
                return sample.value
    return 0.0


@pytest.mark.slow
def test_forwarding_sends_body_type_and_parameters(gateway: Server) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/classify",
        params={"model": "echo", "top_k": 3},
        content=b"0123456789",
        headers={"Content-Type": "image/png", "X-Request-ID": "faults-echo-1"},
    )

    assert response.status_code == 200
    echo = response.json()
    assert echo["body_bytes"] == 10
    assert echo["content_type"] == "image/png"
    assert echo["query"] == {"model": "echo", "top_k": "3"}
    assert echo["request_id"] == "faults-echo-1"


@pytest.mark.slow
def test_slow_backend_returns_504(gateway: Server) -> None:
    before = backend_error_count(gateway, "timeout")

    started = time.monotonic()
    response = classify(gateway, "slow", request_id="faults-slow-1")
    elapsed = time.monotonic() - started

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert f"within {READ_TIMEOUT_SECONDS} s" in response.json()["error"]["message"]
    assert elapsed >= READ_TIMEOUT_SECONDS
    assert elapsed < BACKEND_DELAY_SECONDS
    assert backend_error_count(gateway, "timeout") == before + 1
    errors = [record for record in log_records(gateway) if record["level"] == "ERROR"]
    assert any(record["request_id"] == "faults-slow-1" for record in errors)


@pytest.mark.slow
def test_backend_500_returns_generic_502(gateway: Server) -> None:
    before = backend_error_count(gateway, "server_error")

    response = classify(gateway, "crash")

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "bad_gateway"
    assert error["message"] == "classifier service failed with status 500; retry later"
    assert "secret internal detail" not in response.text
    assert backend_error_count(gateway, "server_error") == before + 1
    assert "secret internal detail" in gateway.log()


@pytest.mark.slow
def test_backend_503_keeps_retry_after(gateway: Server) -> None:
    response = classify(gateway, "busy")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response.headers["Retry-After"] == "7"


@pytest.mark.slow
def test_backend_4xx_without_error_body(gateway: Server) -> None:
    response = classify(gateway, "rate-limited")

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "backend_rejected"
    assert error["message"] == "classifier service rejected the request with status 429"
    assert response.headers["Retry-After"] == "3"


@pytest.mark.slow
def test_backend_non_json_returns_502(gateway: Server) -> None:
    before = backend_error_count(gateway, "invalid_response")

    response = classify(gateway, "not-json")

    assert response.status_code == 502
    assert response.json()["error"]["message"] == "classifier service returned an invalid response"
    assert backend_error_count(gateway, "invalid_response") == before + 1


@pytest.mark.slow
def test_dropped_connection_returns_502(gateway: Server) -> None:
    before = backend_error_count(gateway, "connection_error")

    response = classify(gateway, "drop")

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["message"] == "classifier service closed the connection unexpectedly; retry later"
    assert backend_error_count(gateway, "connection_error") == before + 1


@pytest.mark.slow
def test_full_pool_returns_503(faulty_backend: Server, tmp_path: Path) -> None:
    env = {
        "VS_GATEWAY_CLASSIFIER_URL": faulty_backend.url,
        "VS_GATEWAY_DETECTOR_URL": "",
        "VS_GATEWAY_MAX_CONNECTIONS": "1",
        "VS_GATEWAY_MAX_KEEPALIVE_CONNECTIONS": "1",
        "VS_GATEWAY_POOL_TIMEOUT_SECONDS": "0.2",
        **GATEWAY_OPEN_ACCESS_ENV,
    }
    with (
        running_server(GATEWAY_APP, env, tmp_path) as gateway,
        ThreadPoolExecutor(max_workers=1) as executor,
    ):
        # The slow request keeps the only backend connection busy for BACKEND_DELAY_SECONDS.
        slow = executor.submit(classify, gateway, "slow")
        time.sleep(0.5)
        blocked = classify(gateway, "echo")

        assert blocked.status_code == 503
        assert "no free connection to the classifier service" in blocked.text
        assert backend_error_count(gateway, "pool_timeout") == 1
        assert slow.result().status_code == 200


@pytest.mark.slow
def test_gateway_exits_on_invalid_settings(tmp_path: Path) -> None:
    env = {"VS_GATEWAY_CLASSIFIER_URL": "127.0.0.1:8001"}
    server = Server(app=GATEWAY_APP, port=free_port(), env=env, log_path=tmp_path / "gw.log")

    try:
        with pytest.raises(RuntimeError, match="exited early"):
            server.start(timeout=60.0)
    finally:
        server.stop()

    assert "classifier_url" in server.log()
    assert "expected an absolute http(s) URL" in server.log()


def test_settings_defaults() -> None:
    settings = GatewaySettings()

    assert settings.classifier_url == "http://127.0.0.1:8001"
    assert settings.max_body_bytes == 20 * 1024 * 1024
    assert backend_policy(settings, "classifier").timeout.read == settings.read_timeout_seconds


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("classifier_url", "127.0.0.1:8001"),
        ("classifier_url", "ftp://127.0.0.1:8001"),
        ("classifier_url", "http://127.0.0.1:99999"),
        ("classifier_url", "http://127.0.0.1:8001/?debug=1"),
        ("connect_timeout_seconds", 0),
        ("read_timeout_seconds", -1),
        ("write_timeout_seconds", 0),
        ("pool_timeout_seconds", 0),
        ("ready_timeout_seconds", 0),
        ("max_connections", 0),
        ("max_keepalive_connections", 101),
        ("max_body_bytes", 0),
        ("retries", -1),
        ("retries", 6),
        ("circuit_failure_ratio", 0),
        ("circuit_open_seconds", 0),
        ("shutdown_drain_seconds", -1),
        ("backend_overrides", {"classifer": {"retries": 1}}),
        ("backend_overrides", {"detector": {"read_timeout": 5}}),
        ("backend_overrides", {"detector": {"read_timeout_seconds": 0}}),
    ],
)
def test_settings_reject_invalid_value(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as raised:
        GatewaySettings.model_validate({field: value})

    assert field in str(raised.value)


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VS_GATEWAY_CLASSIFIER_URL", "http://classifier.internal:8001/")
    monkeypatch.setenv("VS_GATEWAY_READ_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("VS_GATEWAY_MAX_BODY_BYTES", "1024")

    settings = GatewaySettings()

    assert settings.classifier_url == "http://classifier.internal:8001"
    assert settings.read_timeout_seconds == 2.5
    assert settings.max_body_bytes == 1024
