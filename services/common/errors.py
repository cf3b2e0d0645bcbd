"""Exceptions that carry their HTTP status, and the one handler that renders them.

Every error response has the body
`{"error": {"code": "...", "message": "..."}, "request_id": "..."}`, except
on the Open Inference Protocol routes under `/v2`, where the protocol fixes
the body as `{"error": "..."}`. Messages of 4xx errors name the problem and
the fix. They never contain the client's payload. 5xx bodies are generic and
the details go to the log.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.logging import current_request_id

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base class: subclasses set `status_code` and a stable machine-readable `code`."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidRequest(ServiceError):
    status_code = 400
    code = "invalid_request"


class EmptyBody(ServiceError):
    status_code = 400
    code = "empty_body"


class CorruptImage(ServiceError):
    status_code = 400
    code = "corrupt_image"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class ModelNotFound(ServiceError):
    status_code = 404
    code = "model_not_found"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class NotAcceptable(ServiceError):
    status_code = 406
    code = "not_acceptable"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidParameter(ServiceError):
    status_code = 422
    code = "invalid_parameter"


class ModelRejected(ServiceError):
    """A new model version failed its checks; the version that was live keeps serving."""

    status_code = 422
    code = "model_rejected"


class TooManyRequests(ServiceError):
    status_code = 429
    code = "rate_limited"


class ServiceUnavailable(ServiceError):
    status_code = 503
    code = "service_unavailable"


class UpstreamTimeout(ServiceError):
    status_code = 504
    code = "upstream_timeout"


INFERENCE_PROTOCOL_PREFIX = "/v2"
INTERNAL_ERROR_MESSAGE = "internal server error; see the service log"


def error_body(code: str, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": message}, "request_id": current_request_id()}


def uses_inference_protocol(path: str) -> bool:
    """Return True for the Open Inference Protocol routes, whose error body the protocol fixes."""
    return path == INFERENCE_PROTOCOL_PREFIX or path.startswith(INFERENCE_PROTOCOL_PREFIX + "/")


def error_response(path: str, exc: ServiceError) -> JSONResponse:
    """Render `exc` in the error body that the route at `path` uses, without logging it."""
    body: dict[str, object]
    if uses_inference_protocol(path):
        body = {"error": exc.message}
    else:
        body = error_body(exc.code, exc.message)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _service_error_response(request: Request, exc: ServiceError) -> JSONResponse:
    if exc.status_code >= 500:
        logger.error(
            "request failed with %s: %s",
            exc.status_code,
            exc.message,
            extra={"path": request.url.path, "status": exc.status_code},
        )
    else:
        logger.info(
            "rejected request: %s",
            exc.message,
            extra={"path": request.url.path, "status": exc.status_code, "code": exc.code},
        )
    return error_response(request.url.path, exc)


def _validation_error_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(item) for item in error.get("loc", ()) if item != "body")
        parts.append(f"{location}: {error.get('msg', 'invalid value')}")
    return "invalid request parameters: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception a route can raise onto the error body that its route uses."""

    @app.exception_handler(ServiceError)
    async def handle_service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _service_error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def handle_validation_error(
        request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        # FastAPI's default echoes the rejected input back; this message names
        # the parameter and the rule only.
        return _service_error_response(request, InvalidParameter(_validation_error_message(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def handle_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        error = ServiceError(str(exc.detail))
        error.status_code = exc.status_code
        error.code = code
        return _service_error_response(request, error)

    @app.exception_handler(Exception)
    async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return error_response(request.url.path, ServiceError(INTERNAL_ERROR_MESSAGE))
