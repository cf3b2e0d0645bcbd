"""OpenAPI descriptions of gateway requests and responses.

The gateway forwards bodies without parsing them, so FastAPI cannot derive these
from the route signatures.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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

IMAGE_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "One image, either as the `file` field of a multipart form or as the raw body "
            "with an image content type such as image/jpeg or image/png."
        ),
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The image."}
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
