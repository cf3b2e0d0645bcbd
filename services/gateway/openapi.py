"""OpenAPI descriptions of gateway requests and responses.

The gateway forwards bodies without parsing them, so FastAPI cannot derive these
from the route signatures.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from services.common.upload import FILE_FIELD, MULTIPART_CONTENT_TYPE, RAW_CONTENT_TYPES


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code, such as model_not_found.")
    message: str = Field(description="What failed and what to do next.")


class ErrorResponse(BaseModel):
    """Common error body of every VisionServe service."""

    error: ErrorDetail
    request_id: str | None = Field(description="The X-Request-ID of the request.")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Describe the error statuses a route can return, all with the common error body."""
    return {
        status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


ERROR_DESCRIPTIONS = {
    400: "Empty body or an image that cannot be decoded (from a backend).",
    401: "Missing or unknown key. Send Authorization: Bearer <key> or X-API-Key: <key>.",
    403: "The key may not call this route, or the route is not configured.",
    404: "Unknown model (from a backend).",
    406: "The Accept header allows neither image/jpeg nor image/png (from the detector).",
    413: "Body or image larger than the gateway's or a backend's limit.",
    415: "Body that is not an image, or an unsupported content type.",
    422: "Invalid or unknown query parameter.",
    429: "The client key exceeded its rate limit. Retry after the Retry-After seconds.",
    502: "Backend failed or returned an invalid response. Details are in the gateway log.",
    503: "Backend down, not ready or overloaded. Retry later.",
    504: "Backend did not respond within the gateway's read timeout.",
}

_BINARY = {"type": "string", "format": "binary"}

IMAGE_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            f"One image, either as the {FILE_FIELD!r} field of a {MULTIPART_CONTENT_TYPE} form "
            "or as the raw body with an image content type. The gateway forwards the body "
            "unchanged, and the backend decodes it."
        ),
        "content": {
            MULTIPART_CONTENT_TYPE: {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {FILE_FIELD: {**_BINARY, "description": "The image."}},
                }
            },
            **{content_type: {"schema": _BINARY} for content_type in RAW_CONTENT_TYPES},
        },
    }
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}

# The detection routes forward these parameters to the detector, which
# validates them, so they are described here rather than in the signatures.
DETECTOR_MODEL_PARAMETER = _query(
    "model", {"type": "string"}, "Detector model name. Defaults to the detector's default model."
)
DETECTOR_PARAMETERS = [
    _query("conf", _FRACTION, "Minimum class score, from 0 to 1. Defaults to the model's value."),
    _query("iou", _FRACTION, "NMS IoU threshold, from 0 to 1. Defaults to the model's value."),
    _query(
        "classes",
        {"type": "array", "items": {"type": "string"}},
        "Class ids to keep, comma-separated or repeated. Default: all.",
    ),
    _query(
        "agnostic_nms",
        {"type": "boolean", "default": False},
        "Suppress overlapping boxes across classes too.",
    ),
]
MAX_DET_PARAMETER = _query(
    "max_det",
    {"type": "integer", "minimum": 1},
    "Maximum detections, from 1 to the detector's max_det_limit setting. Defaults to the "
    "model's value.",
)
FORMAT_PARAMETER = _query(
    "format",
    {"type": "string", "enum": ["jpeg", "png"]},
    "Image format of the answer. Without it the Accept header decides, else JPEG.",
)


def with_query_parameters(*parameters: dict[str, Any]) -> dict[str, Any]:
    """Return the `openapi_extra` of an image route that also takes `parameters`."""
    return {**IMAGE_UPLOAD_BODY, "parameters": list(parameters)}


CLASSIFY_RESPONSE_DESCRIPTION = (
    "The classifier's response, unchanged: `model` (name, version), `predictions` "
    "(label, class_id, probability; most probable first), `image` (width, height) and "
    "`timings_ms` per stage."
)

BATCH_RESPONSE_DESCRIPTION = (
    "The classifier's response, unchanged: `model` (name, version), `results` (one entry "
    "per image in request order: `index`, then `predictions` and `image`, or `error` for "
    "an image that was rejected) and `timings_ms` of the whole batch."
)

DETECT_RESPONSE_DESCRIPTION = (
    "The detector's response, unchanged: `model` (name, version), `image` (width, height "
    "after the EXIF orientation), `detections` (label, class_id, score, box with x1, y1, "
    "x2, y2 in pixels of that image; highest score first) and `timings_ms` per stage."
)

RENDER_RESPONSE_DESCRIPTION = (
    "The image in its original size (after the EXIF orientation) with every detection "
    "drawn as a box and a label tag."
)

ANALYZE_RESPONSE_DESCRIPTION = (
    "`detector_model` and `classifier_model` (name, version; the classifier is null when "
    "nothing was detected), `image` (width, height), `objects` (the detector's label, "
    "class_id, score and box, the `crop_box` sent to the classifier, and `classification` "
    "with the classifier's top label, class_id and probability, or `classification_error`) "
    "and `timings_ms` (decode, detect, crop, classify, total)."
)
