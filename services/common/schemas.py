"""JSON bodies that every model service shares, as pydantic models for responses and OpenAPI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from services.common.repository import LoadedModel, ReloadOutcome
from services.common.stages import StageTimings
from services.common.upload import FILE_FIELD, MULTIPART_CONTENT_TYPE, RAW_CONTENT_TYPES


class ModelRef(BaseModel):
    name: str
    version: int


class ImageSize(BaseModel):
    width: int = Field(description="Width in pixels after the EXIF orientation.")
    height: int = Field(description="Height in pixels after the EXIF orientation.")


class TimingsPublic(BaseModel):
    """Milliseconds per stage. `total` adds the wait for a worker thread."""

    decode: float
    preprocess: float
    inference: float
    postprocess: float
    total: float

    @classmethod
    def from_timings(cls, timings: StageTimings) -> TimingsPublic:
        return cls(
            decode=timings.decode,
            preprocess=timings.preprocess,
            inference=timings.inference,
            postprocess=timings.postprocess,
            total=timings.total,
        )


class ModelPublic(BaseModel):
    name: str
    versions: list[int] = Field(description="Versions found in the repository, ascending.")
    live_version: int = Field(description="The version that serves requests.")
    task: str
    input_shape: list[int] = Field(description="Per-image input: [channels, height, width].")
    num_labels: int
    metrics: dict[str, Any] = Field(description="Evaluation metrics recorded in model.json.")

    @classmethod
    def from_model(cls, model: LoadedModel) -> ModelPublic:
        return cls(
            name=model.name,
            versions=list(model.available_versions),
            live_version=model.version,
            task=model.metadata.task,
            input_shape=list(model.input_shape),
            num_labels=model.metadata.num_classes,
            metrics=model.metadata.metrics,
        )


class ModelsPublic(BaseModel):
    default_model: str | None = Field(description="Model used when a request names none.")
    models: list[ModelPublic]


class ReloadPublic(BaseModel):
    model: str
    previous_version: int | None = Field(description="The version live before; null if none.")
    version: int = Field(description="The version live now.")
    reloaded: bool = Field(description="False when this version was already live.")

    @classmethod
    def from_outcome(cls, outcome: ReloadOutcome) -> ReloadPublic:
        return cls(
            model=outcome.name,
            previous_version=outcome.previous_version,
            version=outcome.version,
            reloaded=outcome.changed,
        )


class Status(BaseModel):
    status: str


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. corrupt_image.")
    message: str


class ErrorPublic(BaseModel):
    error: ErrorDetail
    request_id: str | None


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Return OpenAPI `responses` entries that document the common error body."""
    descriptions = {
        400: "Empty body, malformed form, or truncated or corrupt image.",
        401: "Missing or wrong bearer token.",
        403: "The route is turned off in the service's settings.",
        404: "No model with that name.",
        406: "The Accept header allows none of the response formats.",
        413: "Body larger than max_body_bytes or image larger than max_pixels.",
        415: "Content type or image format not supported.",
        422: "Invalid query parameter, or a new model version that failed its checks.",
        503: "Models are loading or failed to load.",
    }
    return {
        status: {"model": ErrorPublic, "description": descriptions[status]} for status in statuses
    }


_BINARY = {"type": "string", "format": "binary"}

IMAGE_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            f"The image, as a {MULTIPART_CONTENT_TYPE} form with the file field "
            f"{FILE_FIELD!r}, or as the raw body. JPEG, PNG, WebP, BMP, TIFF or GIF."
        ),
        "content": {
            MULTIPART_CONTENT_TYPE: {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {FILE_FIELD: _BINARY},
                }
            },
            **{content_type: {"schema": _BINARY} for content_type in RAW_CONTENT_TYPES},
        },
    }
}

IMAGE_BATCH_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            f"A {MULTIPART_CONTENT_TYPE} form with one file field {FILE_FIELD!r} per image. "
            "JPEG, PNG, WebP, BMP, TIFF or GIF."
        ),
        "content": {
            MULTIPART_CONTENT_TYPE: {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {FILE_FIELD: {"type": "array", "items": _BINARY}},
                }
            },
        },
    }
}
