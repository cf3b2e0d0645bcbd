"""Mapping of failed backend calls onto the errors the gateway returns.

Every backend (classifier, detector) shares these rules:

- connection refused or failed, connect timeout: 503 `service_unavailable`
- no free pooled connection within the pool timeout: 503 `service_unavailable`
- read or write timeout: 504 `upstream_timeout`
- 4xx from the backend: the backend's status, code and message, unchanged
- 503 from the backend: 503 `service_unavailable`
- connection dropped mid-response, 3xx, any other 5xx, or a 2xx body that is not
  JSON: 502 `bad_gateway` with a generic message, and the details in the log
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from services.common.errors import ServiceError, ServiceUnavailable, UpstreamTimeout

logger = logging.getLogger(__name__)

# Backend response headers that a client needs in order to retry correctly.
PASSED_THROUGH_HEADERS = ("Retry-After",)
MAX_LOGGED_MESSAGE_CHARS = 300


class BadGateway(ServiceError):
    status_code = 502
    code = "bad_gateway"


class BackendRejected(ServiceError):
    """A 4xx response of a backend, passed to the client with its status, code and message."""

    def __init__(
        self, status_code: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, headers=headers)
        self.status_code = status_code
        self.code = code


@dataclass(frozen=True)
class BackendFailure:
    """The error to return for a failed backend call, and its `kind` label for metrics."""

    kind: str
    error: ServiceError


def transport_failure(
    backend: str, base_url: str, error: httpx.TransportError, request: httpx.Request
) -> BackendFailure:
    """Map an httpx transport error (no complete response) onto a 502, 503 or 504."""
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        message = f"{backend} service unavailable at {base_url} ({describe(error)}); retry later"
        return BackendFailure("unavailable", ServiceUnavailable(message))
    if isinstance(error, httpx.PoolTimeout):
        message = (
            f"the gateway has no free connection to the {backend} service within "
            f"{_timeout_of(request, 'pool')} s because too many requests are in flight; "
            "retry later"
        )
        return BackendFailure("pool_timeout", ServiceUnavailable(message))
    if isinstance(error, httpx.WriteTimeout):
        message = (
            f"{backend} service did not accept the request within "
            f"{_timeout_of(request, 'write')} s; retry later"
        )
        return BackendFailure("timeout", UpstreamTimeout(message))
    if isinstance(error, httpx.TimeoutException):
        message = (
            f"{backend} service did not respond within {_timeout_of(request, 'read')} s; "
            "retry later"
        )
        return BackendFailure("timeout", UpstreamTimeout(message))

    logger.error(
        "connection to the %s service failed mid-request: %s",
        backend,
        describe(error),
        extra={"backend": backend, "url": str(request.url.copy_with(query=None))},
    )
    message = f"{backend} service closed the connection unexpectedly; retry later"
    return BackendFailure("connection_error", BadGateway(message))


def error_response_failure(backend: str, base_url: str, response: httpx.Response) -> BackendFailure:
    """Map a backend response with a status outside 2xx onto the error for the client."""
    status = response.status_code
    if 400 <= status < 500:
        return BackendFailure("client_error", _rejection(backend, response))

    logger.error(
        "%s service returned status %d: %s",
        backend,
        status,
        _error_summary(response),
        extra={"backend": backend, "backend_status": status},
    )
    if status == 503:
        message = f"{backend} service unavailable at {base_url} (it returned 503); retry later"
        error: ServiceError = ServiceUnavailable(message, headers=_passed_through_headers(response))
        return BackendFailure("server_error", error)
    message = f"{backend} service failed with status {status}; retry later"
    return BackendFailure("server_error", BadGateway(message))


def invalid_body_failure(backend: str, response: httpx.Response) -> BackendFailure:
    """Describe a 2xx response whose body is not JSON."""
    logger.error(
        "%s service returned status %d with a body that is not JSON (content type %r, %d bytes)",
        backend,
        response.status_code,
        response.headers.get("content-type"),
        len(response.content),
        extra={"backend": backend},
    )
    message = f"{backend} service returned an invalid response"
    return BackendFailure("invalid_response", BadGateway(message))


def describe(error: Exception) -> str:
    return str(error) or type(error).__name__


def _rejection(backend: str, response: httpx.Response) -> BackendRejected:
    code = "backend_rejected"
    message = f"{backend} service rejected the request with status {response.status_code}"
    error = _error_object(response)
    if error is not None:
        code = str(error.get("code", code))
        message = str(error.get("message", message))
    return BackendRejected(
        response.status_code, code, message, headers=_passed_through_headers(response)
    )


def _timeout_of(request: httpx.Request, phase: str) -> object:
    return request.extensions.get("timeout", {}).get(phase)


def _passed_through_headers(response: httpx.Response) -> dict[str, str]:
    return {
        name: response.headers[name] for name in PASSED_THROUGH_HEADERS if name in response.headers
    }


def _error_object(response: httpx.Response) -> dict[str, Any] | None:
    """Return the `error` object of a common error body, or None for any other body."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    return None


def _error_summary(response: httpx.Response) -> str:
    error = _error_object(response)
    if error is None:
        return f"body is not the common error body ({len(response.content)} bytes)"
    summary = f"{error.get('code')}: {error.get('message')}"
    return summary[:MAX_LOGGED_MESSAGE_CHARS]
