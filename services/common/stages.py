"""Per-stage timing of one inference request: queue, decode, preprocess, inference, postprocess.

Each service records the stages with a `StageTimer`, returns the milliseconds
in its response and observes the seconds in Prometheus histograms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from services.common.metrics import ServiceMetrics
from services.common.repository import LoadedModel


@dataclass(frozen=True)
class StageTimings:
    """Milliseconds per stage. `total` also covers the wait for a worker thread."""

    decode: float
    preprocess: float
    inference: float
    postprocess: float
    total: float


class StageTimer:
    """Measures consecutive stages of one request from the moment it was queued."""

    def __init__(self, queued_at: float) -> None:
        self._queued_at = queued_at
        self._last = queued_at
        self.seconds: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        """Record the time since the previous lap (or since queueing) as `stage`."""
        now = time.perf_counter()
        self.seconds[stage] = now - self._last
        self._last = now

    def timings(self) -> StageTimings:
        return StageTimings(
            decode=milliseconds(self.seconds.get("decode", 0.0)),
            preprocess=milliseconds(self.seconds.get("preprocess", 0.0)),
            inference=milliseconds(self.seconds.get("inference", 0.0)),
            postprocess=milliseconds(self.seconds.get("postprocess", 0.0)),
            total=milliseconds(self._last - self._queued_at),
        )

    def observe(self, metrics: ServiceMetrics, model: LoadedModel) -> None:
        """Add the recorded stages to the service's inference and stage histograms."""
        service = metrics.service
        if "inference" in self.seconds:
            metrics.inference_latency.labels(service, model.name, str(model.version)).observe(
                self.seconds["inference"]
            )
        for stage, seconds in self.seconds.items():
            metrics.stage_latency.labels(service, model.name, stage).observe(seconds)


def milliseconds(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
