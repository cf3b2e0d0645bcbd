"""`python -m services.healthcheck`, the images' health check command, against real servers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ROOT, Server, free_port, running_server

GATEWAY_APP = "services.gateway.app:create_app"
# A gateway whose only backend is down: alive on /healthz, 503 on /readyz.
GATEWAY_ENV = {
    "VS_GATEWAY_CLASSIFIER_URL": f"http://127.0.0.1:{free_port()}",
    "VS_GATEWAY_DETECTOR_URL": "",
    "VS_GATEWAY_REDIS_URL": "",
}


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.healthcheck", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_dir: Path = tmp_path_factory.mktemp("healthcheck")
    with running_server(GATEWAY_APP, GATEWAY_ENV, log_dir, ready_path="/healthz") as server:
        yield server


def test_healthy_url_exits_zero(gateway: Server) -> None:
    completed = run_check(f"{gateway.url}/healthz")
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""


def test_unavailable_url_exits_one(gateway: Server) -> None:
    completed = run_check(f"{gateway.url}/readyz")
    assert completed.returncode == 1
    assert "returned 503" in completed.stderr


def test_closed_port_exits_one() -> None:
    completed = run_check(f"http://127.0.0.1:{free_port()}/healthz", "--timeout", "2")
    assert completed.returncode == 1
    assert "failed" in completed.stderr


def test_invalid_url_exits_two() -> None:
    completed = run_check("127.0.0.1:8000/healthz")
    assert completed.returncode == 2
    assert "invalid URL" in completed.stderr
