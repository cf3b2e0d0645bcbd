"""Reference profiles for test models, and runs of `python -m monitoring.drift` against a stack.

The reference profile is built by the same export code that training uses
(`training.reference`), from images that the test treats as in-distribution.
The drift job runs as its own process, as the compose file runs it, and pushes
to the stack's Pushgateway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from services.common.metadata import read_metadata
from tests.prometheus_servers import Prometheus, finite_values, poll
from tests.redis_servers import SHARED_REDIS_URL
from tests.servers import ROOT
from training.reference import ReferenceImages, write_reference_profile

DRIFT_JOB_TIMEOUT = 120.0


def write_reference(version_dir: Path, images: Iterable[bytes], source: str) -> Path:
    """Write `reference.json` of the model version in `version_dir` from encoded `images`."""
    metadata = read_metadata(version_dir)
    return write_reference_profile(version_dir, metadata, ReferenceImages(list(images), source))


def run_drift_job(
    prometheus: Prometheus,
    pushgateway_url: str,
    redis_key_prefix: str,
    service: str,
    repository: Path,
    report_dir: Path,
    **settings: str,
) -> float:
    """Run the drift job once for the models of `service` and return the time it started.

    `settings` become `VS_MONITOR_*` variables, for example min_samples="50".
    Raises AssertionError with the job's output when it exits with an error.
    """
    env = {
        "VS_MONITOR_REDIS_URL": SHARED_REDIS_URL,
        "VS_MONITOR_REDIS_KEY_PREFIX": redis_key_prefix,
        "VS_MONITOR_MODEL_REPOSITORY": str(repository),
        "VS_MONITOR_SERVICES": json.dumps([service]),
        "VS_MONITOR_PUSHGATEWAY_URL": pushgateway_url,
        "VS_MONITOR_PROMETHEUS_URL": prometheus.url,
        "VS_MONITOR_REPORT_DIR": str(report_dir),
        **{f"VS_MONITOR_{name.upper()}": value for name, value in settings.items()},
    }
    started = time.time()
    completed = subprocess.run(
        [sys.executable, "-m", "monitoring.drift", "--once"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=DRIFT_JOB_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, f"drift job failed:\n{completed.stdout}\n{completed.stderr}"
    return started


def wait_for_drift_results(prometheus: Prometheus, model: str, since: float) -> None:
    """Wait until Prometheus has scraped the results of a drift run for `model` after `since`."""
    expression = f'max(visionserve_drift_last_run_timestamp_seconds{{model="{model}"}})'

    def scraped() -> bool | None:
        values = finite_values(prometheus.query(expression))
        return True if values and values[0] >= since - 1.0 else None

    poll(scraped, 30.0, f"drift results of {model} in Prometheus")
