"""Measured cells, the targets they are checked against, and how both are printed and saved."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import CellStats

LIMIT = "limit"
SERVICE = "service"
GATEWAY = "gateway"
NAIVE = "naive"
BENTOML = "bentoml"
TARGET_CONCURRENCY = 8
MIN_LIMIT_RATIO = 0.8
MIN_BASELINE_RATIO = 1.3
MAX_LARGE_IMAGE_RATIO = 2.0


@dataclass
class Cell:
    """One measurement: a server (or the in-process limit), a task, a load level and its numbers."""

    target: str
    task: str
    stats: CellStats
    image_size: str
    concurrency: int | None = None
    batching: str | None = None
    errors: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
    mean_batch_size: float | None = None
    client_cpu_ms_per_request: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    # The 1-minute load average of the machine when the cell ended.
    load_average: float | None = None

    def matches(
        self, target: str, task: str, concurrency: int | None, batching: str | None
    ) -> bool:
        key = (self.target, self.task, self.concurrency, self.batching)
        return key == (target, task, concurrency, batching)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "task": self.task,
            "image_size": self.image_size,
            "concurrency": self.concurrency,
            "batching": self.batching,
            **self.stats.to_json(),
            "errors": self.errors,
            "status_counts": self.status_counts,
            "first_error": self.first_error,
            "mean_batch_size": self.mean_batch_size,
            "client_cpu_ms_per_request": self.client_cpu_ms_per_request,
            "ratio_to_limit": self.ratios,
            "load_average_1m": self.load_average,
        }


@dataclass(frozen=True)
class TargetCheck:
    """A speed target: the measured ratio, its bound and whether it was met."""

    name: str
    measured: float | None
    bound: float
    at_least: bool

    @property
    def met(self) -> bool | None:
        if self.measured is None or math.isnan(self.measured):
            return None
        return self.measured >= self.bound if self.at_least else self.measured <= self.bound

    def to_json(self) -> dict[str, Any]:
        relation = ">=" if self.at_least else "<="
        return {
            "name": self.name,
            "measured": self.measured,
            "target": f"{relation} {self.bound}",
            "met": self.met,
        }


def find(
    cells: Iterable[Cell],
    target: str,
    task: str,
    concurrency: int | None,
    batching: str | None,
    image_size: str | None = None,
) -> Cell | None:
    for cell in cells:
        if cell.matches(target, task, concurrency, batching) and (
            image_size is None or cell.image_size == image_size
        ):
            return cell
    return None


def _throughput_ratio(cell: Cell | None, reference: Cell | None) -> float | None:
    if cell is None or reference is None or reference.stats.throughput == 0:
        return None
    return round(cell.stats.throughput / reference.stats.throughput, 3)


def evaluate_targets(
    cells: list[Cell],
    sweep: list[Cell],
    tasks: list[str],
    batching_modes: list[str],
    grid_size: str,
    large_size: str,
) -> list[TargetCheck]:
    """Check the gateway at concurrency 8 against the limit and the baselines, and image size."""
    checks = []
    concurrency = TARGET_CONCURRENCY
    for task in tasks:
        limit = find(cells, LIMIT, task, None, None)
        naive = find(cells, NAIVE, task, concurrency, None)
        bento = find(cells, BENTOML, task, concurrency, None)
        for mode in batching_modes:
            gateway = find(cells, GATEWAY, task, concurrency, mode)
            prefix = f"{task}, batching {mode}: gateway at concurrency {concurrency}"
            references = (
                ("limit (a)", limit, MIN_LIMIT_RATIO),
                (f"naive (c) at {concurrency}", naive, MIN_BASELINE_RATIO),
                (f"BentoML (d) at {concurrency}", bento, MIN_BASELINE_RATIO),
            )
            for label, reference, bound in references:
                ratio = _throughput_ratio(gateway, reference)
                checks.append(TargetCheck(f"{prefix} / {label}", ratio, bound, at_least=True))
    for mode in batching_modes:
        small = find(sweep, GATEWAY, "classify", 1, mode, grid_size)
        large = find(sweep, GATEWAY, "classify", 1, mode, large_size)
        ratio = None
        if small is not None and large is not None and small.stats.p50_ms > 0:
            ratio = round(large.stats.p50_ms / small.stats.p50_ms, 3)
        name = f"classify, batching {mode}: gateway p50 at {large_size} / at {grid_size}"
        checks.append(TargetCheck(name, ratio, MAX_LARGE_IMAGE_RATIO, at_least=False))
    return checks


def _number(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def format_cells(cells: list[Cell]) -> str:
    header = (
        f"{'target':<8} {'task':<8} {'size':>9} {'batching':>8} {'conc':>4} {'req/s':>7} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'rps/(a)':>7} {'p50/(a)':>7} "
        f"{'errors':>6} {'avg batch':>9} {'load':>5}"
    )
    lines = [header, "-" * len(header)]
    for cell in cells:
        stats = cell.stats
        throughput_ratio = _number(cell.ratios.get("throughput"), 2)
        p50_ratio = _number(cell.ratios.get("p50"), 2)
        lines.append(
            f"{cell.target:<8} {cell.task:<8} {cell.image_size:>9} {cell.batching or '-':>8} "
            f"{cell.concurrency or '-':>4} {_number(stats.throughput):>7} "
            f"{_number(stats.p50_ms):>8} {_number(stats.p95_ms):>8} {_number(stats.p99_ms):>8} "
            f"{throughput_ratio:>7} {p50_ratio:>7} "
            f"{cell.errors:>6} {_number(cell.mean_batch_size, 1):>9} "
            f"{_number(cell.load_average, 1):>5}"
        )
    return "\n".join(lines)


def format_targets(checks: list[TargetCheck]) -> str:
    lines = []
    for check in checks:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[check.met]
        relation = ">=" if check.at_least else "<="
        lines.append(
            f"{verdict:<12} {check.name}: {_number(check.measured, 3)} ({relation} {check.bound})"
        )
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """Replace NaN with None, because JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(document), indent=2) + "\n", encoding="utf-8")
