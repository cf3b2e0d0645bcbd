"""The gateway while its Redis is down and after it comes back, on a private redis-server.

The shared Redis is never stopped: each test starts its own server on a
free port and stops and restarts that one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.images import RED, solid_png
from tests.launched_servers import log_records
from tests.onnx_models import build_colour_repository
from tests.redis_servers import PrivateRedis, private_redis
from tests.scraping import metric
from tests.servers import GATEWAY_OPEN_ACCESS_ENV, Server, running_server

pytestmark = pytest.mark.slow

CLASSIFIER_APP = "services.classifier.app:create_app"
GATEWAY_APP = "services.gateway.app:create_app"
OUTAGE_MESSAGE = "Redis unavailable"
RATE_LIMITS = json.dumps({"default": {"requests": 1000, "per_seconds": 3600}})
# Bounds the waits for recovery, which takes a health check (0.2 s here) and
# a heartbeat of the classifier (1 s here) on an idle machine.
RECOVERY_DEADLINE_SECONDS = 60.0


@contextmanager
def stack(redis_server: PrivateRedis, log_dir: Path, **gateway_settings: str) -> Iterator[Server]:
    """Run a classifier that publishes to `redis_server` and a gateway in front of it."""
    repository = build_colour_repository(log_dir / "models")
    classifier_env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(repository),
        "VS_CLASSIFIER_INTRA_OP_THREADS": "1",
        "VS_CLASSIFIER_REDIS_URL": redis_server.url,
        "VS_CLASSIFIER_LIVE_VERSION_TTL_SECONDS": "3",
    }
    with running_server(CLASSIFIER_APP, classifier_env, log_dir) as classifier:
        gateway_env = {
            **GATEWAY_OPEN_ACCESS_ENV,
            "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
            "VS_GATEWAY_DETECTOR_URL": "",
            "VS_GATEWAY_REDIS_URL": redis_server.url,
            "VS_GATEWAY_REDIS_HEALTH_CHECK_SECONDS": "0.2",
            "VS_GATEWAY_RATE_LIMITS": RATE_LIMITS,
            **{f"VS_GATEWAY_{name.upper()}": value for name, value in gateway_settings.items()},
        }
        with running_server(GATEWAY_APP, gateway_env, log_dir) as gateway:
            yield gateway


def classify(gateway: Server) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/classify",
        content=solid_png(RED),
        headers={"Content-Type": "image/png"},
        timeout=30.0,
    )


def redis_up(gateway: Server) -> float:
    return metric(gateway, "visionserve_redis_up", service="gateway")


def records_with_prefix(server: Server, prefix: str) -> list[str]:
    messages = [str(record.get("message", "")) for record in log_records(server)]
    return [message for message in messages if message.startswith(prefix)]


def wait_for(condition: Callable[[], bool], description: str) -> None:
    deadline = time.monotonic() + RECOVERY_DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{description} did not happen within {RECOVERY_DEADLINE_SECONDS} s"
            )
        time.sleep(0.2)


def test_gateway_serves_through_redis_outage(tmp_path: Path) -> None:
    with private_redis(tmp_path) as redis_server, stack(redis_server, tmp_path) as gateway:
        pid = gateway.process.pid if gateway.process else None
        before = [classify(gateway) for _ in range(2)]
        up_before = redis_up(gateway)

        redis_server.stop()
        during = [classify(gateway) for _ in range(5)]
        up_during = redis_up(gateway)
        wait_for(lambda: redis_up(gateway) == 0, "redis_up dropping to 0")
        outage_lines = records_with_prefix(gateway, OUTAGE_MESSAGE)

        redis_server.start()
        wait_for(lambda: redis_up(gateway) == 1, "redis_up returning to 1")
        wait_for(
            lambda: classify(gateway).headers["X-Cache"] == "hit", "a cache hit after recovery"
        )
        after = classify(gateway)
        recovery_lines = records_with_prefix(gateway, "Redis available again")
        still_running = gateway.process is not None and gateway.process.poll() is None

    assert [response.headers["X-Cache"] for response in before] == ["miss", "hit"]
    assert up_before == 1
    assert all("RateLimit-Remaining" in response.headers for response in before)

    assert [response.status_code for response in during] == [200] * 5
    assert [response.headers["X-Cache"] for response in during] == ["bypass"] * 5
    assert all(response.json()["predictions"][0]["label"] == "red" for response in during)
    # Failure mode "open": no rate limit is applied, so no rate-limit header is sent.
    assert all("RateLimit-Remaining" not in response.headers for response in during)
    assert up_during == 0
    assert len(outage_lines) == 1, outage_lines

    assert after.status_code == 200
    assert after.headers["X-Cache"] == "hit"
    assert "RateLimit-Remaining" in after.headers
    assert len(recovery_lines) == 1
    assert still_running
    assert gateway.process is not None and gateway.process.pid == pid


def test_closed_mode_returns_503_while_redis_is_down(tmp_path: Path) -> None:
    with (
        private_redis(tmp_path) as redis_server,
        stack(redis_server, tmp_path, redis_failure_mode="closed") as gateway,
    ):
        before = classify(gateway)
        redis_server.stop()
        during = [classify(gateway) for _ in range(3)]
        other_routes = [httpx.get(f"{gateway.url}{path}") for path in ("/healthz", "/v1/models")]
        outage_lines = records_with_prefix(gateway, OUTAGE_MESSAGE)

        redis_server.start()
        wait_for(lambda: classify(gateway).status_code == 200, "classify succeeding again")

    assert before.status_code == 200
    assert [response.status_code for response in during] == [503] * 3
    body = during[0].json()
    assert body["error"]["code"] == "service_unavailable"
    assert "rate limiting is unavailable" in body["error"]["message"]
    assert int(during[0].headers["Retry-After"]) >= 1
    assert [response.status_code for response in other_routes] == [200, 200]
    assert len(outage_lines) == 1
    assert "rate-limited routes return 503" in outage_lines[0]


def test_gateway_starts_while_redis_is_down(tmp_path: Path) -> None:
    redis_server = PrivateRedis(tmp_path)  # its port is chosen, but nothing listens on it yet
    try:
        with stack(redis_server, tmp_path) as gateway:
            during = classify(gateway)
            up_during = redis_up(gateway)
            redis_server.start()
            wait_for(lambda: redis_up(gateway) == 1, "redis_up rising to 1")
            after = classify(gateway)
            outage_lines = records_with_prefix(gateway, OUTAGE_MESSAGE)
    finally:
        redis_server.stop()

    assert during.status_code == 200
    assert during.headers["X-Cache"] == "bypass"
    assert up_during == 0
    assert after.status_code == 200
    assert "RateLimit-Remaining" in after.headers
    assert len(outage_lines) == 1
