"""The attempt loop of a backend call: circuit breaker first, then the call, then retries.

Only idempotent calls are retried, and only after a failed connection (the
backend received nothing) or a backend 503 (it did no work). Timeouts are
never retried, because the backend may still be working on the first attempt
and a second one would double its load. Calls that are not idempotent, such
as an admin reload, get exactly one attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from services.gateway.backend_errors import BackendFailure, describe, transport_failure
from services.gateway.circuit import CircuitBreaker, CircuitOpen
from services.gateway.metrics import GatewayMetrics
from services.gateway.retry import RetryPolicy, parse_retry_after

logger = logging.getLogger(__name__)

SendFunction = Callable[[httpx.Request], Awaitable[httpx.Response]]


class CallFailed(Exception):
    """A backend call that ended without a response to pass on, with the failure to raise."""

    def __init__(self, failure: BackendFailure) -> None:
        super().__init__(failure.error.message)
        self.failure = failure


@dataclass(frozen=True)
class _Outcome:
    """One attempt: a response, or a transport error mapped onto the gateway's failure."""

    response: httpx.Response | None = None
    error: httpx.TransportError | None = None
    failure: BackendFailure | None = None


class ResilientCaller:
    """Sends requests to one backend through its circuit breaker, with retries."""

    def __init__(
        self,
        backend: str,
        base_url: str,
        send: SendFunction,
        *,
        retry: RetryPolicy,
        circuit: CircuitBreaker,
        metrics: GatewayMetrics,
    ) -> None:
        self._backend = backend
        self._base_url = base_url
        self._send = send
        self._retry = retry
        self.circuit = circuit
        self._metrics = metrics

    async def call(self, request: httpx.Request, *, idempotent: bool) -> httpx.Response:
        """Return the backend's response, which may have any status.

        Raises CallFailed for a transport error and for an open circuit, after
        any retries that `idempotent` allows.
        """
        retry = 0
        while True:
            outcome = await self._attempt(request)
            retry += 1
            reason, retry_after = self._retry_reason(outcome)
            delay = None
            if idempotent and reason is not None:
                delay = self._retry.delay(retry, retry_after)
            if reason is None or delay is None:
                return self._result(outcome)
            self._log_retry(request, outcome, reason, retry, delay)
            self._metrics.backend_retries.labels(self._metrics.service, self._backend, reason).inc()
            await asyncio.sleep(delay)

    async def _attempt(self, request: httpx.Request) -> _Outcome:
        try:
            probe = self.circuit.acquire()
        except CircuitOpen as error:
            raise CallFailed(BackendFailure("circuit_open", error)) from None
        try:
            response = await self._send(request)
        except httpx.TransportError as error:
            failure = transport_failure(self._backend, self._base_url, error, request)
            if failure.kind == "pool_timeout":
                # A full connection pool is the gateway's own limit, not a
                # sign that the backend fails.
                self.circuit.release(probe)
            else:
                self.circuit.record_failure(probe)
            return _Outcome(error=error, failure=failure)
        except BaseException:
            self.circuit.release(probe)
            raise
        if response.status_code >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self.circuit.record_failure(probe, retry_after)
        else:
            self.circuit.record_success(probe)
        return _Outcome(response=response)

    @staticmethod
    def _retry_reason(outcome: _Outcome) -> tuple[str | None, float | None]:
        """Return why the attempt may be retried (None if it may not) and the backend's wait."""
        if isinstance(outcome.error, httpx.ConnectError):
            return "connect_error", None
        if outcome.response is not None and outcome.response.status_code == 503:
            return "unavailable", parse_retry_after(outcome.response.headers.get("Retry-After"))
        return None, None

    @staticmethod
    def _result(outcome: _Outcome) -> httpx.Response:
        if outcome.failure is not None:
            raise CallFailed(outcome.failure) from outcome.error
        assert outcome.response is not None  # an outcome has a response or a failure
        return outcome.response

    def _log_retry(
        self, request: httpx.Request, outcome: _Outcome, reason: str, retry: int, delay: float
    ) -> None:
        cause = describe(outcome.error) if outcome.error is not None else "it returned 503"
        logger.warning(
            "call to the %s service failed (%s), retrying in %.3f s (retry %d of %d)",
            self._backend,
            cause,
            delay,
            retry,
            self._retry.retries,
            extra={
                "backend": self._backend,
                "url": str(request.url.copy_with(query=None)),
                "retry_reason": reason,
            },
        )
