"""Results of the detection pipeline, independent of HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.stages import StageTimings


@dataclass(frozen=True)
class Detection:
    """One detected object. The box is xyxy in pixels of the image as the user sees it."""

    label: str
    class_id: int
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class DetectionResult:
    """The detections of one image, highest score first.

    `width` and `height` are the image as the user sees it, after the EXIF orientation.
    """

    model_name: str
    model_version: int
    detections: list[Detection]
    width: int
    height: int
    timings: StageTimings
