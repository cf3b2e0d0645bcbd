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

from services.common.errors import ServiceError
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
        params: Mapping[str, str] | None = None,
    ) -> BackendResponse:
        """Send `content` with its content type and return the backend's 2xx response."""
        headers = {"Content-Type": content_type} if content_type else {}
        response = await self._send("POST", path, content=content, headers=headers, params=params)
        return self._parse_success(response)

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
        params: Mapping[str, str] | None = None,
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

    def _parse_success(self, response: httpx.Response) -> BackendResponse:
        if not 200 <= response.status_code < 300:
            self._raise(error_response_failure(self.name, self.base_url, response))
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
    """Every backend the gateway routes to, one attribute per model service."""

    classifier: Backend

    def all(self) -> list[Backend]:
        return [self.classifier]

    async def aclose(self) -> None:
        for backend in self.all():
            await backend.aclose()
