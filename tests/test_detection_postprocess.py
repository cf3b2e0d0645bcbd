"""YOLO output decoding and NMS in numpy against ultralytics and torchvision on random boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from ultralytics.utils.nms import non_max_suppression

from services.common.model_checks import check_output_shape
from services.detector.postprocess import (
    batched_nms,
    decode_predictions,
    nms,
    postprocess,
    xywh_to_xyxy,
)
from tests.detection_models import detection_metadata


def random_output(
    rng: np.random.Generator, num_classes: int, anchors: int, size: float = 640.0
) -> np.ndarray:
    """Return a raw (4 + num_classes, anchors) output with overlapping boxes and skewed scores."""
    output = np.empty((4 + num_classes, anchors), dtype=np.float32)
    output[0] = rng.uniform(0, size, anchors)
    output[1] = rng.uniform(0, size, anchors)
    output[2] = rng.uniform(1, size / 3, anchors)
    output[3] = rng.uniform(1, size / 3, anchors)
    output[4:] = rng.uniform(0, 1, (num_classes, anchors)) ** 3
    return output


def random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    corners = rng.uniform(0, 300, (count, 2))
    sizes = rng.uniform(1, 120, (count, 2))
    return np.concatenate([corners, corners + sizes], axis=1).astype(np.float32)


@pytest.mark.parametrize("seed", range(40))
def test_postprocess_matches_ultralytics(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(1, 12))
    output = random_output(rng, num_classes, int(rng.integers(1, 4000)))
    conf = float(rng.uniform(0.05, 0.6))
    iou = float(rng.uniform(0.2, 0.8))
    agnostic = bool(seed % 2)
    classes = None if seed % 3 else sorted({int(c) for c in rng.integers(0, num_classes, 3)})
    max_det = int(rng.integers(1, 400))

    (expected,) = non_max_suppression(
        torch.from_numpy(output[np.newaxis]),
        conf,
        iou,
        classes=classes,
        agnostic=agnostic,
        max_det=max_det,
    )
    expected = expected.numpy()
    actual = postprocess(
        output,
        conf_threshold=conf,
        iou_threshold=iou,
        max_det=max_det,
        classes=classes,
        agnostic=agnostic,
    )

    assert len(actual) == len(expected)
    assert np.array_equal(actual.boxes, expected[:, :4])
    assert np.array_equal(actual.scores, expected[:, 4])
    assert np.array_equal(actual.class_ids, expected[:, 5].astype(np.int64))


def test_postprocess_matches_ultralytics_with_max_nms() -> None:
    rng = np.random.default_rng(7)
    output = random_output(rng, 3, 3000)
    (expected,) = non_max_suppression(
        torch.from_numpy(output[np.newaxis]), 0.01, 0.5, max_det=300, max_nms=200
    )

    actual = postprocess(output, conf_threshold=0.01, iou_threshold=0.5, max_det=300, max_nms=200)

    assert np.array_equal(actual.boxes, expected.numpy()[:, :4])


@pytest.mark.parametrize("seed", range(20))
def test_nms_matches_torchvision(seed: int) -> None:
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, int(rng.integers(1, 500)))
    scores = rng.uniform(0, 1, len(boxes)).astype(np.float32)
    iou = float(rng.uniform(0.1, 0.9))

    expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou)

    assert np.array_equal(nms(boxes, scores, iou), expected.numpy())


@pytest.mark.parametrize("seed", range(20))
def test_batched_nms_matches_torchvision(seed: int) -> None:
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, int(rng.integers(1, 500)))
    scores = rng.uniform(0, 1, len(boxes)).astype(np.float32)
    class_ids = rng.integers(0, 5, len(boxes))
    iou = float(rng.uniform(0.1, 0.9))

    expected = torchvision.ops.batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(class_ids), iou
    )

    actual = batched_nms(boxes, scores, class_ids, iou)
    assert np.array_equal(actual, expected.numpy())


def test_agnostic_nms_suppresses_across_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10]], dtype=np.float32)
    scores = np.array([0.9, 0.8], dtype=np.float32)
    class_ids = np.array([0, 1])

    assert batched_nms(boxes, scores, class_ids, 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, class_ids, 0.5, agnostic=True).tolist() == [0]


def test_nms_keeps_iou_equal_to_threshold() -> None:
    # IoU of these two boxes is exactly 0.5, and only a greater IoU suppresses.
    boxes = np.array([[0, 0, 2, 1], [0, 0, 1, 1]], dtype=np.float32)
    scores = np.array([0.9, 0.8], dtype=np.float32)

    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]


def test_nms_equal_scores_keep_input_order() -> None:
    boxes = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], dtype=np.float32)
    scores = np.full(3, 0.5, dtype=np.float32)

    assert nms(boxes, scores, 0.5).tolist() == [0, 1, 2]


def test_decode_keeps_scores_strictly_above_threshold() -> None:
    output = np.zeros((6, 3), dtype=np.float32)
    output[:4] = [[10, 20, 30], [10, 20, 30], [4, 4, 4], [2, 2, 2]]
    output[4] = [0.25, 0.26, 0.1]
    output[5] = [0.1, 0.1, 0.9]

    candidates = decode_predictions(output, conf_threshold=0.25)

    assert candidates.scores.tolist() == pytest.approx([0.26, 0.9])
    assert candidates.class_ids.tolist() == [0, 1]
    assert candidates.boxes.tolist() == [[18, 19, 22, 21], [28, 29, 32, 31]]


def test_decode_filters_by_best_class() -> None:
    output = np.zeros((6, 2), dtype=np.float32)
    output[4] = [0.9, 0.6]
    output[5] = [0.8, 0.7]

    candidates = decode_predictions(output, conf_threshold=0.5, classes=[1])

    # The first anchor's best class is 0, so the class filter drops it even
    # though its class-1 score passes the threshold, as in ultralytics.
    assert candidates.class_ids.tolist() == [1]
    assert candidates.scores.tolist() == pytest.approx([0.7])


def test_postprocess_without_candidates_is_empty() -> None:
    output = np.zeros((7, 100), dtype=np.float32)

    result = postprocess(output, conf_threshold=0.25, iou_threshold=0.45, max_det=300)

    assert len(result) == 0
    assert result.boxes.shape == (0, 4)


def test_max_det_keeps_highest_scores() -> None:
    output = random_output(np.random.default_rng(3), 2, 500)

    full = postprocess(output, conf_threshold=0.1, iou_threshold=0.45, max_det=300)
    capped = postprocess(output, conf_threshold=0.1, iou_threshold=0.45, max_det=5)

    assert len(capped) == 5
    assert np.array_equal(capped.scores, full.scores[:5])


def test_decode_rejects_batched_output() -> None:
    with pytest.raises(ValueError, match="anchors"):
        decode_predictions(np.zeros((1, 7, 10), dtype=np.float32), conf_threshold=0.25)


def test_xywh_to_xyxy() -> None:
    boxes = np.array([[10.0, 20.0, 4.0, 6.0]])

    assert xywh_to_xyxy(boxes).tolist() == [[8.0, 17.0, 12.0, 23.0]]


def test_output_shape_check_for_detectors() -> None:
    metadata = detection_metadata("digits", [str(digit) for digit in range(10)], 320)

    assert check_output_shape((1, 14, 2100), metadata) is None
    wrong_classes = check_output_shape((1, 84, 2100), metadata)
    assert wrong_classes is not None
    assert "(1, 14, anchors)" in wrong_classes
    end_to_end = check_output_shape((1, 300, 6), metadata)
    assert end_to_end is not None
    assert "end-to-end" in end_to_end
