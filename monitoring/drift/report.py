"""The drift report as JSON (`drift-report.json`) and HTML (`drift-report.html`).

Both files are written to a temporary file in the report folder and renamed,
so a reader never sees a half-written report.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monitoring.drift.comparison import FeatureComparison, LabelComparison, Score, VersionResult
from monitoring.drift.html_report import render_html
from monitoring.drift.settings import MonitorSettings

if TYPE_CHECKING:
    from monitoring.drift.job import DriftRun

JSON_REPORT = "drift-report.json"
HTML_REPORT = "drift-report.html"
# Equal-width bins of the report histograms; PSI uses its own quantile bins.
HISTOGRAM_BINS = 20


def histogram(
    reference: list[float], live: list[float], bins: int = HISTOGRAM_BINS
) -> dict[str, Any]:
    """Return equal-width bin edges over both samples and the share of each sample per bin.

    The edges span the 0.5th to 99.5th percentile of both samples together, and
    values beyond count in the end bins, so that a few outliers such as very
    sharp images do not squeeze the rest into one bin.
    """
    values = np.asarray(reference + live, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"edges": [], "reference": [], "live": []}
    low, high = (float(bound) for bound in np.percentile(values, [0.5, 99.5]))
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    shares = []
    for sample in (reference, live):
        clipped = np.clip(np.asarray(sample, dtype=np.float64), low, high)
        counts, _ = np.histogram(clipped, bins=edges)
        shares.append((counts / max(len(sample), 1)).round(6).tolist())
    return {"edges": edges.round(6).tolist(), "reference": shares[0], "live": shares[1]}


def score_dict(score: Score) -> dict[str, Any]:
    item: dict[str, Any] = {
        "value": score.value,
        "threshold": score.threshold,
        "exceeded": score.exceeded,
    }
    if score.p_value is not None:
        item["p_value"] = score.p_value
    return item


def feature_dict(feature: FeatureComparison) -> dict[str, Any]:
    return {
        "feature": feature.feature,
        "counts_for_drift": feature.counts_for_drift,
        "reference_count": len(feature.reference),
        "live_count": len(feature.live),
        "scores": {score.statistic: score_dict(score) for score in feature.scores},
        "note": feature.note,
        "histogram": histogram(feature.reference, feature.live),
    }


def labels_dict(labels: LabelComparison) -> dict[str, Any]:
    total = sum(labels.live.values())
    return {
        "feature": "predicted_class",
        "counts_for_drift": labels.counts_for_drift,
        "scores": {score.statistic: score_dict(score) for score in labels.scores},
        "note": labels.note,
        "reference_shares": labels.reference,
        "live_shares": {label: count / total for label, count in sorted(labels.live.items())}
        if total
        else {},
        "live_count": total,
    }


def version_dict(result: VersionResult) -> dict[str, Any]:
    return {
        "service": result.service,
        "model": result.model,
        "version": result.version,
        "task": result.task,
        "samples": result.samples,
        "verdict": result.verdict,
        "message": result.message,
        "drifting_features": result.drifting_features,
        "reference_path": result.reference_path,
        "features": [feature_dict(feature) for feature in result.features],
        "predicted_class": labels_dict(result.labels) if result.labels else None,
    }


def report_dict(run: DriftRun, settings: MonitorSettings) -> dict[str, Any]:
    return {
        "generated_at": datetime.fromtimestamp(run.finished_at, UTC).isoformat(),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "settings": {
            "services": list(settings.services),
            "window_max_records": settings.window_max_records,
            "window_max_age_seconds": settings.window_max_age_seconds,
            "min_samples": settings.min_samples,
            "psi_bins": settings.psi_bins,
            "thresholds": {
                "psi": settings.psi_threshold,
                "ks": settings.ks_threshold,
                "js": settings.js_threshold,
            },
            "drift_features": list(settings.drift_features),
        },
        "errors": run.errors,
        "streams": [vars(stream) for stream in run.streams],
        "versions": [version_dict(result) for result in run.results],
        "bottlenecks": {
            "window": settings.bottleneck_window,
            "note": run.bottleneck_note,
            "models": [
                {
                    "service": item.service,
                    "model": item.model,
                    "dominant_stage": item.dominant_stage,
                    "mean_seconds": item.mean_seconds,
                    "stages": [vars(stage) for stage in item.stages],
                }
                for item in run.bottlenecks
            ],
        },
    }


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path` and rename it over `path`."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        # mkstemp creates the file readable by its owner only; reports are
        # meant to be read by a web server or another user.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_reports(run: DriftRun, settings: MonitorSettings) -> list[Path]:
    """Write both reports to `settings.report_dir` and return their paths."""
    settings.report_dir.mkdir(parents=True, exist_ok=True)
    data = report_dict(run, settings)
    json_path = settings.report_dir / JSON_REPORT
    html_path = settings.report_dir / HTML_REPORT
    write_atomically(json_path, json.dumps(data, indent=1, allow_nan=False) + "\n")
    write_atomically(html_path, render_html(data))
    return [json_path, html_path]
