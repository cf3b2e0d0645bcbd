"""The servers under test, each started as local processes on free loopback ports.

- VisionServe: the classifier, the detector and a gateway in front of them,
  with dynamic batching switched by `VS_CLASSIFIER_BATCHING_ENABLED` and
  `VS_DETECTOR_BATCHING_ENABLED` (a build without batching ignores both).
- The naive baseline, `bench.naive_app`, under uvicorn.
- BentoML, `bench.bentoml_service`, from its own virtualenv, with usage
  tracking off and a loopback-only network guard (`bench/netguard`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.baseline_models import CLASSIFIER_VARIABLE, DETECTOR_VARIABLE, REPOSITORY_VARIABLE
from scripts.local_stack import GATEWAY_OPEN_ACCESS_ENV, ROOT, Server, free_port, running_server

CLASSIFIER_APP = "services.classifier.app:create_app"
DETECTOR_APP = "services.detector.app:create_app"
GATEWAY_APP = "services.gateway.app:create_app"
NAIVE_APP = "bench.naive_app:create_app"
BENTOML_SERVICE = "bench.bentoml_service:VisionBento"
NETGUARD_DIR = ROOT / "bench" / "netguard"
# Offline for every child: ultralytics and Hugging Face clients look for the network
# otherwise, and onnxruntime starts its telemetry uploader.
OFFLINE_ENV = {"YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "ORT_DISABLE_TELEMETRY": "1"}


@dataclass(frozen=True)
class ModelNames:
    classifier: str
    detector: str

    def baseline_env(self, repository: Path) -> dict[str, str]:
        return {
            REPOSITORY_VARIABLE: str(repository.resolve()),
            CLASSIFIER_VARIABLE: self.classifier,
            DETECTOR_VARIABLE: self.detector,
            **OFFLINE_ENV,
        }


@contextmanager
def visionserve_stack(
    repository: Path, log_dir: Path, *, batching: bool
) -> Iterator[dict[str, Server]]:
    """Run the classifier, the detector and a gateway pointed at both."""
    models = str(repository.resolve())
    flag = "true" if batching else "false"
    with ExitStack() as stack:
        classifier = stack.enter_context(
            running_server(
                CLASSIFIER_APP,
                {
                    "VS_CLASSIFIER_MODEL_REPOSITORY": models,
                    "VS_CLASSIFIER_BATCHING_ENABLED": flag,
                    **OFFLINE_ENV,
                },
                log_dir,
            )
        )
        detector = stack.enter_context(
            running_server(
                DETECTOR_APP,
                {
                    "VS_DETECTOR_MODEL_REPOSITORY": models,
                    "VS_DETECTOR_BATCHING_ENABLED": flag,
                    **OFFLINE_ENV,
                },
                log_dir,
            )
        )
        gateway_env = {
            "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
            "VS_GATEWAY_DETECTOR_URL": detector.url,
            # The load generator sends no API key; a key check is one SHA-256 per request.
            **GATEWAY_OPEN_ACCESS_ENV,
            "VS_GATEWAY_SHUTDOWN_DRAIN_SECONDS": "0",
            **OFFLINE_ENV,
        }
        gateway = stack.enter_context(running_server(GATEWAY_APP, gateway_env, log_dir))
        yield {"classifier": classifier, "detector": detector, "gateway": gateway}


@contextmanager
def naive_server(repository: Path, models: ModelNames, log_dir: Path) -> Iterator[Server]:
    with running_server(NAIVE_APP, models.baseline_env(repository), log_dir) as server:
        yield server


def read_batch_counters(url: str) -> tuple[float, float] | None:
    """Return the sum and count of `visionserve_batch_size` over all labels, or None without it."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10.0).text
    except httpx.HTTPError:
        return None
    total = count = 0.0
    found = False
    for family in text_string_to_metric_families(text):
        if family.name != "visionserve_batch_size":
            continue
        found = True
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
    return (total, count) if found else None


@dataclass
class BentoServer(Server):
    """`bentoml serve` in its own process group, optionally under `strace -e trace=connect`."""

    command: list[str] = field(default_factory=list)
    trace_path: Path | None = None
    guard_log: Path | None = None

    def start(self, ready_path: str = "/readyz", timeout: float = 180.0) -> None:
        log_file = self.log_path.open("ab")
        # A new session, so that stop() reaches BentoML's worker processes and strace together.
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready(ready_path, timeout)

    def stop(self) -> None:
        if self.process is None:
            return
        # The group outlives its leader while a worker still runs, so it is signalled
        # even when strace or `bentoml serve` has already exited.
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def outside_connections(self) -> list[str]:
        """List every attempt to reach a non-loopback address that the guard or strace saw."""
        attempts = []
        if self.guard_log is not None and self.guard_log.exists():
            attempts += [f"guard: {line}" for line in self.guard_log.read_text().splitlines()]
        if self.trace_path is not None and self.trace_path.exists():
            attempts += [f"strace: {line}" for line in _non_loopback_connects(self.trace_path)]
        return attempts


_INET_ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')


def _non_loopback_connects(trace_path: Path) -> list[str]:
    lines = []
    for line in trace_path.read_text(errors="replace").splitlines():
        for match in _INET_ADDRESS.finditer(line):
            address = match.group(1) or match.group(2)
            if not (address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")):
                lines.append(line.strip())
    return lines


def bentoml_command(venv: Path, port: int, trace_path: Path | None) -> list[str]:
    serve = [
        str(venv / "bin" / "bentoml"), "serve", BENTOML_SERVICE,
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    if trace_path is None:
        return serve
    # --seccomp-bpf stops the traced processes only at connect(), so tracing costs little.
    return [
        "strace", "-f", "-tt", "--seccomp-bpf", "-e", "trace=connect",
        "-o", str(trace_path), *serve,
    ]  # fmt: skip


@contextmanager
def bentoml_server(
    venv: Path, repository: Path, models: ModelNames, log_dir: Path
) -> Iterator[BentoServer]:
    """Run the BentoML service with tracking off, loopback only, until the block exits."""
    port = free_port()
    trace_path = log_dir / f"bentoml-{port}.strace" if shutil.which("strace") else None
    guard_log = log_dir / f"bentoml-{port}.netguard"
    env = {
        **models.baseline_env(repository),
        "BENTOML_DO_NOT_TRACK": "True",
        "BENTOML_HOME": str(log_dir / "bentoml-home"),
        "PYTHONPATH": os.pathsep.join([str(NETGUARD_DIR), str(ROOT)]),
        "BENCH_NETGUARD_LOG": str(guard_log),
    }
    server = BentoServer(
        app=BENTOML_SERVICE,
        port=port,
        env=env,
        log_path=log_dir / f"bentoml-{port}.log",
        command=bentoml_command(venv, port, trace_path),
        trace_path=trace_path,
        guard_log=guard_log,
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
