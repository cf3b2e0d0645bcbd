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
    400: "Empty body or an image that cannot be decoded (from the classifier).",
    404: "Unknown model (from the classifier).",
    413: "Body larger than the gateway's or the classifier's limit.",
    415: "Body that is not an image, or an unsupported content type.",
    422: "Invalid or unknown query parameter.",
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
            "unchanged, and the classifier decodes it."
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

CLASSIFY_RESPONSE_DESCRIPTION = (
    "The classifier's response, unchanged: `model` (name, version), `predictions` "
    "(label, class_id, probability; most probable first), `image` (width, height) and "
    "`timings_ms` per stage."
)
