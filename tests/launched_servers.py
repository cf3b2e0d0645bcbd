"""Services started through `python -m services.serve` or under `taskset`, and their JSON logs."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.servers import Server, free_port

APPS = {
    "classifier": "services.classifier.app:create_app",
    "detector": "services.detector.app:create_app",
    "gateway": "services.gateway.app:create_app",
}
# The log message each worker writes once it can serve requests.
READY_MESSAGES = {
    "classifier": "models loaded; the service is ready",
    "detector": "models loaded; the service is ready",
    "gateway": "gateway started",
}


def log_records(server: Server) -> list[dict[str, Any]]:
    """Return the JSON log records the server wrote so far, skipping other lines."""
    records = []
    for line in server.log().splitlines():
        if not line.startswith("{"):
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def records_with(server: Server, message: str) -> list[dict[str, Any]]:
    return [record for record in log_records(server) if record.get("message") == message]


def ready_worker_pids(server: Server, service: str) -> set[int]:
    return {record["pid"] for record in records_with(server, READY_MESSAGES[service])}


@contextmanager
def launched_server(
    service: str,
    env: dict[str, str],
    log_dir: Path,
    *,
    workers: int,
    extra_args: Sequence[str] = (),
    timeout: float = 120.0,
) -> Iterator[Server]:
    """Run `python -m services.serve SERVICE --workers N` until every worker is ready."""
    port = free_port()
    command = [
        sys.executable, "-m", "services.serve", service,
        "--port", str(port), "--workers", str(workers), *extra_args,
    ]  # fmt: skip
    server = Server(
        app=APPS[service],
        port=port,
        env=env,
        log_path=log_dir / f"serve-{service}-{port}.log",
        command=command,
    )
    ready_path = "/readyz" if service != "gateway" else "/healthz"
    server.start(ready_path, timeout)
    try:
        wait_for_workers(server, service, workers, timeout)
        yield server
    finally:
        server.stop()


def wait_for_workers(server: Server, service: str, workers: int, timeout: float) -> None:
    """Wait until `workers` distinct processes have logged that they are ready."""
    deadline = time.monotonic() + timeout
    while len(ready_worker_pids(server, service)) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{workers} {service} workers not ready; log:\n{server.log()}")
        time.sleep(0.2)
