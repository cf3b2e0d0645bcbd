"""Real Prometheus and Pushgateway processes on free loopback ports, for the monitoring tests.

Both come from Debian packages (`prometheus` 2.42 and `prometheus-pushgateway`
1.5.1), which `.ci/run` installs. Prometheus runs a copy of
monitoring/prometheus/prometheus.yml whose targets point at the test's
services, with the same alert rules and a scrape and evaluation interval of
1 s, so that rates and alerts react within seconds.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests.servers import ROOT, Server, free_port

PROMETHEUS_DIR = ROOT / "monitoring" / "prometheus"
PROMETHEUS_BINARY = "prometheus"
PUSHGATEWAY_BINARY = "prometheus-pushgateway"
TEST_INTERVAL = "1s"

needs_prometheus = pytest.mark.skipif(
    shutil.which(PROMETHEUS_BINARY) is None or shutil.which(PUSHGATEWAY_BINARY) is None,
    reason="needs the Debian packages prometheus and prometheus-pushgateway (.ci/run has both)",
)

T = TypeVar("T")


def poll(
    check: Callable[[], T | None], timeout: float, description: str, interval: float = 0.25
) -> T:
    """Call `check` until it returns a value other than None, and return that value.

    Raises TimeoutError after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {description}")
        time.sleep(interval)


def prometheus_config(targets: Mapping[str, str]) -> dict[str, Any]:
    """Return the shipped Prometheus config with each job's target replaced by `targets[job]`.

    Raises KeyError when `targets` lacks a job of the shipped config, so that
    a new scrape job cannot go untested.
    """
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = TEST_INTERVAL
    config["global"]["evaluation_interval"] = TEST_INTERVAL
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return config


class Prometheus:
    """A running Prometheus server and a client for its HTTP API (/api/v1)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.url, timeout=10.0)

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, path: str, **params: Any) -> Any:
        """Return the `data` of a successful /api/v1 call; raise AssertionError with the error."""
        response = self.client.get(f"/api/v1/{path}", params=params)
        body = response.json()
        assert body.get("status") == "success", f"/api/v1/{path} {params}: {body}"
        return body["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        """Evaluate `expression` at the current time and return its instant vector."""
        data = self.api("query", query=expression)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for_finite(self, expression: str, timeout: float) -> list[dict[str, Any]]:
        """Wait until `expression` returns a finite value and return its result."""
        last: list[dict[str, Any]] = []

        def finite_result() -> list[dict[str, Any]] | None:
            last[:] = self.query(expression)
            return list(last) if finite_values(last) else None

        try:
            return poll(finite_result, timeout, f"data from {expression}")
        except TimeoutError as error:
            raise AssertionError(
                f"no finite value from {expression}; last result {last}"
            ) from error

    def metric_names(self) -> set[str]:
        return set(self.api("label/__name__/values"))

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def target_health(self) -> dict[str, str]:
        """Return the health (`up`, `down` or `unknown`) of each scrape job's target."""
        targets = self.api("targets", state="active")["activeTargets"]
        return {target["labels"]["job"]: target["health"] for target in targets}


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    """Return the values of an instant vector that are numbers, without NaN and infinities."""
    values = [float(sample["value"][1]) for sample in result]
    return [value for value in values if math.isfinite(value)]


@contextmanager
def running_pushgateway(log_dir: Path) -> Iterator[Server]:
    """Run a Pushgateway that keeps pushed metrics in memory only, so that it starts empty."""
    port = free_port()
    command = [
        PUSHGATEWAY_BINARY,
        f"--web.listen-address=127.0.0.1:{port}",
        # The Debian build defaults to /var/lib/prometheus/pushgateway.data, which
        # every Pushgateway started that way shares.
        "--persistence.file=",
    ]
    server = Server(
        PUSHGATEWAY_BINARY, port, {}, log_dir / f"pushgateway-{port}.log", command=command
    )
    server.start("/-/ready", timeout=30.0)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_prometheus(targets: Mapping[str, str], work_dir: Path) -> Iterator[Prometheus]:
    """Run Prometheus with `prometheus_config(targets)` and the shipped rules in `work_dir`."""
    work_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROMETHEUS_DIR / "rules", work_dir / "rules", dirs_exist_ok=True)
    config_path = work_dir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(prometheus_config(targets), sort_keys=False))
    port = free_port()
    command = [
        PROMETHEUS_BINARY,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={work_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    server = Server(PROMETHEUS_BINARY, port, {}, work_dir / "prometheus.log", command=command)
    server.start("/-/ready", timeout=30.0)
    prometheus = Prometheus(server)
    try:
        yield prometheus
    finally:
        prometheus.client.close()
        server.stop()
