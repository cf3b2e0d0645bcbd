"""Reloading model versions without a restart, on a real classifier process."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.images import RED, solid_png
from tests.onnx_models import (
    COLOUR_LABELS,
    COLOUR_MODEL,
    colour_classifier,
    colour_metadata,
    write_model_version,
)
from tests.scraping import metric
from tests.servers import Server, running_server

pytestmark = pytest.mark.slow

APP = "services.classifier.app:create_app"
TOKEN = "reload-token-for-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
# Version 2 returns these labels, so a response shows which version computed it.
V2_LABELS = ("red-v2", "green-v2", "blue-v2")


def write_version(repository: Path, version: int, labels: tuple[str, ...] | None = None) -> Path:
    metadata = colour_metadata(version=version, labels=labels or COLOUR_LABELS)
    return write_model_version(repository, colour_classifier(), metadata)


@contextmanager
def start(repository: Path, log_dir: Path, **settings: str) -> Iterator[Server]:
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(repository),
        "VS_CLASSIFIER_INTRA_OP_THREADS": "1",
        "VS_CLASSIFIER_ADMIN_TOKEN": TOKEN,
        **{f"VS_CLASSIFIER_{key.upper()}": value for key, value in settings.items()},
    }
    with running_server(APP, env, log_dir) as server:
        yield server


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_version(root, 1)
    return root


@pytest.fixture
def server(repository: Path, tmp_path: Path) -> Iterator[Server]:
    with start(repository, tmp_path) as running:
        yield running


def classify(server: Server) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/classify",
        params={"top_k": 1},
        content=solid_png(RED),
        headers={"Content-Type": "image/png"},
        timeout=30.0,
    )


def reload(server: Server, headers: dict[str, str] = ADMIN) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{COLOUR_MODEL}/reload", headers=headers, timeout=60)


def test_reload_swaps_in_the_new_version(server: Server, repository: Path) -> None:
    assert classify(server).json()["predictions"][0]["label"] == "red"
    write_version(repository, 2, V2_LABELS)

    response = reload(server)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "model": COLOUR_MODEL, "previous_version": 1, "version": 2, "reloaded": True
    }  # fmt: skip
    body = classify(server).json()
    assert body["model"] == {"name": COLOUR_MODEL, "version": 2}
    assert body["predictions"][0]["label"] == "red-v2"
    listed = httpx.get(f"{server.url}/v1/models").json()["models"][0]
    assert listed["versions"] == [1, 2]
    assert listed["live_version"] == 2
    assert metric(server, "visionserve_model_info", model=COLOUR_MODEL, version="1") == 0
    assert metric(server, "visionserve_model_info", model=COLOUR_MODEL, version="2") == 1
    assert metric(server, "visionserve_model_reloads_total", result="success") == 1


def test_reload_of_the_live_version_changes_nothing(server: Server) -> None:
    response = reload(server)

    assert response.status_code == 200
    assert response.json()["reloaded"] is False
    assert metric(server, "visionserve_model_reloads_total", result="success") == 0


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Authorization: Bearer"),
        ({"Authorization": "Bearer wrong-token-0123456789"}, "wrong admin token"),
        ({"Authorization": f"Basic {TOKEN}"}, "Authorization: Bearer"),
    ],
)
def test_reload_needs_the_admin_token(
    server: Server, headers: dict[str, str], message: str
) -> None:
    response = reload(server, headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert message in response.json()["error"]["message"]
    assert TOKEN not in response.text


def test_reload_is_off_without_an_admin_token(repository: Path, tmp_path: Path) -> None:
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository)}
    with running_server(APP, env, tmp_path) as server:
        response = reload(server)

    assert response.status_code == 403
    assert "VS_CLASSIFIER_ADMIN_TOKEN" in response.json()["error"]["message"]


def test_short_admin_token_stops_start_up(repository: Path, tmp_path: Path) -> None:
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository), "VS_CLASSIFIER_ADMIN_TOKEN": "short"}
    with (
        pytest.raises(RuntimeError, match="VS_CLASSIFIER_ADMIN_TOKEN"),
        running_server(APP, env, tmp_path),
    ):
        pass


def test_reload_of_an_unknown_model_is_404(server: Server) -> None:
    response = httpx.post(f"{server.url}/v1/models/no-such-model/reload", headers=ADMIN)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_reload_rejects_corrupt_version(server: Server, repository: Path) -> None:
    version_dir = write_version(repository, 2)
    (version_dir / "model.onnx").write_bytes(b"not an onnx graph")

    response = reload(server)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "model_rejected"
    assert "live version keeps serving" in response.json()["error"]["message"]
    assert classify(server).json()["model"]["version"] == 1
    assert metric(server, "visionserve_model_reloads_total", result="failure") == 1
    assert metric(server, "visionserve_model_info", model=COLOUR_MODEL, version="1") == 1
    assert "rejected a new version of colours" in server.log()


def test_reload_rejects_mismatched_labels(server: Server, repository: Path) -> None:
    write_version(repository, 2, ("one", "two"))  # the graph has three outputs

    response = reload(server)

    assert response.status_code == 422
    assert "labels" in response.json()["error"]["message"]
    assert classify(server).json()["model"]["version"] == 1


def test_reload_under_load_fails_no_request(server: Server, repository: Path) -> None:
    write_version(repository, 2, V2_LABELS)
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def keep_classifying() -> None:
        with httpx.Client(timeout=30.0) as client:
            while not stop.is_set():
                response = client.post(
                    f"{server.url}/v1/classify",
                    params={"top_k": 1},
                    content=solid_png(RED),
                    headers={"Content-Type": "image/png"},
                )
                if response.status_code != 200:
                    outcomes[f"status {response.status_code}"] += 1
                    continue
                body = response.json()
                outcomes[f"v{body['model']['version']} {body['predictions'][0]['label']}"] += 1

    clients = [threading.Thread(target=keep_classifying) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        time.sleep(1.0)
        assert reload(server).status_code == 200
        time.sleep(1.0)
    finally:
        stop.set()
        for client in clients:
            client.join()

    # Every response is a complete result of one version: no errors, no mixtures.
    assert set(outcomes) == {"v1 red", "v2 red-v2"}, outcomes


def test_request_in_flight_finishes_on_the_old_version(repository: Path, tmp_path: Path) -> None:
    # A long batching delay keeps the first request queued on version 1 while the swap happens.
    with start(repository, tmp_path, max_queue_delay_ms="1000") as server:
        write_version(repository, 2, V2_LABELS)
        result: list[httpx.Response] = []
        waiting = threading.Thread(target=lambda: result.append(classify(server)))
        waiting.start()
        deadline = time.monotonic() + 10
        while metric(server, "visionserve_queue_depth", model=COLOUR_MODEL) < 1:
            assert time.monotonic() < deadline, "the request never reached the queue"
            time.sleep(0.02)

        assert reload(server).json()["version"] == 2
        waiting.join()

        assert result[0].json()["model"]["version"] == 1
        assert result[0].json()["predictions"][0]["label"] == "red"


def test_polling_reloads_and_skips_rejected(repository: Path, tmp_path: Path) -> None:
    with start(repository, tmp_path, reload_poll_seconds="0.2") as server:
        write_version(repository, 2, V2_LABELS)
        wait_for_live_version(server, 2)

        # Built aside and renamed in, so that no poll reads a half-written folder.
        staged = write_version(tmp_path / "staging", 3)
        (staged / "model.onnx").write_bytes(b"half-copied")
        staged.rename(repository / COLOUR_MODEL / "3")
        deadline = time.monotonic() + 20
        while metric(server, "visionserve_model_reloads_total", result="failure") < 1:
            assert time.monotonic() < deadline, "polling never tried version 3"
            time.sleep(0.1)
        time.sleep(1.0)  # five more polls

        assert metric(server, "visionserve_model_reloads_total", result="failure") == 1
        assert classify(server).json()["model"]["version"] == 2

        # Finishing the copy changes the files, so polling tries again and succeeds.
        write_version(repository, 3)
        wait_for_live_version(server, 3)


def wait_for_live_version(server: Server, version: int) -> None:
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.url}/v1/models").json()["models"][0]["live_version"] != version:
        assert time.monotonic() < deadline, f"version {version} never went live"
        time.sleep(0.1)
