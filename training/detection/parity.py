"""Parity of the exported detector with the PyTorch model and ultralytics' predictions.

Two checks run on the same image files. First, the raw head outputs of the
PyTorch model and of ONNX Runtime on the same letterboxed batch must agree
within RAW_BOX_ATOL and RAW_SCORE_ATOL. This check works even for an
untrained model that detects nothing. Second, `model.predict` on the PyTorch
weights and our ONNX path (ONNX Runtime and the serving letterbox, decoding
and NMS) run on the same image files with the same thresholds.

Each image's boxes are matched one to one within a class, greedily by IoU.
Parity holds when every box on both sides has a partner with IoU >= `min_iou`,
except boxes whose score lies within SCORE_MARGIN of the confidence
threshold. Float32 kernels and JPEG decoders differ slightly, so such a box
may fall on either side of the threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.classification.errors import ParityError
from training.detection.metrics import Detections, box_iou
from training.detection.offline import offline_ultralytics
from training.detection.onnx_predict import NmsSettings, OnnxDetector

logger = logging.getLogger(__name__)

DEFAULT_MIN_IOU = 0.95
SCORE_MARGIN = 0.01
# Measured differences are about 1e-4 pixels and 1e-7 in score (float32 on
# CPU), so these leave a wide margin and still catch a wrong operator.
RAW_BOX_ATOL = 0.01
RAW_SCORE_ATOL = 1e-4
RAW_IMAGES = 16


@dataclass(frozen=True)
class ParityResult:
    images: int
    reference_boxes: int
    onnx_boxes: int
    matched: int
    unmatched: int
    near_threshold: int
    min_matched_iou: float
    max_score_difference: float
    min_iou: float
    raw_max_box_difference: float
    raw_max_score_difference: float
    failing_images: list[str]

    @property
    def raw_outputs_agree(self) -> bool:
        return (
            self.raw_max_box_difference <= RAW_BOX_ATOL
            and self.raw_max_score_difference <= RAW_SCORE_ATOL
        )

    @property
    def passed(self) -> bool:
        return self.unmatched == 0 and self.images > 0 and self.raw_outputs_agree

    def as_metrics(self) -> dict[str, Any]:
        values = asdict(self)
        del values["failing_images"]
        return {f"parity_{key}": value for key, value in values.items()}


def ultralytics_predictions(
    weights: Path, paths: Sequence[Path], imgsz: int, settings: NmsSettings
) -> list[Detections]:
    """Return `model.predict` results for each file, in original-image pixels."""
    offline_ultralytics()
    from ultralytics import YOLO

    model: Any = YOLO(str(weights), task="detect")
    results = []
    for path in paths:
        (result,) = model.predict(
            source=str(path),
            imgsz=imgsz,
            conf=settings.conf_threshold,
            iou=settings.iou_threshold,
            max_det=settings.max_det,
            device="cpu",
            verbose=False,
        )
        boxes = result.boxes
        results.append(
            Detections(
                boxes=boxes.xyxy.numpy().astype(np.float64),
                scores=boxes.conf.numpy().astype(np.float64),
                classes=boxes.cls.numpy().astype(np.int64),
            )
        )
    return results


@torch.inference_mode()
def raw_output_differences(
    weights: Path, detector: OnnxDetector, paths: Sequence[Path]
) -> tuple[float, float]:
    """Return the max abs difference of boxes (pixels) and of scores, PyTorch vs ONNX Runtime.

    The first image also runs alone through ONNX Runtime, so that a batch axis
    exported as a constant fails here and not in the service.
    """
    offline_ultralytics()
    from ultralytics import YOLO

    model: Any = YOLO(str(weights), task="detect").model
    model = model.float().eval()
    batch = np.stack([detector.letterboxed(path)[0] for path in paths])
    output = model(torch.from_numpy(batch))
    expected = (output[0] if isinstance(output, list | tuple) else output).numpy()
    actual = detector.raw_outputs(batch)
    alone = detector.raw_outputs(batch[:1])
    box_difference = max(
        float(np.abs(actual[:, :4] - expected[:, :4]).max()),
        float(np.abs(alone[:, :4] - expected[:1, :4]).max()),
    )
    score_difference = max(
        float(np.abs(actual[:, 4:] - expected[:, 4:]).max()),
        float(np.abs(alone[:, 4:] - expected[:1, 4:]).max()),
    )
    return box_difference, score_difference


def match_one_to_one(
    first: Detections, second: Detections, min_iou: float
) -> list[tuple[int, int, float]]:
    """Pair boxes of the same class, highest IoU first; return (i, j, IoU) pairs >= min_iou."""
    if len(first.scores) == 0 or len(second.scores) == 0:
        return []
    iou = box_iou(first.boxes, second.boxes)
    iou *= first.classes[:, None] == second.classes[None, :]
    pairs: list[tuple[int, int, float]] = []
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < min_iou:
            break
        if any(i == a or j == b for a, b, _ in pairs):
            continue
        pairs.append((int(i), int(j), float(iou[i, j])))
    return pairs


def _near_threshold(scores: np.ndarray, settings: NmsSettings) -> np.ndarray:
    return np.abs(scores - settings.conf_threshold) <= SCORE_MARGIN


def compare_predictions(
    paths: Sequence[Path],
    reference: Sequence[Detections],
    ours: Sequence[Detections],
    settings: NmsSettings,
    min_iou: float = DEFAULT_MIN_IOU,
    raw_differences: tuple[float, float] = (0.0, 0.0),
) -> ParityResult:
    """Match each image's boxes and count the ones without a partner (see the module doc)."""
    matched = unmatched = near = 0
    ious: list[float] = []
    score_differences: list[float] = []
    failing: list[str] = []
    for path, expected, actual in zip(paths, reference, ours, strict=True):
        pairs = match_one_to_one(expected, actual, min_iou)
        matched += len(pairs)
        ious.extend(iou for _, _, iou in pairs)
        score_differences.extend(abs(expected.scores[i] - actual.scores[j]) for i, j, _ in pairs)
        image_unmatched = 0
        for detections, side in ((expected, 0), (actual, 1)):
            paired = {pair[side] for pair in pairs}
            alone = np.asarray(
                [k for k in range(len(detections.scores)) if k not in paired], dtype=int
            )
            borderline = (
                _near_threshold(detections.scores[alone], settings) if alone.size else alone
            )
            near += int(np.count_nonzero(borderline))
            image_unmatched += int(alone.size - np.count_nonzero(borderline))
        unmatched += image_unmatched
        if image_unmatched:
            failing.append(path.name)
    return ParityResult(
        images=len(paths),
        reference_boxes=sum(len(d.scores) for d in reference),
        onnx_boxes=sum(len(d.scores) for d in ours),
        matched=matched,
        unmatched=unmatched,
        near_threshold=near,
        min_matched_iou=min(ious) if ious else 1.0,
        max_score_difference=max(score_differences) if score_differences else 0.0,
        min_iou=min_iou,
        raw_max_box_difference=raw_differences[0],
        raw_max_score_difference=raw_differences[1],
        failing_images=failing[:10],
    )


def check_parity(
    weights: Path,
    detector: OnnxDetector,
    paths: Sequence[Path],
    settings: NmsSettings,
    *,
    min_iou: float = DEFAULT_MIN_IOU,
) -> ParityResult:
    """Compare ultralytics and ONNX predictions on `paths`; raise ParityError if they differ."""
    if not paths:
        raise ParityError("the parity check got no images")
    imgsz = detector.spec.height
    raw_differences = raw_output_differences(weights, detector, paths[:RAW_IMAGES])
    reference = ultralytics_predictions(weights, paths, imgsz, settings)
    ours = list(detector.predict_files(paths, settings))
    result = compare_predictions(paths, reference, ours, settings, min_iou, raw_differences)
    logger.info(
        "parity on %d images: raw output max difference %.2g px (boxes), %.2g (scores); "
        "%d ultralytics boxes, %d ONNX boxes, %d matched (min IoU %.4f, "
        "max score difference %.2g), %d unmatched, %d near the threshold",
        result.images,
        result.raw_max_box_difference,
        result.raw_max_score_difference,
        result.reference_boxes,
        result.onnx_boxes,
        result.matched,
        result.min_matched_iou,
        result.max_score_difference,
        result.unmatched,
        result.near_threshold,
    )
    if not result.raw_outputs_agree:
        raise ParityError(
            f"raw outputs of ONNX Runtime and PyTorch differ by up to "
            f"{result.raw_max_box_difference:.3g} px in boxes (tolerance {RAW_BOX_ATOL}) and "
            f"{result.raw_max_score_difference:.3g} in scores (tolerance {RAW_SCORE_ATOL}). "
            f"No model version was written"
        )
    if result.reference_boxes == 0:
        logger.warning(
            "ultralytics found no boxes above conf %.2f on the parity images, so only the raw "
            "outputs were compared",
            settings.conf_threshold,
        )
    if not result.passed:
        raise ParityError(
            f"ONNX and ultralytics predictions differ: {result.unmatched} boxes without a partner "
            f"at IoU >= {min_iou} (images {', '.join(result.failing_images)}). "
            f"No model version was written"
        )
    return result
