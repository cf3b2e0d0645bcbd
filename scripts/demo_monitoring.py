"""The monitoring part of the demo: a metrics snapshot, and a drift report of the demo's traffic.

The model services write their prediction log to the local Redis under a key
prefix of this demo run's own, so that the drift job reads only this run's
traffic. After the traffic, the demo saves what each service's `/metrics`
shows, runs the drift job once and deletes the run's Redis keys. Without
Redis, the services drop the records and the report lists the Redis error.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import redis

from monitoring.drift.job import run_once
from monitoring.drift.settings import MonitorSettings
from scripts.local_stack import Server

DEMO_REDIS_URL = "redis://127.0.0.1:6379/0"
# One prefix per run: the drift window would otherwise mix in earlier runs' records.
DEMO_KEY_PREFIX = f"visionserve-demo-{os.getpid()}-{int(time.time())}"


def prediction_log_env(service: str) -> dict[str, str]:
    """Return the settings that make a model service write its prediction log for the demo."""
    prefix = f"VS_{service.upper()}_"
    return {f"{prefix}REDIS_URL": DEMO_REDIS_URL, f"{prefix}REDIS_KEY_PREFIX": DEMO_KEY_PREFIX}


def save_metrics(servers: dict[str, Server], metrics_dir: Path) -> None:
    """Save the Prometheus text of each running service to `<metrics_dir>/<service>.prom`."""
    metrics_dir.mkdir(parents=True, exist_ok=True)
    print("\nPrometheus metrics of the demo's traffic, saved before the services stop:")
    for name, server in servers.items():
        response = httpx.get(f"{server.url}/metrics", timeout=10.0)
        response.raise_for_status()
        path = metrics_dir / f"{name}.prom"
        path.write_text(response.text, encoding="utf-8")
        print(f"  {name:<10} {path}  (served at {server.url}/metrics while the service ran)")


def write_drift_report(repository: Path, report_dir: Path) -> None:
    """Run the drift job once on the demo's prediction log and print where its reports are."""
    settings = MonitorSettings(
        redis_url=DEMO_REDIS_URL,
        redis_key_prefix=DEMO_KEY_PREFIX,
        model_repository=repository,
        report_dir=report_dir,
    )
    run = run_once(settings)
    print(f"\nDrift check of the demo's prediction log (at least {settings.min_samples} records):")
    for result in run.results:
        print(f"  {result.model} version {result.version}: {result.verdict}")
    for error in run.errors:
        print(f"  error: {error}")
    for path in run.report_paths:
        print(f"  report     {path}")


def delete_demo_keys() -> None:
    """Delete this run's prediction log and live-version keys from the local Redis."""
    try:
        client = redis.Redis.from_url(DEMO_REDIS_URL, socket_timeout=5.0)
        keys = list(client.scan_iter(match=f"{DEMO_KEY_PREFIX}:*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.RedisError as error:
        print(f"Could not delete the Redis keys under {DEMO_KEY_PREFIX}: {error}", file=sys.stderr)
