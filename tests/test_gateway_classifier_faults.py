"""The gateway under load while the real classifier dies, comes back, or reloads its model.

Both services are real uvicorn processes; the classifier serves the colour
model of `tests.onnx_models`. A load thread keeps sending requests through the
gateway while each test changes the classifier under it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.images import RED, solid_png
from tests.onnx_models import (
    COLOUR_MODEL,
    build_colour_repository,
    colour_classifier,
    colour_metadata,
    write_model_version,
)
from tests.scraping import metric
from tests.servers import GATEWAY_OPEN_ACCESS_ENV, Server, free_port, running_server

pytestmark = pytest.mark.slow

CLASSIFIER_APP = "services.classifier.app:create_app"
GATEWAY_APP = "services.gateway.app:create_app"
ADMIN_TOKEN = "fault-tests-admin-token-0123456789"
V2_LABELS = ("red-v2", "green-v2", "blue-v2")


@dataclass
class LoadResult:
    """Status, error code and top label of every request, in the order they finished."""

    answers: list[tuple[int, str | None, str | None]] = field(default_factory=list)

    def statuses(self) -> set[int]:
        return {status for status, _, _ in self.answers}


def send(gateway: Server) -> tuple[int, str | None, str | None]:
    response = httpx.post(
        f"{gateway.url}/v1/classify",
        params={"top_k": 1},
        content=solid_png(RED),
        headers={"Content-Type": "image/png"},
        timeout=30.0,
    )
    body = response.json()
    if response.status_code != 200:
        return response.status_code, body["error"]["code"], None
    return 200, None, body["predictions"][0]["label"]


@contextmanager
def load(gateway: Server, threads: int = 2) -> Iterator[LoadResult]:
    """Send requests from `threads` threads until the block exits."""
    result = LoadResult()
    stop = threading.Event()
    lock = threading.Lock()

    def run() -> None:
        while not stop.is_set():
            answer = send(gateway)
            with lock:
                result.answers.append(answer)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield result
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def answers_since(result: LoadResult, start: int) -> list[tuple[int, str | None, str | None]]:
    return result.answers[start:]


def test_classifier_killed_and_restarted(tmp_path: Path) -> None:
    repository = build_colour_repository(tmp_path / "models")
    classifier = Server(
        app=CLASSIFIER_APP,
        port=free_port(),
        env={"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository)},
        log_path=tmp_path / "classifier.log",
    )
    classifier.start()
    gateway_env = {
        **GATEWAY_OPEN_ACCESS_ENV,
        "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
        "VS_GATEWAY_DETECTOR_URL": "",
        "VS_GATEWAY_CIRCUIT_OPEN_SECONDS": "1",
    }
    try:
        with (
            running_server(GATEWAY_APP, gateway_env, tmp_path) as gateway,
            load(gateway) as result,
        ):
            wait_for(lambda: len(result.answers) >= 10)
            assert result.statuses() == {200}

            assert classifier.process is not None
            classifier.process.send_signal(signal.SIGKILL)
            classifier.process.wait(timeout=10)
            killed_at = len(result.answers)
            wait_for(lambda: any(code == "circuit_open" for _, code, _ in result.answers))
            wait_for(lambda: len(result.answers) >= killed_at + 12)
            # Requests in flight at the kill may end in 502 (connection dropped);
            # every later request gets 503 from the gateway.
            after_kill = answers_since(result, killed_at + 2)
            assert after_kill
            assert {status for status, _, _ in after_kill} == {503}
            assert metric(gateway, "visionserve_circuit_state", backend="classifier") == 2

            classifier.start()
            wait_for(lambda: result.answers[-1][0] == 200)
            recovered_at = len(result.answers)
            wait_for(lambda: len(result.answers) >= recovered_at + 20)
            assert metric(gateway, "visionserve_circuit_state", backend="classifier") == 0

        tail = result.answers[-10:]
        assert {status for status, _, _ in tail} == {200}
        assert {label for _, _, label in tail} == {"red"}
    finally:
        classifier.stop()


def test_reload_under_load_fails_no_request(tmp_path: Path) -> None:
    repository = build_colour_repository(tmp_path / "models")
    classifier_env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(repository),
        "VS_CLASSIFIER_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    with running_server(CLASSIFIER_APP, classifier_env, tmp_path) as classifier:
        gateway_env = {
            **GATEWAY_OPEN_ACCESS_ENV,
            "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
            "VS_GATEWAY_DETECTOR_URL": "",
        }
        with running_server(GATEWAY_APP, gateway_env, tmp_path) as gateway, load(gateway) as result:
            wait_for(lambda: len(result.answers) >= 20)
            metadata = colour_metadata(version=2, labels=V2_LABELS)
            write_model_version(repository, colour_classifier(), metadata)

            reloaded = httpx.post(
                f"{classifier.url}/v1/models/{COLOUR_MODEL}/reload",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=60.0,
            )
            reloaded_at = len(result.answers)
            wait_for(lambda: len(result.answers) >= reloaded_at + 20)
            retried = metric(gateway, "visionserve_backend_retries_total")

    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["version"] == 2
    assert result.statuses() == {200}
    labels = [label for _, _, label in result.answers]
    assert labels[0] == "red"
    assert labels[-1] == "red-v2"
    # Once version 2 returns a response, no later response comes from version 1.
    first_v2 = labels.index("red-v2")
    assert set(labels[first_v2:]) == {"red-v2"}
    assert retried == 0
