"""A portrait JPEG with EXIF orientation 6 for the demo, and its expected boxes.

The scene is rendered upright (as the user should see it) from test-pool
digits. The file stores its pixels turned 90 degrees counter-clockwise and
the tag Orientation=6 ("rotate 90 degrees clockwise to display"), as a phone
held upright does. A viewer or decoder that applies EXIF shows the upright
scene, and the expected boxes are given in that upright view. A service that
ignored the tag would see the digits lying on their side and miss them.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from training.detection.metrics import Detections, box_iou
from training.detection.onnx_predict import NmsSettings, OnnxDetector
from training.detection.samples import SAMPLES_DIRNAME, add_sample, prediction_entries, sample_entry
from training.detection.scenes import Scene, SceneOptions, render_scene

logger = logging.getLogger(__name__)

PORTRAIT_FILE = "portrait_exif6.jpg"
EXIF_ORIENTATION = 0x0112
ROTATE_CLOCKWISE_TO_DISPLAY = 6
# A candidate counts as fully detected when every digit has a prediction of
# its class with at least this IoU, and there are no other predictions.
MATCH_IOU = 0.5
MAX_CANDIDATES = 20


@dataclass(frozen=True)
class PortraitSample:
    path: Path
    scene: Scene
    detections: Detections
    fully_detected: bool
    candidate: int


def encode_exif6_jpeg(upright: np.ndarray) -> bytes:
    """Return JPEG bytes whose stored pixels are `upright` turned 90 degrees counter-clockwise."""
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_CLOCKWISE_TO_DISPLAY
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, subsampling=0, exif=exif.tobytes())
    data = buffer.getvalue()
    displayed = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if displayed.size != (upright.shape[1], upright.shape[0]):
        raise RuntimeError(f"EXIF orientation 6 displays as {displayed.size}, not upright")
    return data


def fully_detected(scene: Scene, detections: Detections) -> bool:
    if len(detections.scores) != len(scene.digits):
        return False
    if not scene.digits:
        return True
    truth = np.asarray([digit.box for digit in scene.digits], dtype=np.float64)
    classes = np.asarray([digit.label for digit in scene.digits])
    iou = box_iou(truth, detections.boxes) * (classes[:, None] == detections.classes[None, :])
    return bool((iou.max(axis=1) >= MATCH_IOU).all())


def write_portrait(
    version_dir: Path,
    detector: OnnxDetector,
    settings: NmsSettings,
    *,
    names: list[str],
    pool: np.ndarray,
    options: SceneOptions,
    seed: int,
) -> PortraitSample:
    """Write samples/portrait_exif6.jpg and its index entry.

    Tries up to MAX_CANDIDATES scenes and keeps the first the model detects
    fully, so that the demo can check every digit; if none is, it keeps the
    last candidate and records `fully_detected: false`.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = version_dir / SAMPLES_DIRNAME / PORTRAIT_FILE
    path.parent.mkdir(exist_ok=True)
    sample = None
    for candidate in range(MAX_CANDIDATES):
        rng = np.random.default_rng([seed, 99, candidate])
        scene = render_scene(rng, digits.images, digits.target, pool, options)
        path.write_bytes(encode_exif6_jpeg(scene.image))
        (detections,) = detector.predict_files([path], settings)
        sample = PortraitSample(
            path, scene, detections, fully_detected(scene, detections), candidate
        )
        if sample.fully_detected:
            break
    if sample is None:
        raise ValueError("MAX_CANDIDATES must be positive")
    if not sample.fully_detected:
        logger.warning(
            "no portrait candidate was fully detected; kept candidate %d", sample.candidate
        )
    truth: list[dict[str, Any]] = [
        {"label": names[digit.label], "box": [float(v) for v in digit.box]}
        for digit in sample.scene.digits
    ]
    entry = sample_entry(
        path,
        file=PORTRAIT_FILE,
        truth=truth,
        detections=sample.detections,
        names=names,
        source=f"rendered from test-pool digits, candidate {sample.candidate} of seed {seed}",
        exif_orientation=ROTATE_CLOCKWISE_TO_DISPLAY,
    )
    entry["fully_detected"] = sample.fully_detected
    entry["predictions"] = prediction_entries(sample.detections, names)
    add_sample(version_dir, entry, settings)
    return sample
