"""Per-stage timing of one inference request: queue, decode, preprocess, inference, postprocess.

`queue` adds the wait for a worker thread to the wait for a batch; `inference`
is the run of the whole batch the request was part of.

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

    def record_batch(self, inference_seconds: float) -> None:
        """Split the time since the previous lap into the wait for a batch and its inference."""
        now = time.perf_counter()
        waited = max(now - self._last - inference_seconds, 0.0)
        self.seconds["queue"] = self.seconds.get("queue", 0.0) + waited
        self.seconds["inference"] = inference_seconds
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
        """Add the recorded stages to the service's stage histogram.

        The batcher observes the inference histogram, once per batch rather than per request.
        """
        for stage, seconds in self.seconds.items():
            metrics.stage_latency.labels(metrics.service, model.name, stage).observe(seconds)


def milliseconds(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
