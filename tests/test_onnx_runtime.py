"""onnxruntime configuration: CPU count, thread defaults, providers and invalid settings.

The CPU count tests read fake cgroup folders. The service tests start real
uvicorn processes on the colour model and read the session log line they write.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import onnxruntime as ort
import pytest

from services.classifier.settings import ClassifierSettings
from services.common.cpus import cgroup_cpu_limit, threads_per_worker, usable_cpus
from services.common.session_config import SessionConfig, select_providers
from services.common.settings import InvalidSettingsError, load_settings
from services.detector.settings import DetectorSettings
from tests.images import RED, solid_png
from tests.launched_servers import records_with
from tests.onnx_models import COLOUR_MODEL, build_colour_repository
from tests.servers import ROOT, Server, free_port

CLASSIFIER_APP = "services.classifier.app:create_app"
SESSION_MESSAGE = "onnxruntime session created"
CPU = "CPUExecutionProvider"


# CPU count from fake cgroup folders ---------------------------------------------


def write_files(root: Path, files: dict[str, str]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


CGROUP_LIMITS = [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 2),
    ({"cpu.max": "200000 100000\n"}, 2),
    ({"cpu.max": "50000 100000\n"}, 1),
    ({"cpu.max": "1000 100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "250000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu,cpuacct/cpu.cfs_quota_us": "400000", "cpu,cpuacct/cpu.cfs_period_us": "200000"}, 2),
    ({"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "100000"}, 1),
    ({"memory/memory.max": "max"}, None),
]


@pytest.mark.parametrize(("files", "expected"), CGROUP_LIMITS)
def test_cgroup_cpu_limit(tmp_path: Path, files: dict[str, str], expected: int | None) -> None:
    root = write_files(tmp_path, files)

    assert cgroup_cpu_limit(root) == expected


def test_cgroup_v2_wins_over_v1(tmp_path: Path) -> None:
    root = write_files(
        tmp_path,
        {
            "cpu.max": "300000 100000",
            "cpu/cpu.cfs_quota_us": "100000",
            "cpu/cpu.cfs_period_us": "100000",
        },
    )

    assert cgroup_cpu_limit(root) == 3


def test_unreadable_quota_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_files(tmp_path, {"cpu.max": "lots 100000"})

    assert cgroup_cpu_limit(root) is None
    assert "is not a number" in caplog.text


def test_missing_cgroup_folder_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / "nowhere") is None


# (cgroup files, affinity CPU ids, workers, expected threads per worker)
THREAD_DEFAULTS = [
    ({"cpu.max": "max 100000"}, {0, 1, 2, 3}, 1, 4),
    ({"cpu.max": "max 100000"}, {0, 1, 2, 3}, 2, 2),
    ({"cpu.max": "max 100000"}, {0, 1, 2, 3}, 3, 1),
    ({"cpu.max": "max 100000"}, {0, 1}, 4, 1),
    ({"cpu.max": "150000 100000"}, {0, 1, 2, 3, 4, 5, 6, 7}, 1, 2),
    ({"cpu.max": "150000 100000"}, {0, 1, 2, 3, 4, 5, 6, 7}, 2, 1),
    ({"cpu.max": "800000 100000"}, {2, 5}, 1, 2),
    ({"cpu/cpu.cfs_quota_us": "400000", "cpu/cpu.cfs_period_us": "100000"}, set(range(16)), 2, 2),
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, set(range(6)), 2, 3),
    ({}, {0}, 1, 1),
]


@pytest.mark.parametrize(("files", "affinity", "workers", "expected"), THREAD_DEFAULTS)
def test_threads_per_worker(
    tmp_path: Path, files: dict[str, str], affinity: set[int], workers: int, expected: int
) -> None:
    root = write_files(tmp_path, files)

    assert threads_per_worker(workers, cgroup_root=root, affinity=affinity) == expected


def test_usable_cpus_takes_the_smaller_limit(tmp_path: Path) -> None:
    root = write_files(tmp_path, {"cpu.max": "300000 100000"})

    assert usable_cpus(cgroup_root=root, affinity={0, 1}) == 2
    assert usable_cpus(cgroup_root=root, affinity=set(range(8))) == 3


def test_threads_per_worker_rejects_zero_workers() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        threads_per_worker(0)


# Providers and session options ---------------------------------------------------


def test_unavailable_provider_is_skipped_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        selected = select_providers(["CUDAExecutionProvider"], available=[CPU])

    assert selected == (CPU,)
    warning = caplog.records[-1]
    assert warning.levelno == logging.WARNING
    assert "CUDAExecutionProvider is not available" in warning.getMessage()
    assert "available providers: CPUExecutionProvider" in warning.getMessage()


def test_providers_keep_order_with_cpu_last() -> None:
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU]

    selected = select_providers(["CUDAExecutionProvider", "TensorrtExecutionProvider"], available)

    assert selected == ("CUDAExecutionProvider", "TensorrtExecutionProvider", CPU)
    assert select_providers([CPU], available) == (CPU,)
    assert select_providers([], available) == (CPU,)


def test_session_options_follow_config() -> None:
    config = SessionConfig(
        intra_op_threads=3,
        inter_op_threads=2,
        graph_optimization_level="basic",
        execution_mode="parallel",
    )

    options = config.options()

    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 2
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL


def test_config_from_settings_keeps_explicit_threads() -> None:
    settings = ClassifierSettings(
        intra_op_threads=3, inter_op_threads=5, graph_optimization_level="disabled"
    )

    config = SessionConfig.from_settings(settings)

    assert (config.intra_op_threads, config.inter_op_threads) == (3, 5)
    assert config.options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert config.providers == (CPU,)


# Invalid settings ------------------------------------------------------------------


INVALID_SETTINGS = [
    ("VS_CLASSIFIER_GRAPH_OPTIMIZATION_LEVEL", "fastest", "'disabled', 'basic', 'extended' or"),
    ("VS_CLASSIFIER_EXECUTION_MODE", "threaded", "'sequential' or 'parallel'"),
    ("VS_CLASSIFIER_EXECUTION_PROVIDERS", "CUDAExecutionProvider", "must be a JSON list"),
    ("VS_CLASSIFIER_EXECUTION_PROVIDERS", '["CudaProvider"]', "unknown execution provider"),
    ("VS_CLASSIFIER_EXECUTION_PROVIDERS", f'["{CPU}", "CUDAExecutionProvider"]', "must be last"),
    ("VS_CLASSIFIER_EXECUTION_PROVIDERS", f'["{CPU}", "{CPU}"]', "more than once"),
    ("VS_CLASSIFIER_WORKERS", "0", "greater than or equal to 1"),
]


@pytest.mark.parametrize(("variable", "value", "message"), INVALID_SETTINGS)
def test_invalid_setting_names_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(InvalidSettingsError) as caught:
        load_settings(ClassifierSettings)

    assert variable in str(caught.value)
    assert message in str(caught.value)


def test_provider_settings_parse_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VS_DETECTOR_EXECUTION_PROVIDERS", '["CUDAExecutionProvider"]')
    monkeypatch.setenv("VS_DETECTOR_EXECUTION_MODE", "parallel")

    settings = load_settings(DetectorSettings)

    assert settings.execution_providers == ["CUDAExecutionProvider"]
    assert settings.execution_mode == "parallel"
    assert ClassifierSettings().execution_providers == [CPU]


# Real services -------------------------------------------------------------------


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_repository(tmp_path_factory.mktemp("models"))


@contextmanager
def classifier(
    env: dict[str, str], log_dir: Path, command_prefix: list[str] | None = None
) -> Iterator[Server]:
    port = free_port()
    command = [
        *(command_prefix or []), sys.executable, "-m", "uvicorn", CLASSIFIER_APP, "--factory",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    server = Server(
        app=CLASSIFIER_APP,
        port=port,
        env=env,
        log_path=log_dir / f"classifier-{port}.log",
        command=command,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def classify_red(server: Server) -> str:
    response = httpx.post(
        f"{server.url}/v1/classify",
        content=solid_png(RED),
        headers={"Content-Type": "image/png"},
        timeout=30.0,
    )
    assert response.status_code == 200, response.text
    label: str = response.json()["predictions"][0]["label"]
    return label


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_one_cpu_affinity_gives_one_thread(repository: Path, tmp_path: Path) -> None:
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository)}

    with classifier(env, tmp_path, command_prefix=["taskset", "-c", "0"]) as server:
        assert classify_red(server) == "red"
        sessions = records_with(server, SESSION_MESSAGE)

    assert len(sessions) == 1
    assert sessions[0]["intra_op_threads"] == 1
    assert sessions[0]["inter_op_threads"] == 1
    assert sessions[0]["providers"] == [CPU]
    assert sessions[0]["path"].endswith(f"{COLOUR_MODEL}/1/model.onnx")


@pytest.mark.slow
def test_session_log_reports_settings(repository: Path, tmp_path: Path) -> None:
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(repository),
        "VS_CLASSIFIER_INTRA_OP_THREADS": "2",
        "VS_CLASSIFIER_INTER_OP_THREADS": "3",
        "VS_CLASSIFIER_GRAPH_OPTIMIZATION_LEVEL": "extended",
        "VS_CLASSIFIER_EXECUTION_MODE": "parallel",
    }

    with classifier(env, tmp_path) as server:
        assert classify_red(server) == "red"
        (session,) = records_with(server, SESSION_MESSAGE)

    assert session["level"] == "INFO"
    assert session["intra_op_threads"] == 2
    assert session["inter_op_threads"] == 3
    assert session["graph_optimization_level"] == "extended"
    assert session["execution_mode"] == "parallel"


def unavailable_provider() -> str:
    available = set(ort.get_available_providers())
    return next(name for name in ort.get_all_providers() if name not in available)


@pytest.mark.slow
def test_unavailable_provider_serves_on_cpu(repository: Path, tmp_path: Path) -> None:
    missing = unavailable_provider()
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(repository),
        "VS_CLASSIFIER_EXECUTION_PROVIDERS": f'["{missing}"]',
    }

    with classifier(env, tmp_path) as server:
        assert classify_red(server) == "red"
        (session,) = records_with(server, SESSION_MESSAGE)
        log = server.log()

    assert session["providers"] == [CPU]
    assert f"execution provider {missing} is not available" in log
    assert '"level": "WARNING"' in log


STARTUP_FAILURES = [
    ("VS_CLASSIFIER_GRAPH_OPTIMIZATION_LEVEL", "fastest"),
    ("VS_CLASSIFIER_EXECUTION_PROVIDERS", "CUDAExecutionProvider,CPUExecutionProvider"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("variable", "value"), STARTUP_FAILURES)
@pytest.mark.parametrize("launcher", ["uvicorn", "services.serve"])
def test_invalid_setting_stops_startup(
    repository: Path, variable: str, value: str, launcher: str
) -> None:
    if launcher == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", CLASSIFIER_APP, "--factory"]
    else:
        command = [sys.executable, "-m", "services.serve", "classifier"]
    command += ["--host", "127.0.0.1", "--port", str(free_port())]
    env = {
        **os.environ,
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(repository),
        variable: value,
    }

    completed = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert completed.returncode != 0
    assert variable in completed.stdout + completed.stderr
