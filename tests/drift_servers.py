"""Pushgateway and Prometheus processes on free loopback ports, for the drift job tests.

Both come from the Debian packages `prometheus-pushgateway` and `prometheus`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from tests.servers import free_port

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("prometheus-pushgateway") is None,
    reason="needs the Debian packages prometheus and prometheus-pushgateway",
)


class BinaryServer:
    """A server binary that logs to a file and is ready once `ready_path` returns 200."""

    def __init__(self, command: list[str], port: int, log_path: Path) -> None:
        self.command = command
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.command, stdout=log_file, stderr=subprocess.STDOUT, cwd=self.log_path.parent
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[0]} exited early; log:\n{self.log()}")
            try:
                if httpx.get(self.url + ready_path, timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.command[0]} not ready after {timeout} s:\n{self.log()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def running_pushgateway(work_dir: Path) -> Iterator[BinaryServer]:
    """Run a Pushgateway that persists its groups to a file in `work_dir`."""
    port = free_port()
    command = [
        "prometheus-pushgateway",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--persistence.file={work_dir / 'pushgateway.data'}",
    ]
    server = BinaryServer(command, port, work_dir / f"pushgateway-{port}.log")
    server.start("/-/ready")
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_prometheus(job: str, target: str, work_dir: Path) -> Iterator[BinaryServer]:
    """Run Prometheus scraping `target` (host:port) as `job` every second."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}],
    }
    config_path = work_dir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        "prometheus",
        f"--config.file={config_path}",
        f"--storage.tsdb.path={work_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    server = BinaryServer(command, port, work_dir / f"prometheus-{port}.log")
    server.start("/-/ready")
    try:
        yield server
    finally:
        server.stop()
