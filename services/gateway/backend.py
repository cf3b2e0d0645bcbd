"""HTTP transport from the gateway to the model services (backends).

`Backend` wraps one pooled `httpx.AsyncClient` per model service and raises every
failure as a `ServiceError`, following the rules in `services.gateway.backend_errors`,
so routes never handle httpx exceptions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx

from services.common.errors import ServiceError, ServiceUnavailable
from services.common.logging import REQUEST_ID_HEADER, current_request_id
from services.gateway.backend_errors import (
    BackendFailure,
    describe,
    error_response_failure,
    invalid_body_failure,
    transport_failure,
)
from services.gateway.metrics import GatewayMetrics

logger = logging.getLogger(__name__)

# Seconds before retry n is `n * CONNECT_RETRY_BACKOFF_SECONDS`. Short, because a
# refused connection returns at once and the client is waiting.
CONNECT_RETRY_BACKOFF_SECONDS = 0.1


@dataclass(frozen=True)
class BackendResponse:
    """A successful (2xx) backend response with its JSON body parsed."""

    status_code: int
    body: Any


@dataclass(frozen=True)
class RawBackendResponse:
    """A successful (2xx) backend response whose body is passed on unparsed, such as an image."""

    status_code: int
    content: bytes
    content_type: str


@dataclass(frozen=True)
class FilePart:
    """One file field of a multipart form sent to a backend."""

    filename: str
    content: bytes
    content_type: str


class Backend:
    """Pooled HTTP client for one model service, such as the classifier or the detector.

    Create it inside the app's lifespan, because the client binds to the running event
    loop, and close it with `aclose` on shutdown.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout: httpx.Timeout,
        limits: httpx.Limits,
        connect_retries: int,
        metrics: GatewayMetrics,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self._connect_retries = connect_retries
        self._metrics = metrics
        # trust_env=False: a proxy set in HTTP_PROXY for outbound traffic must not
        # capture calls to internal backends.
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, limits=limits, trust_env=False
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(
        self,
        path: str,
        *,
        content: bytes,
        content_type: str | None,
        params: Mapping[str, str] | httpx.QueryParams | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> BackendResponse:
        """Send `content` with its content type and return the backend's 2xx response."""
        headers = {"Content-Type": content_type} if content_type else {}
        headers.update(extra_headers or {})
        response = await self._send("POST", path, content=content, headers=headers, params=params)
        return self._parse_success(response)

    async def post_files(
        self,
        path: str,
        *,
        field: str,
        files: list[FilePart],
        params: Mapping[str, str] | None = None,
    ) -> BackendResponse:
        """Send `files` as a multipart form, each as the file field `field`."""
        form = httpx.Request(
            "POST",
            self.base_url,
            files=[(field, (part.filename, part.content, part.content_type)) for part in files],
        )
        content = form.read()
        return await self.post(
            path, content=content, content_type=form.headers["Content-Type"], params=params
        )

    async def post_for_content(
        self,
        path: str,
        *,
        content: bytes,
        content_type: str | None,
        params: Mapping[str, str] | httpx.QueryParams | None = None,
        accept: str | None = None,
    ) -> RawBackendResponse:
        """Send `content` and return the backend's 2xx response body as bytes, unparsed."""
        headers = {"Content-Type": content_type} if content_type else {}
        if accept:
            headers["Accept"] = accept
        response = await self._send("POST", path, content=content, headers=headers, params=params)
        self._check_success(response)
        return RawBackendResponse(
            status_code=response.status_code,
            content=response.content,
            content_type=response.headers.get("content-type", "application/octet-stream"),
        )

    async def get(self, path: str) -> BackendResponse:
        """Send a GET and return the backend's 2xx response."""
        return self._parse_success(await self._send("GET", path))

    async def check_ready(self, timeout_seconds: float) -> str | None:
        """Call the backend's /readyz and return None on 200, else why it is not ready."""
        try:
            # No retries: the probe that calls the gateway repeats the check anyway.
            response = await self._send("GET", "/readyz", timeout=timeout_seconds, retries=0)
        except ServiceError as error:
            return error.message
        if response.status_code != 200:
            return (
                f"{self.name} service at {self.base_url} returned {response.status_code} on /readyz"
            )
        return None

    async def _send(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: Mapping[str, str] | httpx.QueryParams | None = None,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> httpx.Response:
        """Send one request, retrying failed connections, and map transport failures.

        `timeout` replaces every phase of the client's timeout, and `retries`
        defaults to the backend's `connect_retries`.
        """
        request = self._client.build_request(
            method,
            path,
            content=content,
            headers={**(headers or {}), **self._request_id_header()},
            params=params,
            timeout=timeout if timeout is not None else self._client.timeout,
        )
        started = time.perf_counter()
        try:
            return await self._send_with_retries(
                request, self._connect_retries if retries is None else retries
            )
        except httpx.TransportError as error:
            self._raise(transport_failure(self.name, self.base_url, error, request), error)
        finally:
            elapsed = time.perf_counter() - started
            self._metrics.backend_latency.labels(self._metrics.service, self.name, path).observe(
                elapsed
            )

    async def _send_with_retries(self, request: httpx.Request, retries: int) -> httpx.Response:
        # Only ConnectError is retried: the backend has received nothing, so even a
        # POST is safe to repeat. A ConnectTimeout is not retried because it has
        # already spent the whole connect timeout.
        for attempt in range(1, retries + 1):
            try:
                return await self._client.send(request)
            except httpx.ConnectError as error:
                logger.warning(
                    "connection to the %s service failed, retrying (%d of %d): %s",
                    self.name,
                    attempt,
                    retries,
                    describe(error),
                    extra={"backend": self.name, "url": str(request.url.copy_with(query=None))},
                )
                await asyncio.sleep(attempt * CONNECT_RETRY_BACKOFF_SECONDS)
        return await self._client.send(request)

    def _check_success(self, response: httpx.Response) -> None:
        if not 200 <= response.status_code < 300:
            self._raise(error_response_failure(self.name, self.base_url, response))

    def _parse_success(self, response: httpx.Response) -> BackendResponse:
        self._check_success(response)
        try:
            body = response.json()
        except ValueError as error:
            self._raise(invalid_body_failure(self.name, response), error)
        return BackendResponse(status_code=response.status_code, body=body)

    def _raise(self, failure: BackendFailure, cause: Exception | None = None) -> NoReturn:
        self._metrics.backend_errors.labels(self._metrics.service, self.name, failure.kind).inc()
        raise failure.error from cause

    def _request_id_header(self) -> dict[str, str]:
        request_id = current_request_id()
        return {REQUEST_ID_HEADER: request_id} if request_id else {}


@dataclass
class Backends:
    """Every backend the gateway routes to, one attribute per model service.

    `detector` is None when the gateway runs without a detector.
    """

    classifier: Backend
    detector: Backend | None = None

    def all(self) -> list[Backend]:
        return [self.classifier] + ([self.detector] if self.detector else [])

    def require_detector(self) -> Backend:
        """Return the detector backend, or raise ServiceUnavailable (503) when none is set."""
        if self.detector is None:
            raise ServiceUnavailable(
                "this gateway has no detector service; set VS_GATEWAY_DETECTOR_URL to enable "
                "the detection routes"
            )
        return self.detector

    async def aclose(self) -> None:
        for backend in self.all():
            await backend.aclose()
