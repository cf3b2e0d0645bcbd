"""A model service reaches no address but loopback, watched with strace.

onnxruntime's Linux build contacts a telemetry collector a few seconds after
the first inference unless ORT_DISABLE_TELEMETRY is set when it is imported.
The service process must set it itself, so the test removes it from the
environment that the service inherits.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.images import RED, solid_png
from tests.onnx_models import build_colour_repository
from tests.servers import ROOT, free_port

pytestmark = pytest.mark.slow

# Long enough for onnxruntime 1.32's uploader, which starts about 9 s after import.
OBSERVED_SECONDS = 15
CONNECT = re.compile(r"connect\(\d+, \{sa_family=AF_INET6?, sin6?_port=htons\((\d+)\), (.*?)\}")


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (Debian package strace)")
def test_classifier_contacts_only_loopback(tmp_path: Path) -> None:
    repository = build_colour_repository(tmp_path / "models")
    port = free_port()
    trace = tmp_path / "strace.txt"
    env = {key: value for key, value in os.environ.items() if key != "ORT_DISABLE_TELEMETRY"}
    env["VS_CLASSIFIER_MODEL_REPOSITORY"] = str(repository)
    command = [
        "strace", "-f", "-e", "trace=connect", "-o", str(trace),
        sys.executable, "-m", "uvicorn", "services.classifier.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    # A session of its own, so that one signal stops strace and the service together.
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _ready(url):
            assert process.poll() is None, "the classifier exited"
            assert time.monotonic() < deadline, "the classifier never became ready"
            time.sleep(0.2)
        stop = time.monotonic() + OBSERVED_SECONDS
        while time.monotonic() < stop:
            response = httpx.post(
                f"{url}/v1/classify", content=solid_png(RED), headers={"Content-Type": "image/png"}
            )
            assert response.status_code == 200
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)

    remote = [
        line
        for line in trace.read_text().splitlines()
        if (match := CONNECT.search(line)) and not _is_loopback(match.group(2))
    ]
    assert remote == []


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


def _is_loopback(address: str) -> bool:
    return 'inet_addr("127.' in address or 'inet_pton(AF_INET6, "::1"' in address
