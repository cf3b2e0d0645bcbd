"""Throughput and latency percentiles of one measured cell, and their ratios to a reference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CellStats:
    """Requests completed in the measured window, their rate and latency percentiles in ms."""

    requests: int
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float

    def to_json(self) -> dict[str, float | int]:
        return {
            name: round(value, 3) if isinstance(value, float) else value
            for name, value in asdict(self).items()
        }


def summarize(latencies_ms: Sequence[float], seconds: float) -> CellStats:
    """Summarize the latencies of the requests completed in a window of `seconds`.

    Percentiles use numpy's linear interpolation. With no completed request
    every value is NaN, so that a ratio against it is NaN too and not a
    misleading zero.
    """
    if seconds <= 0:
        raise ValueError(f"the window must be longer than 0 s, got {seconds}")
    if not latencies_ms:
        nan = float("nan")
        return CellStats(0, seconds, 0.0, nan, nan, nan, nan)
    values = np.asarray(latencies_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return CellStats(
        requests=len(values),
        seconds=seconds,
        throughput=len(values) / seconds,
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=float(values.mean()),
    )


def ratios(cell: CellStats, reference: CellStats) -> dict[str, float]:
    """Return throughput and each latency percentile of `cell` divided by those of `reference`.

    A throughput ratio above 1 is faster than the reference, a latency ratio
    above 1 is slower.
    """
    return {
        "throughput": _divide(cell.throughput, reference.throughput),
        "p50": _divide(cell.p50_ms, reference.p50_ms),
        "p95": _divide(cell.p95_ms, reference.p95_ms),
        "p99": _divide(cell.p99_ms, reference.p99_ms),
    }


def _divide(numerator: float, denominator: float) -> float:
    if denominator == 0 or np.isnan(denominator):
        return float("nan")
    return round(numerator / denominator, 3)
