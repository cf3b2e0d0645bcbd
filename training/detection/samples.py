"""Held-out images in a model version's `samples/` folder, with their expected boxes.

`samples/index.json` lists each image with its ground-truth boxes and what
the exported model predicts for it through the serving code path, both in
pixels of the image as the user sees it (after any EXIF orientation):

    {"conf_threshold": 0.25, "iou_threshold": 0.45,
     "images": [{"file": "test_00000.jpg", "width": 128, "height": 128,
                 "exif_orientation": null, "source": "test split",
                 "truth": [{"label": "3", "box": [x0, y0, x1, y1]}],
                 "predictions": [{"label": "3", "score": 0.91, "box": [...]}]}]}
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.detection.evaluate import ground_truth, oriented_size
from training.detection.metrics import Detections
from training.detection.onnx_predict import NmsSettings, OnnxDetector

SAMPLES_DIRNAME = "samples"
SAMPLES_INDEX = "index.json"


def _box(values: Sequence[float]) -> list[float]:
    return [round(float(value), 2) for value in values]


def truth_entries(image_path: Path, names: Sequence[str]) -> list[dict[str, Any]]:
    truth = ground_truth(image_path)
    return [
        {"label": names[int(c)], "box": _box(box)}
        for c, box in zip(truth.classes, truth.boxes, strict=True)
    ]


def prediction_entries(detections: Detections, names: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"label": names[int(c)], "score": round(float(score), 4), "box": _box(box)}
        for c, score, box in zip(
            detections.classes, detections.scores, detections.boxes, strict=True
        )
    ]


def sample_entry(
    path: Path,
    *,
    file: str,
    truth: list[dict[str, Any]],
    detections: Detections,
    names: Sequence[str],
    source: str,
    exif_orientation: int | None = None,
) -> dict[str, Any]:
    width, height = oriented_size(path)
    return {
        "file": file,
        "width": width,
        "height": height,
        "exif_orientation": exif_orientation,
        "source": source,
        "truth": truth,
        "predictions": prediction_entries(detections, names),
    }


def write_samples(
    version_dir: Path,
    images: Sequence[Path],
    *,
    detector: OnnxDetector,
    settings: NmsSettings,
    names: Sequence[str],
    source: str,
) -> Path:
    """Copy `images` into samples/ unchanged and write index.json; return the index path."""
    samples_dir = version_dir / SAMPLES_DIRNAME
    samples_dir.mkdir(exist_ok=True)
    entries = []
    for path, detections in zip(images, detector.predict_files(images, settings), strict=True):
        shutil.copyfile(path, samples_dir / path.name)
        entries.append(
            sample_entry(
                path,
                file=path.name,
                truth=truth_entries(path, names),
                detections=detections,
                names=names,
                source=source,
            )
        )
    index = {**_empty_index(settings), "images": entries}
    index_path = samples_dir / SAMPLES_INDEX
    index_path.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return index_path


def add_sample(version_dir: Path, entry: dict[str, Any], settings: NmsSettings) -> None:
    """Append one entry to samples/index.json, creating the index if it is missing.

    The image file must be in samples/ already.
    """
    index_path = version_dir / SAMPLES_DIRNAME / SAMPLES_INDEX
    if index_path.exists():
        index = json.loads(index_path.read_text(encoding="utf-8"))
    else:
        index = _empty_index(settings)
    index["images"].append(entry)
    index_path.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")


def _empty_index(settings: NmsSettings) -> dict[str, Any]:
    return {
        "conf_threshold": settings.conf_threshold,
        "iou_threshold": settings.iou_threshold,
        "images": [],
    }
