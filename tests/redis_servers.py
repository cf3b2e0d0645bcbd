"""Redis for tests: unique key prefixes on the shared server, and private servers to stop.

The shared Redis at 127.0.0.1:6379 serves every developer on this machine.
Tests use it only below a key prefix of their own and delete those keys
afterwards; they never flush it. A test that stops Redis starts its own
`redis-server` on a free port instead.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.servers import free_port

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"


def unique_prefix(name: str) -> str:
    return f"vs-test-{name}-{uuid.uuid4().hex[:12]}"


def delete_keys(url: str, prefix: str) -> None:
    """Delete every key below `prefix`, and nothing else."""
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=500):
            client.delete(key)
    finally:
        client.close()


@contextmanager
def shared_redis_prefix(name: str) -> Iterator[str]:
    """Yield a new key prefix on the shared Redis, and delete its keys at the end."""
    prefix = unique_prefix(name)
    try:
        yield prefix
    finally:
        delete_keys(SHARED_REDIS_URL, prefix)


class PrivateRedis:
    """A redis-server process of the test's own, without persistence, that can be restarted."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--logfile", str(self.log_path),
        ]  # fmt: skip
        self.process = subprocess.Popen(command)
        client = redis.Redis(port=self.port, socket_timeout=1.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited early; log:\n{self.log()}")
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        self.process.wait(timeout=15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def private_redis(log_dir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(log_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
