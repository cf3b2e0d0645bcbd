"""Prometheus metrics of model output: live versions, predicted labels and confidence.

A shift in the label mix or a drop in confidence is often the first sign that
the images sent to a model no longer look like its training data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from services.common.metrics import ServiceMetrics
from services.common.repository import LoadedModel


class RankedPrediction(Protocol):
    """One class of a classification result, most probable first in its list."""

    @property
    def label(self) -> str: ...

    @property
    def probability(self) -> float: ...


class ScoredDetection(Protocol):
    """One detected object."""

    @property
    def label(self) -> str: ...

    @property
    def score(self) -> float: ...


def record_live_models(metrics: ServiceMetrics, models: Iterable[LoadedModel]) -> None:
    """Set `visionserve_model_info` to 1 for each live version and to 0 for any other it shows.

    Call it after every load or reload. Versions that were live before and are
    not now read 0 rather than disappear, so a dashboard shows the switch.
    """
    live = {(model.name, str(model.version)) for model in models}
    gauge = metrics.model_info
    for family in gauge.collect():
        for sample in family.samples:
            key = (sample.labels["model"], sample.labels["version"])
            if sample.labels["service"] == metrics.service and key not in live:
                gauge.labels(metrics.service, *key).set(0)
    for name, version in live:
        gauge.labels(metrics.service, name, version).set(1)


def record_classifications(
    metrics: ServiceMetrics,
    model: LoadedModel,
    ranked_per_image: Iterable[Sequence[RankedPrediction]],
) -> None:
    """Count the top-1 label and observe the top-1 probability of each classified image."""
    for ranked in ranked_per_image:
        if not ranked:
            continue
        top = ranked[0]
        metrics.predictions.labels(metrics.service, model.name, top.label).inc()
        metrics.top1_confidence.labels(metrics.service, model.name).observe(top.probability)


def record_detections(
    metrics: ServiceMetrics, model: LoadedModel, detections: Iterable[ScoredDetection]
) -> None:
    """Count the label and observe the score of each detection of one image."""
    for detection in detections:
        metrics.predictions.labels(metrics.service, model.name, detection.label).inc()
        metrics.top1_confidence.labels(metrics.service, model.name).observe(detection.score)
