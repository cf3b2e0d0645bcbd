"""HTTP transport from the gateway to the model services (backends).

`Backend` wraps one pooled `httpx.AsyncClient` per model service and raises every
failure as a `ServiceError`, following the rules in `services.gateway.backend_errors`,
so routes never handle httpx exceptions. Each call goes through the backend's
circuit breaker and retry policy (`services.gateway.resilience`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx

from services.common.errors import ServiceUnavailable
from services.common.logging import REQUEST_ID_HEADER, current_request_id
from services.gateway.backend_errors import (
    BackendFailure,
    error_response_failure,
    invalid_body_failure,
    transport_failure,
)
from services.gateway.backend_policy import BackendPolicy
from services.gateway.circuit import CircuitBreaker, CircuitState
from services.gateway.metrics import GatewayMetrics
from services.gateway.resilience import CallFailed, ResilientCaller


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
        policy: BackendPolicy,
        limits: httpx.Limits,
        metrics: GatewayMetrics,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self._metrics = metrics
        # trust_env=False: a proxy set in HTTP_PROXY for outbound traffic must not
        # capture calls to internal backends.
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=policy.timeout, limits=limits, trust_env=False
        )
        state_gauge = metrics.circuit_state.labels(metrics.service, name)

        def show_state(state: CircuitState) -> None:
            state_gauge.set(int(state))

        self._caller = ResilientCaller(
            name,
            base_url,
            self._client.send,
            retry=policy.retry,
            circuit=CircuitBreaker(name, policy.circuit, on_state_change=show_state),
            metrics=metrics,
        )

    @property
    def circuit_state(self) -> CircuitState:
        return self._caller.circuit.state

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
        idempotent: bool = False,
    ) -> BackendResponse:
        """Send `content` with its content type and return the backend's 2xx response.

        Only a call with `idempotent` set is retried. Leave it unset for calls
        that change the backend's state, such as a model reload.
        """
        headers = {"Content-Type": content_type} if content_type else {}
        headers.update(extra_headers or {})
        response = await self._send(
            "POST", path, content=content, headers=headers, params=params, idempotent=idempotent
        )
        return self._parse_success(response)

    async def post_files(
        self,
        path: str,
        *,
        field: str,
        files: list[FilePart],
        params: Mapping[str, str] | None = None,
        idempotent: bool = False,
    ) -> BackendResponse:
        """Send `files` as a multipart form, each as the file field `field`."""
        form = httpx.Request(
            "POST",
            self.base_url,
            files=[(field, (part.filename, part.content, part.content_type)) for part in files],
        )
        content = form.read()
        return await self.post(
            path,
            content=content,
            content_type=form.headers["Content-Type"],
            params=params,
            idempotent=idempotent,
        )

    async def post_for_content(
        self,
        path: str,
        *,
        content: bytes,
        content_type: str | None,
        params: Mapping[str, str] | httpx.QueryParams | None = None,
        accept: str | None = None,
        idempotent: bool = False,
    ) -> RawBackendResponse:
        """Send `content` and return the backend's 2xx response body as bytes, unparsed."""
        headers = {"Content-Type": content_type} if content_type else {}
        if accept:
            headers["Accept"] = accept
        response = await self._send(
            "POST", path, content=content, headers=headers, params=params, idempotent=idempotent
        )
        self._check_success(response)
        return RawBackendResponse(
            status_code=response.status_code,
            content=response.content,
            content_type=response.headers.get("content-type", "application/octet-stream"),
        )

    async def get(self, path: str) -> BackendResponse:
        """Send a GET, which HTTP defines as idempotent, and return the backend's 2xx response."""
        return self._parse_success(await self._send("GET", path, idempotent=True))

    async def check_ready(self, timeout_seconds: float) -> str | None:
        """Call the backend's /readyz and return None on 200, else why it is not ready.

        The call bypasses the circuit breaker and is not retried, so that it
        reports the backend's own state each time a probe asks.
        """
        request = self._build_request("GET", "/readyz", timeout=timeout_seconds)
        try:
            response = await self._client.send(request)
        except httpx.TransportError as error:
            return transport_failure(self.name, self.base_url, error, request).error.message
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
        idempotent: bool,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: Mapping[str, str] | httpx.QueryParams | None = None,
    ) -> httpx.Response:
        """Send one request through the circuit breaker and retries, mapping transport failures."""
        request = self._build_request(method, path, content=content, headers=headers, params=params)
        started = time.perf_counter()
        try:
            return await self._caller.call(request, idempotent=idempotent)
        except CallFailed as failed:
            self._raise(failed.failure, failed.__cause__)
        finally:
            elapsed = time.perf_counter() - started
            self._metrics.backend_latency.labels(self._metrics.service, self.name, path).observe(
                elapsed
            )

    def _build_request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: Mapping[str, str] | httpx.QueryParams | None = None,
        timeout: float | None = None,
    ) -> httpx.Request:
        """Build a request; `timeout` replaces every phase of the backend's timeout."""
        return self._client.build_request(
            method,
            path,
            content=content,
            headers={**(headers or {}), **self._request_id_header()},
            params=params,
            timeout=timeout if timeout is not None else self._client.timeout,
        )

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

    def _raise(self, failure: BackendFailure, cause: BaseException | None = None) -> NoReturn:
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
