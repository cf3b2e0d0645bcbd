"""Start VisionServe services as local uvicorn processes on free loopback ports.

Used by the demo and by the tests. Each process logs to its own file so a
failure can show what the service printed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
# A gateway that serves requests without an API key, allowed only in development.
GATEWAY_OPEN_ACCESS_ENV = {
    "VS_GATEWAY_ENVIRONMENT": "development",
    "VS_GATEWAY_OPEN_ACCESS": "true",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A uvicorn process serving one app, with its base URL and log file."""

    app: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    # Replaces the plain uvicorn command, to run it under taskset or the
    # services.serve launcher, for example.
    command: list[str] = field(default_factory=list)
    # Variables with these prefixes are not inherited from this process, so
    # that the service gets only the settings in `env`.
    isolated_prefixes: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/readyz", timeout: float = 120.0) -> None:
        self.launch()
        self.wait_ready(ready_path, timeout)

    def launch(self) -> None:
        """Start the process without waiting for it to become ready."""
        command = self.command or [
            sys.executable, "-m", "uvicorn", self.app, "--factory",
            "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not (self.isolated_prefixes and name.startswith(self.isolated_prefixes))
        }
        log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**inherited, **self.env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, ready_path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.app} exited early; log:\n{self.log()}")
            try:
                if httpx.get(self.url + ready_path, timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.app} not ready after {timeout}s; log:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def running_server(
    app: str, env: dict[str, str], log_dir: Path, ready_path: str = "/readyz"
) -> Iterator[Server]:
    """Run `app` (a `module:factory` path) until the block exits."""
    port = free_port()
    server = Server(
        app=app, port=port, env=env, log_path=log_dir / f"{app.split(':')[0]}-{port}.log"
    )
    server.start(ready_path)
    try:
        yield server
    finally:
        server.stop()
