"""Several worker processes through `python -m services.serve`: metrics add up over workers.

Each request opens a fresh connection, so the kernel hands connections to both
workers. Every `/metrics` scrape reaches one worker, and each must report the
totals of both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common.cpus import threads_per_worker
from services.common.multiprocess_metrics import remove_dead_worker_gauges
from tests.images import BLUE, RED, solid_png
from tests.launched_servers import launched_server, log_records, records_with, wait_for_workers
from tests.onnx_models import COLOUR_MODEL, build_colour_repository
from tests.servers import GATEWAY_OPEN_ACCESS_ENV, ROOT, Server

pytestmark = pytest.mark.slow

WORKERS = 2
# Requests are sent in rounds until both workers have served some. The cap
# stops the loop when one worker takes every connection.
ROUND_SIZE = 8
MAX_ROUNDS = 25
SCRAPES = 6


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("multiprocess-logs")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("classifier-metrics")
    # Left over from an earlier run: the launcher must delete it before starting.
    (folder / "counter_999999.db").write_bytes(b"stale")
    return folder


@pytest.fixture(scope="module")
def classifier(repository: Path, log_dir: Path, metrics_dir: Path) -> Iterator[Server]:
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository)}
    extra_args = ["--metrics-dir", str(metrics_dir)]
    with launched_server(
        "classifier", env, log_dir, workers=WORKERS, extra_args=extra_args
    ) as server:
        yield server


def classify(url: str, colour: tuple[int, int, int] = RED) -> None:
    # A new client per request opens a new connection.
    response = httpx.post(
        f"{url}/v1/classify",
        content=solid_png(colour),
        headers={"Content-Type": "image/png"},
        timeout=30.0,
    )
    assert response.status_code == 200, response.text


def serving_pids(server: Server, route: str) -> set[int]:
    return {
        record["pid"]
        for record in records_with(server, "request finished")
        if record.get("route") == route
    }


def send_until_every_worker_served(server: Server, send: Callable[[], None], route: str) -> int:
    """Send rounds of concurrent requests until each worker served one; return the count sent."""
    sent = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(MAX_ROUNDS):
            list(pool.map(lambda _: send(), range(ROUND_SIZE)))
            sent += ROUND_SIZE
            if len(serving_pids(server, route)) == WORKERS:
                break
    assert len(serving_pids(server, route)) == WORKERS, f"one worker served all {sent} requests"
    return sent


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Add up every sample called `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def scrape(server: Server) -> str:
    response = httpx.get(f"{server.url}/metrics", timeout=10.0)
    assert response.status_code == 200
    return response.text


def test_workers_share_the_cpus(classifier: Server) -> None:
    sessions = records_with(classifier, "onnxruntime session created")

    assert len({record["pid"] for record in sessions}) == WORKERS
    # The test process has the same affinity mask and cgroup as the workers.
    expected = threads_per_worker(WORKERS)
    assert [record["intra_op_threads"] for record in sessions] == [expected] * WORKERS


def test_stale_metric_files_were_removed(classifier: Server, metrics_dir: Path) -> None:
    assert not (metrics_dir / "counter_999999.db").exists()
    assert any(metrics_dir.glob("gauge_livemax_*.db"))


def test_counts_add_up_over_workers(classifier: Server) -> None:
    before = metric_sum(scrape(classifier), "visionserve_requests_total", route="/v1/classify")

    sent = send_until_every_worker_served(
        classifier, lambda: classify(classifier.url), "/v1/classify"
    )

    for _ in range(SCRAPES):
        text = scrape(classifier)
        requests = metric_sum(text, "visionserve_requests_total", route="/v1/classify")
        assert requests - before == sent
        assert metric_sum(text, "visionserve_predictions_total", label="red") == requests
        assert metric_sum(text, "visionserve_top1_confidence_count") == requests
        assert metric_sum(text, "visionserve_model_info", model=COLOUR_MODEL, version="1") == 1.0


def test_killed_worker_keeps_counts(classifier: Server, metrics_dir: Path) -> None:
    send_until_every_worker_served(
        classifier, lambda: classify(classifier.url, BLUE), "/v1/classify"
    )
    blue_before = metric_sum(scrape(classifier), "visionserve_predictions_total", label="blue")
    victim = min(serving_pids(classifier, "/v1/classify"))

    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (metrics_dir / f"gauge_livemax_{victim}.db").exists():
        assert time.monotonic() < deadline, "the gauge file of the killed worker stayed"
        time.sleep(0.5)

    assert (metrics_dir / f"counter_{victim}.db").exists()
    assert any(
        f"exited worker {victim}" in record.get("message", "") for record in log_records(classifier)
    )
    text = scrape(classifier)
    assert metric_sum(text, "visionserve_predictions_total", label="blue") == blue_before
    assert metric_sum(text, "visionserve_model_info", model=COLOUR_MODEL, version="1") == 1.0
    # uvicorn replaces the killed worker, and later tests need the replacement ready.
    wait_for_workers(classifier, "classifier", WORKERS + 1, timeout=60)


def test_gateway_counts_add_up_over_workers(
    classifier: Server, log_dir: Path, tmp_path: Path
) -> None:
    env = {
        "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
        "VS_GATEWAY_DETECTOR_URL": "",
        **GATEWAY_OPEN_ACCESS_ENV,
    }
    with launched_server("gateway", env, log_dir, workers=WORKERS) as gateway:
        sent = send_until_every_worker_served(
            gateway, lambda: classify(gateway.url), "/v1/classify"
        )

        for _ in range(SCRAPES):
            text = scrape(gateway)
            assert metric_sum(text, "visionserve_requests_total", route="/v1/classify") == sent
            backend_calls = metric_sum(
                text, "visionserve_backend_request_duration_seconds_count", backend="classifier"
            )
            assert backend_calls == sent


def test_dead_process_gauges_are_removed(tmp_path: Path) -> None:
    # A real process writes a live gauge and exits. This process has a file too and stays.
    writer = textwrap.dedent(
        """
        from prometheus_client import Gauge
        Gauge("depth", "test", multiprocess_mode="livesum").set(3)
        """
    )
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run(
        [sys.executable, "-c", writer], cwd=ROOT, env=environment, timeout=60, check=True
    )
    (dead_file,) = tmp_path.glob("gauge_livesum_*.db")
    own_file = tmp_path / f"gauge_livesum_{os.getpid()}.db"
    own_file.write_bytes(dead_file.read_bytes())
    counter_file = tmp_path / dead_file.name.replace("gauge_livesum", "counter")
    counter_file.write_bytes(b"")

    removed = remove_dead_worker_gauges(tmp_path)

    assert removed == [int(dead_file.stem.rsplit("_", 1)[1])]
    assert not dead_file.exists()
    assert own_file.exists()
    assert counter_file.exists()


def test_single_worker_launcher_serves(repository: Path, log_dir: Path) -> None:
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository)}
    with launched_server("classifier", env, log_dir, workers=1) as server:
        for _ in range(3):
            classify(server.url)
        text = scrape(server)
        sessions = records_with(server, "onnxruntime session created")

    assert metric_sum(text, "visionserve_requests_total", route="/v1/classify") == 3
    assert metric_sum(text, "visionserve_predictions_total", label="red") == 3
    assert [record["intra_op_threads"] for record in sessions] == [threads_per_worker(1)]
