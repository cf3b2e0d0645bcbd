"""The serving benchmark harness runs end to end on the limit (a) and the naive baseline (c).

A smoke test only: it runs `python -m bench.serving` in its shortest form on
the tiny colour models and checks that every cell was measured, not how fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.servers import NETGUARD_DIR, ModelNames, naive_server
from tests.detection_models import COLOUR_DETECTOR, build_colour_detector_repository
from tests.images import RED, solid_jpeg
from tests.onnx_models import COLOUR_MODEL, build_colour_repository
from tests.servers import ROOT

pytestmark = pytest.mark.slow

CONCURRENCY = (1, 2)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench-models")
    build_colour_repository(folder)
    build_colour_detector_repository(folder)
    return folder


@pytest.fixture(scope="module")
def run(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    output = tmp_path_factory.mktemp("bench-output") / "serving.json"
    command = [
        sys.executable, "-m", "bench.serving", "--quick",
        "--targets", "limit,naive",
        "--repository", str(repository),
        "--classifier-model", COLOUR_MODEL,
        "--detector-model", COLOUR_DETECTOR,
        "--warmup", "0.2", "--duration", "0.5",
        "--concurrency", ",".join(map(str, CONCURRENCY)),
        "--output", str(output),
    ]  # fmt: skip
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    return json.loads(output.read_text()), completed.stdout


def test_every_cell_measured(run: tuple[dict[str, Any], str]) -> None:
    document, _ = run
    measured = {(cell["target"], cell["task"], cell["concurrency"]) for cell in document["cells"]}

    expected = {("limit", task, None) for task in ("classify", "detect")} | {
        ("naive", task, concurrency)
        for task in ("classify", "detect")
        for concurrency in CONCURRENCY
    }
    assert measured == expected


def test_naive_requests_succeed(run: tuple[dict[str, Any], str]) -> None:
    document, _ = run
    for cell in document["cells"]:
        assert cell["requests"] > 0, cell
        assert cell["errors"] == 0, cell
        if cell["target"] == "naive":
            assert cell["status_counts"] == {"200": cell["requests"]}


def test_ratios_refer_to_limit(run: tuple[dict[str, Any], str]) -> None:
    document, _ = run
    limits = {cell["task"]: cell for cell in document["cells"] if cell["target"] == "limit"}
    for cell in document["cells"]:
        limit = limits[cell["task"]]
        expected = cell["throughput"] / limit["throughput"]
        # The JSON rounds ratios and milliseconds to 3 decimals.
        assert cell["ratio_to_limit"]["throughput"] == pytest.approx(
            expected, rel=0.002, abs=0.0006
        )
        assert cell["ratio_to_limit"]["p50"] == pytest.approx(
            cell["p50_ms"] / limit["p50_ms"], rel=0.002, abs=0.0006
        )


def test_sweep_includes_twelve_megapixels(run: tuple[dict[str, Any], str]) -> None:
    document, _ = run
    sizes = {cell["image_size"] for cell in document["sweep"] if cell["target"] == "limit"}

    assert sizes == {"640x480", "4000x3000"}
    assert all(image["bytes"] > 0 for image in document["images"]["4000x3000"])


def test_unrun_targets_not_measured(run: tuple[dict[str, Any], str]) -> None:
    document, stdout = run
    # Without the gateway no target has a measurement, and none may claim to be met.
    assert document["targets"]
    assert all(check["met"] is None for check in document["targets"])
    assert "naive" in stdout
    assert "not measured" in stdout


def test_naive_app_predicts(repository: Path, tmp_path: Path) -> None:
    models = ModelNames(classifier=COLOUR_MODEL, detector=COLOUR_DETECTOR)
    image = solid_jpeg(RED, (64, 64))
    with naive_server(repository, models, tmp_path) as server:
        files = {"file": ("red.jpg", image, "image/jpeg")}
        classified = httpx.post(f"{server.url}/classify", files=files, timeout=30.0)
        detected = httpx.post(f"{server.url}/detect", files=files, timeout=30.0)

    assert classified.status_code == 200, classified.text
    assert classified.json()["predictions"][0]["label"] == "red"
    assert detected.status_code == 200, detected.text
    labels = {detection["label"] for detection in detected.json()["detections"]}
    assert labels == {"red"}


@pytest.mark.parametrize(
    ("event", "argument", "blocked"),
    [
        ("socket.connect", (None, ("192.0.2.1", 80)), True),
        ("socket.getaddrinfo", ("example.com", 443, 0, 0, 0), True),
        ("socket.connect", (None, ("127.0.0.1", 3000)), False),
        ("socket.connect", (None, ("::1", 3000, 0, 0)), False),
        ("socket.getaddrinfo", ("localhost", 3000, 0, 0, 0), True),
        ("socket.getaddrinfo", ("127.0.0.1", 3000, 0, 0, 0), False),
    ],
)
def test_netguard_blocks_outside(
    tmp_path: Path, event: str, argument: tuple[object, ...], blocked: bool
) -> None:
    # sys.audit raises the event without opening a socket, so no packet can leave.
    log = tmp_path / "netguard.log"
    code = f"import sys; sys.audit({event!r}, *{argument!r})"
    env = {**os.environ, "PYTHONPATH": str(NETGUARD_DIR), "BENCH_NETGUARD_LOG": str(log)}
    completed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )

    assert (completed.returncode != 0) == blocked, completed.stderr
    assert ("PermissionError" in completed.stderr) == blocked
    assert log.exists() == blocked


def test_markdown_lists_every_cell(run: tuple[dict[str, Any], str], tmp_path: Path) -> None:
    document, _ = run
    result = tmp_path / "serving.json"
    result.write_text(json.dumps(document))
    completed = subprocess.run(
        [sys.executable, "-m", "bench.markdown", str(result)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    rows = [line for line in completed.stdout.splitlines() if line.startswith("| naive |")]
    assert len(rows) == 2 * len(CONCURRENCY)
    assert "| not measured |" in completed.stdout
