"""Comparing the live records of one model version with its reference profile."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from monitoring.drift.settings import MonitorSettings
from monitoring.drift.statistics import (
    jensen_shannon_divergence,
    kolmogorov_smirnov,
    population_stability_index,
)
from services.common.input_stats import INPUT_FEATURES
from services.common.prediction_record import SCORE_DECIMALS, PredictionRecord
from services.common.reference_profile import (
    OUTPUT_FEATURES,
    REFERENCE_FILENAME,
    ReferenceProfile,
    read_reference,
)

Verdict = Literal["drift", "no drift", "not enough data", "missing reference", "invalid reference"]
LABEL_FEATURE = "predicted_class"


@dataclass(frozen=True)
class Score:
    """One statistic of one feature, with the threshold it is held to."""

    statistic: str  # psi, ks or js
    value: float
    threshold: float
    p_value: float | None = None  # KS only

    @property
    def exceeded(self) -> bool:
        return self.value > self.threshold


@dataclass
class FeatureComparison:
    """Reference and live values of one numeric feature, and their scores."""

    feature: str
    reference: list[float]
    live: list[float]
    counts_for_drift: bool
    scores: list[Score] = field(default_factory=list)
    note: str = ""  # reason for the missing scores, empty when scored


@dataclass
class LabelComparison:
    """Predicted-label shares of the reference and label counts of the live records."""

    reference: dict[str, float]
    live: dict[str, int]
    counts_for_drift: bool
    scores: list[Score] = field(default_factory=list)
    note: str = ""


@dataclass
class VersionResult:
    """The drift check of one model version."""

    service: str
    model: str
    version: int
    samples: int
    verdict: Verdict
    message: str
    reference_path: str
    task: str = ""
    features: list[FeatureComparison] = field(default_factory=list)
    labels: LabelComparison | None = None

    @property
    def drifting_features(self) -> list[str]:
        names = [
            item.feature
            for item in self.features
            if item.counts_for_drift and any(score.exceeded for score in item.scores)
        ]
        labels = self.labels
        if labels and labels.counts_for_drift and any(s.exceeded for s in labels.scores):
            names.append(LABEL_FEATURE)
        return names


def live_values(records: Sequence[PredictionRecord], feature: str) -> list[float]:
    """Return the values of `feature` in `records`, defined as in the reference profile."""
    if feature in INPUT_FEATURES:
        return [float(getattr(record.inputs, feature)) for record in records]
    if feature == "box_count":
        return [float(record.box_count) for record in records]
    if feature == "confidence":
        values: list[float] = []
        for record in records:
            if record.task == "classification":
                values.extend(record.scores[:1])
            else:
                values.extend(record.scores)
        return values
    raise ValueError(f"unknown feature {feature!r}")


def compare_version(
    service: str,
    model: str,
    version: int,
    records: Sequence[PredictionRecord],
    settings: MonitorSettings,
) -> VersionResult:
    """Score the live records of one model version against its `reference.json`."""
    version_dir = settings.model_repository / model / str(version)
    result = VersionResult(
        service=service,
        model=model,
        version=version,
        samples=len(records),
        verdict="not enough data",
        message="",
        reference_path=str(version_dir / REFERENCE_FILENAME),
    )
    try:
        reference = read_reference(version_dir)
    except FileNotFoundError:
        result.verdict = "missing reference"
        result.message = (
            f"no {REFERENCE_FILENAME} in {version_dir}; export the model again to add it"
        )
        return result
    except ValueError as error:
        result.verdict = "invalid reference"
        result.message = f"{result.reference_path} is invalid: {error}"
        return result
    except OSError as error:
        result.verdict = "invalid reference"
        result.message = f"reading {result.reference_path} failed: {error}"
        return result

    result.task = reference.task
    tasks = {record.task for record in records}
    if tasks != {reference.task}:
        result.verdict = "invalid reference"
        result.message = (
            f"the reference is for {reference.task} "
            f"but the records are for {', '.join(sorted(tasks))}"
        )
        return result
    if len(records) < settings.min_samples:
        result.message = f"{len(records)} records, need at least {settings.min_samples}"
        return result
    # A small reference makes the scores as noisy as a small live sample does.
    if reference.image_count < settings.min_samples:
        result.message = (
            f"the reference has {reference.image_count} images, "
            f"need at least {settings.min_samples}"
        )
        return result

    for feature in (*INPUT_FEATURES, *OUTPUT_FEATURES[reference.task]):
        result.features.append(_compare_feature(feature, reference, records, settings))
    result.labels = _compare_labels(reference, records, settings)

    counted = [item for item in result.features if item.counts_for_drift]
    scored = any(item.scores for item in counted)
    if result.labels.counts_for_drift and result.labels.scores:
        scored = True
    if not scored:
        result.message = "no feature that sets the drift flag has enough values to score"
        return result

    drifting = result.drifting_features
    result.verdict = "drift" if drifting else "no drift"
    result.message = (
        f"drift in {', '.join(drifting)}"
        if drifting
        else "every counted score is within its threshold"
    )
    return result


def _compare_feature(
    feature: str,
    reference: ReferenceProfile,
    records: Sequence[PredictionRecord],
    settings: MonitorSettings,
) -> FeatureComparison:
    reference_values = list(reference.features[feature])
    if feature == "confidence":
        # Otherwise a reference value of exactly 1/3 and its logged 0.333333
        # fall into different PSI bins.
        reference_values = [round(value, SCORE_DECIMALS) for value in reference_values]
    comparison = FeatureComparison(
        feature=feature,
        reference=reference_values,
        live=live_values(records, feature),
        counts_for_drift=feature in settings.drift_features,
    )
    if not comparison.reference:
        comparison.note = "the reference has no values"
        return comparison
    # Detection confidence has one value per box, so a reference with enough
    # images can still have too few of them.
    if len(comparison.reference) < settings.min_samples:
        comparison.note = (
            f"not enough data: the reference has {len(comparison.reference)} values, "
            f"need at least {settings.min_samples}"
        )
        return comparison
    # Detection confidence has one value per box, so it can fall short even
    # when the version has enough records.
    if len(comparison.live) < settings.min_samples:
        comparison.note = (
            f"not enough data: {len(comparison.live)} live values, "
            f"need at least {settings.min_samples}"
        )
        return comparison

    psi = population_stability_index(comparison.reference, comparison.live, settings.psi_bins)
    ks = kolmogorov_smirnov(comparison.reference, comparison.live)
    comparison.scores = [
        Score("psi", psi, settings.psi_threshold),
        Score("ks", ks.statistic, settings.ks_threshold, p_value=ks.p_value),
    ]
    return comparison


def _compare_labels(
    reference: ReferenceProfile, records: Sequence[PredictionRecord], settings: MonitorSettings
) -> LabelComparison:
    counts: Counter[str] = Counter()
    for record in records:
        counts.update(record.labels[:1] if record.task == "classification" else record.labels)
    comparison = LabelComparison(
        reference=dict(reference.label_frequencies),
        live=dict(counts),
        counts_for_drift=LABEL_FEATURE in settings.drift_features,
    )
    if not comparison.reference or not comparison.live:
        side = "reference" if not comparison.reference else "live data"
        comparison.note = f"the {side} has no predicted labels"
        return comparison
    divergence = jensen_shannon_divergence(comparison.reference, dict(counts))
    comparison.scores = [Score("js", divergence, settings.js_threshold)]
    return comparison
