"""Pushgateway and Prometheus processes on free loopback ports, for the drift job tests.

Both come from the Debian packages `prometheus-pushgateway` and `prometheus`,
and run through the same `Server` class as the services.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.servers import Server, free_port

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("prometheus-pushgateway") is None,
    reason="needs the Debian packages prometheus and prometheus-pushgateway",
)


@contextmanager
def running_pushgateway(work_dir: Path) -> Iterator[Server]:
    """Run a Pushgateway that persists its groups to a file in `work_dir`."""
    port = free_port()
    command = [
        "prometheus-pushgateway",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--persistence.file={work_dir / 'pushgateway.data'}",
    ]
    log_path = work_dir / f"pushgateway-{port}.log"
    server = Server("prometheus-pushgateway", port, {}, log_path, command=command)
    server.start("/-/ready", timeout=30.0)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_prometheus(job: str, target: str, work_dir: Path) -> Iterator[Server]:
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
    server = Server("prometheus", port, {}, work_dir / f"prometheus-{port}.log", command=command)
    server.start("/-/ready", timeout=30.0)
    try:
        yield server
    finally:
        server.stop()
