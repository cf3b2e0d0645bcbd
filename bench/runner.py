"""Runs the cells of the benchmark and collects them: the limit, HTTP load, sweeps and profiles."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import workload
from bench.limit import measure_limit
from bench.loadgen import LoadSpec, run_load
from bench.profiling import recording
from bench.report import GATEWAY, LIMIT, TARGET_CONCURRENCY, Cell
from bench.servers import ModelNames, read_batch_counters
from bench.stats import CellStats, ratios, summarize
from scripts.local_stack import Server
from services.classifier.settings import ClassifierSettings
from services.detector.settings import DetectorSettings

logger = logging.getLogger(__name__)

SERVICE_BY_TASK = {"classify": "classifier", "detect": "detector"}


def size_label(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@dataclass(frozen=True)
class RunSettings:
    """How long and how hard each cell runs, and which tasks and image sizes it covers."""

    warmup: float
    duration: float
    concurrencies: list[int]
    tasks: list[str]
    sweep_sizes: tuple[tuple[int, int], ...]

    @property
    def sweep_duration(self) -> float:
        # Sweep cells run one request at a time, so half a grid cell gives enough samples.
        return self.duration / 2

    def to_json(self) -> dict[str, Any]:
        return {
            "warmup_seconds": self.warmup,
            "duration_seconds": self.duration,
            "sweep_duration_seconds": self.sweep_duration,
            "concurrency": self.concurrencies,
            "tasks": self.tasks,
            "sweep_sizes": [size_label(size) for size in self.sweep_sizes],
        }


@dataclass(frozen=True)
class HttpTarget:
    """A running server: its row name, base URL and where its batch-size metric can be read.

    VisionServe routes are `/v1/classify?model=NAME`; the baselines serve one
    model per route, `/classify` and `/detect`, and take no parameter.
    """

    name: str
    base_url: str
    metrics_url: str | None = None
    versioned: bool = True

    def endpoint(self, task: str, models: ModelNames) -> tuple[str, dict[str, str]]:
        if not self.versioned:
            return f"{self.base_url}/{task}", {}
        model = models.classifier if task == "classify" else models.detector
        return f"{self.base_url}/v1/{task}", {"model": model}


class Runner:
    """Measures cells one after another and keeps their results for the report."""

    def __init__(
        self,
        settings: RunSettings,
        models: ModelNames,
        images: dict[tuple[int, int], list[workload.BenchImage]],
        work_dir: Path,
        log_dir: Path,
    ) -> None:
        self.settings = settings
        self.models = models
        self.log_dir = log_dir
        self.image_paths = {
            size: workload.write_images(batch, work_dir / size_label(size))
            for size, batch in images.items()
        }
        self.images = images
        # The grid compares with the limit on the grid images; each sweep cell with
        # the limit at its own image size.
        self.limits: dict[str, CellStats] = {}
        self.sweep_limits: dict[str, CellStats] = {}
        self.cells: list[Cell] = []
        self.sweep: list[Cell] = []
        self.profiles: dict[str, Any] = {}
        self.network: dict[str, list[str]] = {}
        self.skipped: dict[str, str] = {}

    def add_limit(self, task: str, stats: CellStats) -> None:
        self.limits[task] = stats
        label = size_label(workload.GRID_SIZE)
        cell = Cell(
            LIMIT,
            task,
            stats,
            label,
            ratios=ratios(stats, stats),
            load_average=round(os.getloadavg()[0], 2),
        )
        self.cells.append(cell)

    def run_limit_sweep(self, version_dir: Path) -> None:
        for size in self.settings.sweep_sizes:
            logger.info("measuring the limit (a) for classify at %s", size_label(size))
            stats = measure_limit(
                version_dir, self.images[size], self.settings.warmup, self.settings.sweep_duration
            )
            self.sweep_limits[size_label(size)] = stats
            cell = Cell(
                LIMIT,
                "classify",
                stats,
                size_label(size),
                ratios=ratios(stats, stats),
                load_average=round(os.getloadavg()[0], 2),
            )
            self.sweep.append(cell)

    def measure_http(
        self,
        target: HttpTarget,
        task: str,
        concurrency: int,
        *,
        batching: str | None,
        size: tuple[int, int] = workload.GRID_SIZE,
        duration: float | None = None,
        reference: CellStats | None = None,
    ) -> Cell:
        """Load `target` with the images of `size` and return the cell, with ratios to the limit."""
        url, params = target.endpoint(task, self.models)
        logger.info(
            "measuring %s %s at %s, concurrency %d, batching %s",
            target.name,
            task,
            size_label(size),
            concurrency,
            batching or "-",
        )
        before = read_batch_counters(target.metrics_url) if target.metrics_url else None
        spec = LoadSpec(
            url=url,
            images=self.image_paths[size],
            concurrency=concurrency,
            warmup=self.settings.warmup,
            duration=duration or self.settings.duration,
            params=params,
        )
        result = run_load(spec)
        after = read_batch_counters(target.metrics_url) if target.metrics_url else None

        stats = summarize(result.latencies_ms, result.window_seconds)
        total_requests = sum(result.status_counts.values())
        reference = reference or self.limits.get(task)
        cell = Cell(
            target=target.name,
            task=task,
            stats=stats,
            image_size=size_label(size),
            concurrency=concurrency,
            batching=batching,
            errors=result.errors,
            status_counts=result.status_counts,
            first_error=result.first_error,
            mean_batch_size=_mean_batch_size(before, after),
            client_cpu_ms_per_request=(
                round(1000.0 * result.client_cpu_seconds / total_requests, 3)
                if total_requests
                else None
            ),
            ratios=ratios(stats, reference) if reference is not None else {},
            load_average=round(os.getloadavg()[0], 2),
        )
        if result.errors:
            logger.warning("%d failed requests; first: %s", result.errors, result.first_error)
        return cell

    def run_grid(self, target: HttpTarget, task: str, batching: str | None = None) -> None:
        for concurrency in self.settings.concurrencies:
            self.cells.append(self.measure_http(target, task, concurrency, batching=batching))

    def run_sweep(self, target: HttpTarget, batching: str) -> None:
        for size in self.settings.sweep_sizes:
            cell = self.measure_http(
                target,
                "classify",
                1,
                batching=batching,
                size=size,
                duration=self.settings.sweep_duration,
                reference=self.sweep_limits.get(size_label(size)),
            )
            self.sweep.append(cell)

    def run_profiles(self, servers: dict[str, Server], batching: str) -> None:
        """Record the model service and the gateway with py-spy during one extra cell per task.

        The profiled cells are kept apart from the table, so that sampling cannot
        change the compared numbers.
        """
        gateway = HttpTarget(GATEWAY, servers[GATEWAY].url)
        seconds = int(self.settings.warmup + self.settings.duration)
        for task in self.settings.tasks:
            service = SERVICE_BY_TASK[task]
            pids = {
                name: process.pid
                for name in (service, GATEWAY)
                if (process := servers[name].process) is not None
            }
            output_dir = self.log_dir / "profiles" / f"{task}-batching-{batching}"
            with recording(pids, seconds, output_dir) as profiles:
                cell = self.measure_http(gateway, task, TARGET_CONCURRENCY, batching=batching)
            self.profiles[f"{task}, batching {batching}"] = {
                "cell": cell.to_json(),
                "processes": {name: profile.to_json() for name, profile in profiles.items()},
            }
            for name, profile in profiles.items():
                hottest = ", ".join(f"{fn} {count}" for fn, count in profile.top_self[:5])
                logger.info("py-spy %s (%d samples), hottest: %s", name, profile.samples, hottest)

    def batching_setting_present(self) -> dict[str, bool]:
        """Report whether this build's settings define the batching switch the harness sets."""
        return {
            "classifier": "batching_enabled" in ClassifierSettings.model_fields,
            "detector": "batching_enabled" in DetectorSettings.model_fields,
        }


def _mean_batch_size(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)
