"""Counting found digits and wrong boxes in the detection demo."""

from __future__ import annotations

from typing import Any

from scripts.detection_samples import count_found, count_wrong_boxes

TRUTH = [("3", [10.0, 10.0, 30.0, 40.0]), ("7", [50.0, 10.0, 70.0, 40.0])]


def detection(label: str, x1: float, y1: float, x2: float, y2: float) -> dict[str, Any]:
    return {"label": label, "box": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}}


def test_exact_boxes_are_all_right() -> None:
    detections = [detection("3", 10, 10, 30, 40), detection("7", 50, 10, 70, 40)]
    assert count_found(TRUTH, detections) == 2
    assert count_wrong_boxes(TRUTH, detections) == 0


def test_second_box_on_one_digit_is_wrong() -> None:
    detections = [detection("3", 10, 10, 30, 40), detection("3", 11, 10, 30, 39)]
    assert count_found(TRUTH, detections) == 1
    assert count_wrong_boxes(TRUTH, detections) == 1


def test_wrong_label_on_digit_is_wrong() -> None:
    detections = [detection("7", 10, 10, 30, 40), detection("3", 10, 10, 30, 40)]
    assert count_found(TRUTH, detections) == 1
    assert count_wrong_boxes(TRUTH, detections) == 1


def test_box_on_background_is_wrong() -> None:
    assert count_wrong_boxes(TRUTH, [detection("1", 80, 50, 90, 60)]) == 1
