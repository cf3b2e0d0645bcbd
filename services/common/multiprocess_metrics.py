"""prometheus_client multiprocess mode, for a service that runs several worker processes.

With `PROMETHEUS_MULTIPROC_DIR` set before prometheus_client is imported, each
worker writes its metric values to files in that folder, and `/metrics`, served
by whichever worker accepts the scrape, adds up the files of all workers.
`python -m services.serve` sets the variable for its workers, empties the folder
before they start and removes the gauge files of workers that have exited.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

logger = logging.getLogger(__name__)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Files of gauges whose multiprocess mode starts with "live", named by the writer's pid.
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def multiprocess_directory() -> Path | None:
    """Return the folder of multiprocess mode, or None when the process runs alone."""
    value = os.environ.get(MULTIPROC_DIR_ENV)
    return Path(value) if value else None


def exposition_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """Return the registry that `/metrics` renders: `registry`, or the sum over all workers.

    In multiprocess mode a registry holding the metrics themselves would report
    only this worker, so a fresh registry reads the folder on every scrape.
    """
    directory = multiprocess_directory()
    if directory is None:
        return registry
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=str(directory))
    return merged


def clear_directory(directory: Path) -> None:
    """Create `directory` if needed and delete the metric files that earlier runs left in it.

    Counters of an earlier run would otherwise be added to this run's totals.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink()


def remove_dead_worker_gauges(directory: Path) -> list[int]:
    """Delete the live-gauge files of every process that no longer exists, and return their pids.

    Counters and histograms of a dead worker stay, so that totals never drop.
    """
    dead = []
    for path in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid not in dead and not _process_exists(pid):
            dead.append(pid)
    for pid in dead:
        mark_process_dead(pid, str(directory))
        logger.info("removed the gauge values of exited worker %d", pid)
    return dead


class DeadWorkerReaper:
    """A daemon thread that calls `remove_dead_worker_gauges` every `interval_seconds`.

    NOTE: uvicorn 0.55 offers no hook when it replaces a worker, so exits are
    found by polling pids. A pid that the system has already reused for
    another process keeps its gauge files until that process exits too.
    """

    def __init__(self, directory: Path, interval_seconds: float = 5.0) -> None:
        self._directory = directory
        self._interval_seconds = interval_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_seconds):
            try:
                remove_dead_worker_gauges(self._directory)
            except OSError as error:
                logger.warning("removing gauge files of exited workers failed: %s", error)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
