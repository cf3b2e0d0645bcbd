"""The monitoring part of the demo: where the metrics are, and a drift report of the demo's traffic.

The model services write their prediction log to the local Redis under a key
prefix of the demo's own. After the traffic, the drift job runs once on that
log and writes its JSON and HTML reports. Without Redis, the services drop the
records and the report lists the Redis error.
"""

from __future__ import annotations

from pathlib import Path

from monitoring.drift.job import run_once
from monitoring.drift.settings import MonitorSettings
from scripts.local_stack import Server

DEMO_REDIS_URL = "redis://127.0.0.1:6379/0"
DEMO_KEY_PREFIX = "visionserve-demo"


def prediction_log_env(service: str) -> dict[str, str]:
    """Return the settings that make a model service write its prediction log for the demo."""
    prefix = f"VS_{service.upper()}_"
    return {f"{prefix}REDIS_URL": DEMO_REDIS_URL, f"{prefix}REDIS_KEY_PREFIX": DEMO_KEY_PREFIX}


def show_metrics_urls(servers: dict[str, Server]) -> None:
    print("  Prometheus metrics, while the demo runs:")
    for name, server in servers.items():
        print(f"    {name:<10} {server.url}/metrics")


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
