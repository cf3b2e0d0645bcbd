"""Detection metrics: matching at IoU 0.50:0.95, per-class AP, mAP50 and mAP50-95.

The definitions follow ultralytics 8.4 (`DetectionValidator.match_predictions`
and `ap_per_class`), so that our numbers and `yolo val` differ only where the
predictions differ:

- Per image, detections are visited by descending confidence. Separately for
  each IoU threshold, each detection claims the unclaimed ground-truth box of
  its class with the highest IoU, and it is a true positive when that IoU is
  at least the threshold. pycocotools visits detections in the same order.
- AP is the trapezoidal integral, over 101 recall points 0, 0.01, ..., 1, of
  the precision envelope interpolated linearly, with precision 0 beyond the
  highest recall reached. pycocotools instead averages the envelope's step
  values at those 101 points. Perfect detections score 0.995 here, because
  the last trapezoid spans recall 0.99 to 1.0 and precision drops to 0 at 1.0.
- Only classes with at least one ground-truth box count towards the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
# Resolution of the precision-recall curves kept for plotting.
CURVE_POINTS = 1000


@dataclass(frozen=True)
class Detections:
    """Boxes (N, 4) xyxy in pixels of the original image, scores (N,), class ids (N,)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class GroundTruth:
    """Boxes (M, 4) xyxy in pixels of the original image and class ids (M,)."""

    boxes: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class DetectionMetrics:
    """mAP over the classes present in the ground truth, and per-class values (NaN if absent)."""

    map50: float
    map50_95: float
    ap50: np.ndarray  # (num_classes,)
    ap50_95: np.ndarray  # (num_classes,)
    ground_truth_counts: np.ndarray  # (num_classes,)
    detection_count: int
    recall_grid: np.ndarray  # (CURVE_POINTS,)
    precision_at_iou50: np.ndarray  # (num_classes, CURVE_POINTS), precision envelope at IoU 0.5


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Return the IoU matrix (len(first), len(second)) of two sets of xyxy boxes."""
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0.0, None).prod(axis=2)
    area_first = (first[:, 2:] - first[:, :2]).prod(axis=1)
    area_second = (second[:, 2:] - second[:, :2]).prod(axis=1)
    union = area_first[:, None] + area_second[None, :] - intersection
    # The epsilon keeps degenerate (zero-area) boxes from dividing by zero.
    return intersection / (union + 1e-7)


def match_image(detections: Detections, truth: GroundTruth) -> np.ndarray:
    """Return (N, 10) booleans: detection n is a true positive at IoU threshold t."""
    correct = np.zeros((len(detections.scores), len(IOU_THRESHOLDS)), dtype=bool)
    if len(detections.scores) == 0 or len(truth.classes) == 0:
        return correct
    iou = box_iou(truth.boxes, detections.boxes)
    iou *= truth.classes[:, None] == detections.classes[None, :]
    claimed = np.zeros((len(truth.classes), len(IOU_THRESHOLDS)), dtype=bool)
    thresholds = np.arange(len(IOU_THRESHOLDS))
    for detection in np.argsort(-detections.scores, kind="stable"):
        available = np.where(claimed, 0.0, iou[:, detection, None])
        best = available.argmax(axis=0)
        correct[detection] = available[best, thresholds] >= IOU_THRESHOLDS
        claimed[best, thresholds] |= correct[detection]
    return correct


def precision_envelope(recall: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return recall and monotone precision with the end points AP integrates over."""
    last_recall = recall[-1] if len(recall) else 1.0
    padded_recall = np.concatenate(([0.0], recall, [last_recall], [1.0]))
    padded_precision = np.concatenate(([1.0], precision, [0.0], [0.0]))
    envelope = np.flip(np.maximum.accumulate(np.flip(padded_precision)))
    return padded_recall, envelope


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Return AP of one class at one IoU threshold (101-point trapezoid, see the module doc)."""
    padded_recall, envelope = precision_envelope(recall, precision)
    interpolated = np.interp(RECALL_POINTS, padded_recall, envelope)
    return float(np.trapezoid(interpolated, RECALL_POINTS))


def compute_metrics(
    detections: Sequence[Detections], truths: Sequence[GroundTruth], num_classes: int
) -> DetectionMetrics:
    """Match every image, then compute AP per class and IoU threshold over the whole set."""
    if len(detections) != len(truths):
        raise ValueError(f"got detections for {len(detections)} images but {len(truths)} truths")
    correct = np.concatenate([match_image(d, t) for d, t in zip(detections, truths, strict=True)])
    scores = np.concatenate([d.scores for d in detections]).astype(np.float64)
    predicted = np.concatenate([d.classes for d in detections]).astype(np.int64)
    true_classes = np.concatenate([t.classes for t in truths]).astype(np.int64)
    if true_classes.size and (true_classes.min() < 0 or true_classes.max() >= num_classes):
        raise ValueError(f"ground-truth class ids must be in [0, {num_classes})")

    order = np.argsort(-scores, kind="stable")
    correct, predicted = correct[order], predicted[order]
    counts = np.bincount(true_classes, minlength=num_classes)
    ap = np.full((num_classes, len(IOU_THRESHOLDS)), np.nan)
    recall_grid = np.linspace(0.0, 1.0, CURVE_POINTS)
    curves = np.zeros((num_classes, CURVE_POINTS))
    for class_id in np.flatnonzero(counts):
        hits = correct[predicted == class_id].astype(np.float64)
        if len(hits) == 0:
            ap[class_id] = 0.0
            continue
        true_positives = hits.cumsum(axis=0)
        false_positives = (1.0 - hits).cumsum(axis=0)
        recall = true_positives / counts[class_id]
        precision = true_positives / (true_positives + false_positives)
        for column in range(len(IOU_THRESHOLDS)):
            ap[class_id, column] = average_precision(recall[:, column], precision[:, column])
        padded_recall, envelope = precision_envelope(recall[:, 0], precision[:, 0])
        curves[class_id] = np.interp(recall_grid, padded_recall, envelope)

    present = counts > 0
    return DetectionMetrics(
        map50=float(ap[present, 0].mean()) if present.any() else 0.0,
        map50_95=float(ap[present].mean()) if present.any() else 0.0,
        ap50=ap[:, 0],
        ap50_95=ap.mean(axis=1),
        ground_truth_counts=counts,
        detection_count=len(scores),
        recall_grid=recall_grid,
        precision_at_iou50=curves,
    )
