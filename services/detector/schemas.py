"""JSON bodies of the detector's HTTP API, as pydantic models for responses and OpenAPI."""

from __future__ import annotations

from pydantic import BaseModel, Field

from services.common.schemas import ImageSize, ModelRef, TimingsPublic
from services.detector.results import Detection, DetectionResult


class BoxPublic(BaseModel):
    """Corners in pixels of the image as the user sees it, clipped to the image."""

    x1: float
    y1: float
    x2: float
    y2: float


class DetectionPublic(BaseModel):
    label: str
    class_id: int = Field(description="Index of the label in the model's label list.")
    score: float = Field(description="Class score in [0, 1] of the box's best class.")
    box: BoxPublic

    @classmethod
    def from_detection(cls, item: Detection) -> DetectionPublic:
        box = BoxPublic(x1=item.x1, y1=item.y1, x2=item.x2, y2=item.y2)
        return cls(label=item.label, class_id=item.class_id, score=item.score, box=box)


class DetectionsPublic(BaseModel):
    model: ModelRef
    image: ImageSize
    detections: list[DetectionPublic] = Field(description="Highest score first.")
    timings_ms: TimingsPublic

    @classmethod
    def from_result(cls, result: DetectionResult) -> DetectionsPublic:
        return cls(
            model=ModelRef(name=result.model_name, version=result.model_version),
            image=ImageSize(width=result.width, height=result.height),
            detections=[DetectionPublic.from_detection(item) for item in result.detections],
            timings_ms=TimingsPublic.from_timings(result.timings),
        )
