"""Pushing the drift gauges to the Prometheus Pushgateway.

Grouping: every push uses job `visionserve_drift`. The gauges of one model go
to the group {service, model}, and each push replaces that group (HTTP PUT),
so a version that left the window loses its series while other models keep
theirs. The thresholds go to a group of their own, keyed by the job alone.
A model whose stream disappears keeps its last values in the Pushgateway
until an operator deletes its group.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from monitoring.drift.comparison import LABEL_FEATURE, VersionResult
from monitoring.drift.settings import MonitorSettings

JOB = "visionserve_drift"
STATISTICS = ("psi", "ks", "js")


def model_registry(results: Sequence[VersionResult], run_timestamp: float) -> CollectorRegistry:
    """Build the gauges of one model's versions. Versions without scores get no score series."""
    registry = CollectorRegistry()
    version_labels = ["service", "model", "version"]
    score = Gauge(
        "visionserve_drift_score",
        "Drift score of a feature of a model version against its reference profile.",
        [*version_labels, "feature", "statistic"],
        registry=registry,
    )
    detected = Gauge(
        "visionserve_drift_detected",
        "1 while a counted drift score of the model version exceeds its threshold, else 0.",
        version_labels,
        registry=registry,
    )
    samples = Gauge(
        "visionserve_drift_samples",
        "Prediction records of the model version in the window the drift job read.",
        version_labels,
        registry=registry,
    )
    last_run = Gauge(
        "visionserve_drift_last_run_timestamp_seconds",
        "Unix time of the drift job run that produced these values.",
        version_labels,
        registry=registry,
    )

    for result in results:
        labels = (result.service, result.model, str(result.version))
        samples.labels(*labels).set(result.samples)
        last_run.labels(*labels).set(run_timestamp)
        detected.labels(*labels).set(1 if result.verdict == "drift" else 0)
        for feature in result.features:
            for item in feature.scores:
                score.labels(*labels, feature.feature, item.statistic).set(item.value)
        if result.labels:
            for item in result.labels.scores:
                score.labels(*labels, LABEL_FEATURE, item.statistic).set(item.value)
    return registry


def threshold_registry(settings: MonitorSettings) -> CollectorRegistry:
    registry = CollectorRegistry()
    threshold = Gauge(
        "visionserve_drift_threshold",
        "Drift score above which a feature counts as drifting, per statistic.",
        ["statistic"],
        registry=registry,
    )
    for statistic in STATISTICS:
        threshold.labels(statistic).set(settings.threshold(statistic))
    return registry


def push_model(
    settings: MonitorSettings,
    service: str,
    model: str,
    results: Sequence[VersionResult],
    run_timestamp: float,
) -> None:
    """Replace the group {job, service, model} with the gauges of `results`."""
    push_to_gateway(
        settings.pushgateway_url,
        job=JOB,
        registry=model_registry(results, run_timestamp),
        grouping_key={"service": service, "model": model},
        timeout=settings.pushgateway_timeout_seconds,
    )


def push_thresholds(settings: MonitorSettings) -> None:
    push_to_gateway(
        settings.pushgateway_url,
        job=JOB,
        registry=threshold_registry(settings),
        timeout=settings.pushgateway_timeout_seconds,
    )
