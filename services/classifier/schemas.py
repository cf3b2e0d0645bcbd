"""JSON bodies of the classifier's HTTP API, as pydantic models for responses and OpenAPI."""

from __future__ import annotations

from pydantic import BaseModel, Field

from services.classifier.model import BatchClassification, Classification, Prediction
from services.common.schemas import ErrorDetail, ImageSize, ModelRef, TimingsPublic


class PredictionPublic(BaseModel):
    label: str
    class_id: int = Field(description="Index of the label in the model's label list.")
    probability: float = Field(description="Softmax probability over all of the model's labels.")

    @classmethod
    def from_prediction(cls, item: Prediction) -> PredictionPublic:
        return cls(label=item.label, class_id=item.class_id, probability=item.probability)


class ClassificationPublic(BaseModel):
    model: ModelRef
    predictions: list[PredictionPublic] = Field(description="Most probable first.")
    image: ImageSize
    timings_ms: TimingsPublic

    @classmethod
    def from_result(cls, result: Classification) -> ClassificationPublic:
        return cls(
            model=ModelRef(name=result.model_name, version=result.model_version),
            predictions=[PredictionPublic.from_prediction(item) for item in result.predictions],
            image=ImageSize(width=result.width, height=result.height),
            timings_ms=TimingsPublic.from_timings(result.timings),
        )


class BatchEntryPublic(BaseModel):
    """One image of a batch: `predictions` and `image`, or `error` when it was rejected."""

    index: int = Field(description="Position of the image among the request's file fields.")
    predictions: list[PredictionPublic] | None = Field(description="Most probable first.")
    image: ImageSize | None
    error: ErrorDetail | None


class BatchClassificationPublic(BaseModel):
    model: ModelRef
    results: list[BatchEntryPublic] = Field(description="One entry per image, in request order.")
    timings_ms: TimingsPublic = Field(description="Timings of the whole batch.")

    @classmethod
    def from_result(cls, result: BatchClassification) -> BatchClassificationPublic:
        results = []
        for index, entry in enumerate(result.entries):
            if entry.error is not None or entry.predictions is None:
                code = entry.error.code if entry.error else "internal_error"
                message = entry.error.message if entry.error else "the image was not classified"
                error = ErrorDetail(code=code, message=message)
                results.append(
                    BatchEntryPublic(index=index, predictions=None, image=None, error=error)
                )
                continue
            predictions = [PredictionPublic.from_prediction(item) for item in entry.predictions]
            image = ImageSize(width=entry.width, height=entry.height)
            results.append(
                BatchEntryPublic(index=index, predictions=predictions, image=image, error=None)
            )
        return cls(
            model=ModelRef(name=result.model_name, version=result.model_version),
            results=results,
            timings_ms=TimingsPublic.from_timings(result.timings),
        )
