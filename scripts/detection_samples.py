"""Held-out scenes that the detection exporter saved beside the default detector.

`samples/index.json` in the model version lists each image with its true boxes
in the pixels the user sees (after EXIF orientation). The demo sends the images
through the gateway and matches the returned boxes against those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.digit_samples import newest_version_dir

# A true box counts as found when a box of the same label overlaps it this much.
MATCH_IOU = 0.5


@dataclass(frozen=True)
class SceneSample:
    """One held-out image with its true boxes, as [x1, y1, x2, y2] in displayed pixels."""

    path: Path
    width: int
    height: int
    exif_orientation: int | None
    truth: list[tuple[str, list[float]]]


def load_scene_samples(repository: Path, model: str) -> list[SceneSample]:
    samples_dir = newest_version_dir(repository, model) / "samples"
    index: dict[str, Any] = json.loads((samples_dir / "index.json").read_text(encoding="utf-8"))
    return [
        SceneSample(
            path=samples_dir / entry["file"],
            width=int(entry["width"]),
            height=int(entry["height"]),
            exif_orientation=entry.get("exif_orientation"),
            truth=[(box["label"], [float(v) for v in box["box"]]) for box in entry["truth"]],
        )
        for entry in index["images"]
    ]


def box_iou(first: list[float], second: list[float]) -> float:
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    if width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    area_first = (first[2] - first[0]) * (first[3] - first[1])
    area_second = (second[2] - second[0]) * (second[3] - second[1])
    return intersection / (area_first + area_second - intersection)


def count_found(truth: list[tuple[str, list[float]]], detections: list[dict[str, Any]]) -> int:
    """Count true boxes matched by a detection of the same label with IoU >= MATCH_IOU."""
    found = 0
    for label, true_box in truth:
        for detection in detections:
            box = detection["box"]
            predicted = [box["x1"], box["y1"], box["x2"], box["y2"]]
            if detection["label"] == label and box_iou(true_box, predicted) >= MATCH_IOU:
                found += 1
                break
    return found


def count_wrong_boxes(
    truth: list[tuple[str, list[float]]], detections: list[dict[str, Any]]
) -> int:
    """Count detections that match no true box, each true box matching at most one detection.

    A detection matches a true box of the same label with IoU >= MATCH_IOU. A
    second box on an already matched digit, or a box with the wrong label,
    counts as wrong.
    """
    unmatched = list(truth)
    wrong = 0
    for detection in detections:
        box = detection["box"]
        predicted = [box["x1"], box["y1"], box["x2"], box["y2"]]
        match = next(
            (
                item
                for item in unmatched
                if item[0] == detection["label"] and box_iou(item[1], predicted) >= MATCH_IOU
            ),
            None,
        )
        if match is None:
            wrong += 1
        else:
            unmatched.remove(match)
    return wrong
