"""Box and tag drawing of /v1/detect/render."""

from __future__ import annotations

import numpy as np
from PIL import Image

from services.detector.render import draw_detections
from services.detector.results import Detection

RED = (255, 56, 56)


def tag_columns(image: Image.Image, row: int) -> np.ndarray:
    """Return the x positions on `row` painted in the first palette colour."""
    pixels = np.asarray(image)[row]
    return np.flatnonzero(np.all(pixels == RED, axis=1))


def test_tag_of_box_at_right_edge_stays_inside() -> None:
    image = Image.new("RGB", (120, 60), (255, 255, 255))
    box = Detection(label="2", class_id=0, score=0.26, x1=112, y1=30, x2=119, y2=50)
    rendered = draw_detections(image, [box])
    columns = tag_columns(rendered, row=25)
    assert columns.size > 0
    assert columns.min() < 112, "the tag was not shifted left of the box"
    assert columns.max() <= 119


def test_tag_starts_at_box_left_edge() -> None:
    image = Image.new("RGB", (120, 60), (255, 255, 255))
    box = Detection(label="2", class_id=0, score=0.26, x1=10, y1=30, x2=40, y2=50)
    columns = tag_columns(draw_detections(image, [box]), row=25)
    assert columns.min() == 10
