"""Decoding and non-maximum suppression of YOLO detection outputs, in numpy.

The raw ONNX output of ultralytics YOLOv8, YOLO11 and YOLOv5u detectors
(exported with `nms=False`) has the shape (batch, 4 + num_classes, anchors).
For each anchor the first four rows are the box centre x, centre y, width and
height in model-input pixels, and the remaining rows are per-class scores
that the exported graph has already passed through a sigmoid.

`postprocess` follows `ultralytics.utils.nms.non_max_suppression` (ultralytics
8.4, `multi_label=False`). It keeps the anchors whose best class score is above
`conf_threshold`, takes that best class and filters by `classes`. Then it keeps
at most `max_nms` candidates by score and runs NMS with each class shifted by
`max_wh` pixels, so that boxes of different classes never overlap. The first
`max_det` survivors are the result. Like ultralytics, it computes in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Ultralytics' defaults for the same arguments.
MAX_NMS = 30_000
MAX_WH = 7680
BOX_ROWS = 4


@dataclass(frozen=True)
class Detections:
    """Detections of one image, highest score first.

    `boxes` is (K, 4) float32 xyxy in model-input pixels, `scores` (K,) float32
    and `class_ids` (K,) int64.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            boxes=np.zeros((0, 4), dtype=np.float32),
            scores=np.zeros(0, dtype=np.float32),
            class_ids=np.zeros(0, dtype=np.int64),
        )

    def take(self, indices: np.ndarray) -> Detections:
        return Detections(self.boxes[indices], self.scores[indices], self.class_ids[indices])


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """Convert (N, 4) centre-x, centre-y, width, height boxes to corner coordinates."""
    half = boxes[:, 2:4] / 2
    return np.concatenate([boxes[:, 0:2] - half, boxes[:, 0:2] + half], axis=1)


def decode_predictions(
    output: np.ndarray,
    *,
    conf_threshold: float,
    classes: Sequence[int] | None = None,
) -> Detections:
    """Turn one image's raw output of shape (4 + num_classes, anchors) into scored candidates.

    Each anchor keeps its best class only, and only when that class's score
    is strictly above `conf_threshold`. With `classes`, anchors whose best
    class is not listed are dropped too. The candidates are in anchor order.
    """
    if output.ndim != 2 or output.shape[0] <= BOX_ROWS:
        raise ValueError(
            f"expected one image's output of shape (4 + num_classes, anchors), got {output.shape}"
        )
    predictions = output.astype(np.float32, copy=False)
    class_scores = predictions[BOX_ROWS:]
    best_class = np.argmax(class_scores, axis=0)
    best_score = class_scores[best_class, np.arange(class_scores.shape[1])]

    keep = best_score > conf_threshold
    if classes is not None:
        keep &= np.isin(best_class, np.asarray(classes, dtype=np.int64))
    candidates = np.flatnonzero(keep)
    boxes = xywh_to_xyxy(predictions[:BOX_ROWS, candidates].T)
    return Detections(
        boxes=boxes.astype(np.float32, copy=False),
        scores=best_score[candidates],
        class_ids=best_class[candidates].astype(np.int64),
    )


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Return the IoU of one xyxy box with each of (N, 4) xyxy boxes, in the boxes' dtype."""
    width = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(min=0)
    height = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(min=0)
    intersection = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        # A zero union (two empty boxes) gives NaN, which suppresses nothing,
        # as in torchvision's kernel.
        return intersection / (area + areas - intersection)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Return the indices of the boxes greedy NMS keeps, highest score first.

    A box is suppressed when its IoU with a kept, higher-scoring box is
    strictly greater than `iou_threshold`, as in `torchvision.ops.nms`.
    Equal scores keep their input order.
    """
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    while order.size:
        current = int(order[0])
        kept.append(current)
        rest = order[1:]
        order = rest[~(box_iou(boxes[current], boxes[rest]) > iou_threshold)]
    return np.asarray(kept, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    *,
    agnostic: bool = False,
    max_wh: float = MAX_WH,
) -> np.ndarray:
    """Run NMS within each class (or across classes when `agnostic`) and return kept indices.

    Boxes of class c are shifted by c * `max_wh` pixels on both axes first, so
    one NMS pass never compares two classes. This is ultralytics' trick, and
    it assumes every box lies within `max_wh` pixels of the origin.
    """
    if agnostic:
        return nms(boxes, scores, iou_threshold)
    offsets = (class_ids.astype(np.float32) * np.float32(max_wh))[:, None]
    return nms(boxes + offsets, scores, iou_threshold)


def postprocess(
    output: np.ndarray,
    *,
    conf_threshold: float,
    iou_threshold: float,
    max_det: int,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    max_nms: int = MAX_NMS,
) -> Detections:
    """Decode one image's raw output (4 + num_classes, anchors) into its final detections."""
    candidates = decode_predictions(output, conf_threshold=conf_threshold, classes=classes)
    if len(candidates) > max_nms:
        candidates = candidates.take(np.argsort(-candidates.scores, kind="stable")[:max_nms])
    if not len(candidates):
        return Detections.empty()
    kept = batched_nms(
        candidates.boxes,
        candidates.scores,
        candidates.class_ids,
        iou_threshold,
        agnostic=agnostic,
    )
    return candidates.take(kept[:max_det])
