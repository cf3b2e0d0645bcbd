"""Retries, circuit breakers, per-backend timeouts and graceful shutdown of the gateway.

The gateway runs as a real uvicorn process in front of `tests.faulty_backend`,
which fails on request and counts the calls it receives, so each test can
check how many attempts reached the backend.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from services.common.errors import ServiceUnavailable
from services.gateway.backend import Backend
from services.gateway.backend_policy import backend_policy
from services.gateway.metrics import GatewayMetrics
from services.gateway.settings import GatewaySettings
from tests.launched_servers import log_records
from tests.scraping import metric
from tests.servers import GATEWAY_OPEN_ACCESS_ENV, Server, free_port, running_server

pytestmark = pytest.mark.slow

GATEWAY_APP = "services.gateway.app:create_app"
FAULTY_APP = "tests.faulty_backend:create_app"
BACKEND_DELAY_SECONDS = 3.0
RETRIES = 2


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway-resilience-logs")


@pytest.fixture(scope="module")
def faulty_backend(log_dir: Path) -> Iterator[Server]:
    env = {"VS_FAULTY_DELAY_SECONDS": str(BACKEND_DELAY_SECONDS)}
    with running_server(FAULTY_APP, env, log_dir) as server:
        yield server


def gateway_env(backend: Server | str, **settings: str) -> dict[str, str]:
    url = backend.url if isinstance(backend, Server) else backend
    return {
        **GATEWAY_OPEN_ACCESS_ENV,
        "VS_GATEWAY_CLASSIFIER_URL": url,
        "VS_GATEWAY_DETECTOR_URL": "",
        "VS_GATEWAY_RETRIES": str(RETRIES),
        **{f"VS_GATEWAY_{name.upper()}": value for name, value in settings.items()},
    }


@pytest.fixture(scope="module")
def gateway(faulty_backend: Server, log_dir: Path) -> Iterator[Server]:
    with running_server(GATEWAY_APP, gateway_env(faulty_backend), log_dir) as server:
        yield server


def classify(gateway: Server, behaviour: str) -> httpx.Response:
    """Send a small body through the gateway, asking the faulty backend for `behaviour`."""
    return httpx.post(
        f"{gateway.url}/v1/classify",
        params={"model": behaviour},
        content=b"image bytes",
        headers={"Content-Type": "image/png"},
        timeout=30.0,
    )


def backend_calls(backend: Server, behaviour: str) -> int:
    response = httpx.get(f"{backend.url}/calls", params={"model": behaviour})
    return int(response.json()["calls"])


def retries(gateway: Server, reason: str) -> float:
    return metric(gateway, "visionserve_backend_retries_total", backend="classifier", reason=reason)


def circuit_state(gateway: Server) -> float:
    return metric(gateway, "visionserve_circuit_state", backend="classifier")


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


# Retries ------------------------------------------------------------------------


def test_backend_503_retried_until_success(gateway: Server, faulty_backend: Server) -> None:
    before = retries(gateway, "unavailable")

    response = classify(gateway, "flaky-2-first")

    assert response.status_code == 200, response.text
    assert backend_calls(faulty_backend, "flaky-2-first") == 3
    assert retries(gateway, "unavailable") == before + 2


def test_retries_stop_after_limit(gateway: Server, faulty_backend: Server) -> None:
    response = classify(gateway, "flaky-9-limit")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert backend_calls(faulty_backend, "flaky-9-limit") == 1 + RETRIES


def test_long_retry_after_not_retried(gateway: Server, faulty_backend: Server) -> None:
    before = backend_calls(faulty_backend, "busy")

    response = classify(gateway, "busy")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert backend_calls(faulty_backend, "busy") == before + 1


def test_timeouts_and_500_not_retried(gateway: Server, faulty_backend: Server) -> None:
    crash_before = backend_calls(faulty_backend, "crash")

    assert classify(gateway, "crash").status_code == 502
    assert backend_calls(faulty_backend, "crash") == crash_before + 1


def test_non_idempotent_call_not_retried(faulty_backend: Server) -> None:
    settings = GatewaySettings(classifier_url=faulty_backend.url, retries=RETRIES)
    metrics = GatewayMetrics()

    async def reload_like_call() -> None:
        backend = Backend(
            "classifier",
            faulty_backend.url,
            policy=backend_policy(settings, "classifier"),
            limits=settings.backend_limits(),
            metrics=metrics,
        )
        try:
            await backend.post(
                "/v1/classify",
                content=b"x",
                content_type="image/png",
                params={"model": "flaky-1-admin"},
            )
        finally:
            await backend.aclose()

    with pytest.raises(ServiceUnavailable):
        asyncio.run(reload_like_call())
    assert backend_calls(faulty_backend, "flaky-1-admin") == 1


def test_refused_connection_retried(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with running_server(GATEWAY_APP, gateway_env(nobody), tmp_path, "/healthz") as gateway:
        response = classify(gateway, "echo")

        assert response.status_code == 503
        assert "classifier service unavailable" in response.json()["error"]["message"]
        assert retries(gateway, "connect_error") == RETRIES


def test_per_backend_read_timeout(faulty_backend: Server, tmp_path: Path) -> None:
    overrides = json.dumps({"classifier": {"read_timeout_seconds": 0.5}})
    env = gateway_env(faulty_backend, read_timeout_seconds="30", backend_overrides=overrides)
    before = backend_calls(faulty_backend, "slow")

    with running_server(GATEWAY_APP, env, tmp_path) as gateway:
        response = classify(gateway, "slow")

    assert response.status_code == 504
    assert "did not respond within 0.5 s" in response.json()["error"]["message"]
    assert backend_calls(faulty_backend, "slow") == before + 1


# Circuit breaker ----------------------------------------------------------------


def test_circuit_opens_and_closes(faulty_backend: Server, tmp_path: Path) -> None:
    env = gateway_env(
        faulty_backend, circuit_failure_threshold="3", circuit_open_seconds="1", retries="0"
    )
    with running_server(GATEWAY_APP, env, tmp_path) as gateway:
        assert circuit_state(gateway) == 0
        failures = [classify(gateway, "crash").status_code for _ in range(3)]
        assert failures == [502, 502, 502]
        assert circuit_state(gateway) == 2

        rejected = classify(gateway, "echo-while-open")
        assert rejected.status_code == 503
        assert rejected.json()["error"]["code"] == "circuit_open"
        assert rejected.headers["Retry-After"] == "1"
        assert backend_calls(faulty_backend, "echo-while-open") == 0
        assert (
            metric(
                gateway,
                "visionserve_backend_errors_total",
                kind="circuit_open",
                backend="classifier",
            )
            == 1
        )

        # After the cool-down the next call is the probe; its success closes the circuit.
        wait_for(lambda: classify(gateway, "echo-probe").status_code == 200)
        assert circuit_state(gateway) == 0
        assert classify(gateway, "echo-after").status_code == 200

    messages = [
        record["message"]
        for record in log_records(gateway)
        if str(record.get("message", "")).startswith("circuit of the classifier backend")
    ]
    assert len(messages) == 3
    assert "is open (was closed): 3 consecutive failures" in messages[0]
    assert "is half-open (was open)" in messages[1]
    assert "is closed (was half-open): the probe call succeeded" in messages[2]


# Graceful shutdown --------------------------------------------------------------


def test_sigterm_drains_then_exits(faulty_backend: Server, tmp_path: Path) -> None:
    env = gateway_env(faulty_backend, shutdown_drain_seconds="1")
    gateway = Server(app=GATEWAY_APP, port=free_port(), env=env, log_path=tmp_path / "gw.log")
    gateway.start()
    try:
        assert gateway.process is not None
        with ThreadPoolExecutor(max_workers=1) as executor:
            slow = executor.submit(classify, gateway, "slow")
            wait_for(lambda: httpx.get(f"{faulty_backend.url}/in-flight").json()["in_flight"] > 0)

            gateway.process.send_signal(signal.SIGTERM)
            # The gateway must keep accepting connections while it drains:
            # a refused connection here fails the test.
            wait_for(lambda: httpx.get(f"{gateway.url}/readyz").status_code == 503)
            ready = httpx.get(f"{gateway.url}/readyz")

            assert ready.status_code == 503
            assert ready.json()["error"]["code"] == "shutting_down"
            assert slow.result().status_code == 200
        returncode = gateway.process.wait(timeout=30)
    finally:
        gateway.stop()

    # uvicorn re-raises the SIGTERM after its graceful shutdown.
    assert returncode in (0, -signal.SIGTERM)
    messages = [str(record.get("message")) for record in log_records(gateway)]
    sigterm = next(i for i, text in enumerate(messages) if text.startswith("SIGTERM received"))
    waiting = messages.index("Waiting for connections to close. (CTRL+C to force quit)")
    stopped = messages.index("gateway stopped")
    assert sigterm < waiting < stopped
