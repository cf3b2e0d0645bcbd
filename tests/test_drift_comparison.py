"""Comparing detection records with a reference profile: box counts, per-box scores and labels.

The classifier path runs end to end in tests/test_drift_job.py. Here the
detections are drawn at random from set box-count and label distributions,
so each case changes one distribution and expects drift in that feature only.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from monitoring.drift.comparison import compare_version
from monitoring.drift.settings import MonitorSettings
from services.common.imaging import decode_image
from services.common.input_stats import INPUT_FEATURES, InputStats, measure_input
from services.common.prediction_record import PredictionRecord
from services.common.reference_profile import ReferenceProfile, write_reference

MODEL = "boxes"
LABELS = ("cat", "dog", "bird")


@pytest.fixture(scope="module")
def photo_stats() -> InputStats:
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.chelsea()).save(buffer, format="PNG")
    return measure_input(decode_image(buffer.getvalue(), max_pixels=50_000_000))


def detections(
    count: int, mean_boxes: float, seed: int, inputs: InputStats, label_shares: tuple[float, ...]
) -> list[PredictionRecord]:
    """Draw `count` detection records with Poisson box counts and uniform scores in [0.3, 1]."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(count):
        boxes = int(rng.poisson(mean_boxes))
        labels = tuple(str(label) for label in rng.choice(LABELS, size=boxes, p=label_shares))
        scores = tuple(float(score) for score in rng.uniform(0.3, 1.0, size=boxes))
        records.append(
            PredictionRecord(
                timestamp=float(index),
                service="detector",
                model=MODEL,
                version=1,
                task="detection",
                request_id=f"r{index}",
                labels=labels,
                scores=scores,
                inputs=inputs,
            )
        )
    return records


def write_profile(repository: Path, records: list[PredictionRecord]) -> None:
    features = {name: [getattr(r.inputs, name) for r in records] for name in INPUT_FEATURES}
    features["confidence"] = [score for record in records for score in record.scores]
    features["box_count"] = [float(record.box_count) for record in records]
    labels = Counter(label for record in records for label in record.labels)
    total = sum(labels.values())
    profile = ReferenceProfile(
        model=MODEL,
        version=1,
        task="detection",
        source="random detections",
        image_count=len(records),
        features=features,
        label_frequencies={label: count / total for label, count in labels.items()},
    )
    version_dir = repository / MODEL / "1"
    version_dir.mkdir(parents=True)
    write_reference(profile, version_dir)


@pytest.fixture
def settings(tmp_path: Path, photo_stats: InputStats) -> MonitorSettings:
    write_profile(tmp_path, detections(1000, 3.0, 1, photo_stats, (0.5, 0.3, 0.2)))
    return MonitorSettings(model_repository=tmp_path, min_samples=100, report_dir=tmp_path)


def test_same_detections_do_not_drift(settings: MonitorSettings, photo_stats: InputStats) -> None:
    live = detections(300, 3.0, 2, photo_stats, (0.5, 0.3, 0.2))
    result = compare_version("detector", MODEL, 1, live, settings)
    assert result.verdict == "no drift", result.message
    scored = {feature.feature for feature in result.features if feature.scores}
    assert scored == {*INPUT_FEATURES, "confidence", "box_count"}
    confidence = next(f for f in result.features if f.feature == "confidence")
    assert len(confidence.live) == sum(record.box_count for record in live)


def test_more_boxes_drift_box_count(settings: MonitorSettings, photo_stats: InputStats) -> None:
    live = detections(300, 8.0, 2, photo_stats, (0.5, 0.3, 0.2))
    result = compare_version("detector", MODEL, 1, live, settings)
    assert result.verdict == "drift"
    assert result.drifting_features == ["box_count"]


def test_other_labels_drift_predicted_class(
    settings: MonitorSettings, photo_stats: InputStats
) -> None:
    live = detections(300, 3.0, 2, photo_stats, (0.1, 0.1, 0.8))
    result = compare_version("detector", MODEL, 1, live, settings)
    assert result.drifting_features == ["predicted_class"]
    assert result.labels is not None
    assert result.labels.live["bird"] > result.labels.live["cat"]


def test_uncounted_feature_does_not_set_flag(
    settings: MonitorSettings, photo_stats: InputStats
) -> None:
    features = [name for name in settings.drift_features if name != "box_count"]
    without_boxes = settings.model_copy(update={"drift_features": features})
    live = detections(300, 8.0, 2, photo_stats, (0.5, 0.3, 0.2))
    result = compare_version("detector", MODEL, 1, live, without_boxes)
    assert result.verdict == "no drift"
    box_count = next(f for f in result.features if f.feature == "box_count")
    assert box_count.scores[0].exceeded
    assert not box_count.counts_for_drift


def test_images_without_boxes_have_no_confidence(
    settings: MonitorSettings, photo_stats: InputStats
) -> None:
    live = detections(300, 0.0, 2, photo_stats, (0.5, 0.3, 0.2))
    result = compare_version("detector", MODEL, 1, live, settings)
    confidence = next(f for f in result.features if f.feature == "confidence")
    assert confidence.scores == []
    assert "0 live values" in confidence.note
    assert result.labels is not None
    assert result.labels.note == "the live data has no predicted labels"
    assert "box_count" in result.drifting_features


def test_unreadable_reference_is_reported(
    tmp_path: Path, settings: MonitorSettings, photo_stats: InputStats
) -> None:
    live = detections(300, 3.0, 2, photo_stats, (0.5, 0.3, 0.2))
    (tmp_path / MODEL / "2" / "reference.json").mkdir(parents=True)
    result = compare_version("detector", MODEL, 2, live, settings)
    assert result.verdict == "invalid reference"
    assert result.message.startswith("reading ")


def test_invalid_reference_is_reported(
    tmp_path: Path, settings: MonitorSettings, photo_stats: InputStats
) -> None:
    live = detections(300, 3.0, 2, photo_stats, (0.5, 0.3, 0.2))
    version_dir = tmp_path / MODEL / "3"
    version_dir.mkdir(parents=True)
    (version_dir / "reference.json").write_text('{"format": 1}')
    result = compare_version("detector", MODEL, 3, live, settings)
    assert result.verdict == "invalid reference"
    assert "is invalid" in result.message


def test_small_reference_gives_no_score(tmp_path: Path, photo_stats: InputStats) -> None:
    write_profile(tmp_path, detections(60, 3.0, 1, photo_stats, (0.5, 0.3, 0.2)))
    settings = MonitorSettings(model_repository=tmp_path, min_samples=100, report_dir=tmp_path)
    live = detections(300, 8.0, 2, photo_stats, (0.5, 0.3, 0.2))
    result = compare_version("detector", MODEL, 1, live, settings)
    assert result.verdict == "not enough data"
    assert result.message == "the reference has 60 images, need at least 100"
    assert result.features == []


def test_few_reference_boxes_give_no_confidence_score(
    tmp_path: Path, photo_stats: InputStats
) -> None:
    write_profile(tmp_path, detections(200, 0.3, 1, photo_stats, (0.5, 0.3, 0.2)))
    settings = MonitorSettings(model_repository=tmp_path, min_samples=100, report_dir=tmp_path)
    live = detections(300, 0.3, 2, photo_stats, (0.5, 0.3, 0.2))
    result = compare_version("detector", MODEL, 1, live, settings)
    confidence = next(f for f in result.features if f.feature == "confidence")
    assert confidence.scores == []
    assert confidence.note.startswith("not enough data: the reference has")
    assert result.verdict == "no drift"


def test_no_scored_counted_feature_gives_no_verdict(
    settings: MonitorSettings, photo_stats: InputStats
) -> None:
    only_confidence = settings.model_copy(update={"drift_features": ["confidence"]})
    live = detections(300, 0.0, 2, photo_stats, (0.5, 0.3, 0.2))
    result = compare_version("detector", MODEL, 1, live, only_confidence)
    assert result.verdict == "not enough data"
    assert "no feature that sets the drift flag" in result.message


def test_records_of_other_task_are_rejected(
    settings: MonitorSettings, photo_stats: InputStats
) -> None:
    live = [
        PredictionRecord(
            1.0, "detector", MODEL, 1, "classification", "r", ("cat",), (0.9,), photo_stats
        )
    ] * 150
    result = compare_version("detector", MODEL, 1, live, settings)
    assert result.verdict == "invalid reference"
    assert "the reference is for detection" in result.message
