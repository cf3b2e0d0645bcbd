"""A circuit breaker per backend, so that calls to a failing backend return 503 at once.

States and transitions:

- closed: calls go through. It opens after `failure_threshold` consecutive
  failures, or when at least `min_calls` calls ended within the last
  `window_seconds` and the share of failures among them reaches `failure_ratio`.
- open: calls raise `CircuitOpen` (503 with `Retry-After`) without reaching the
  backend, until `open_seconds` have passed since it opened.
- half-open: the first call after the cool-down goes through as a probe, and
  other calls still get 503. A successful probe closes the circuit, and a
  failed one opens it again for another cool-down.

The breaker runs on one event loop, and only synchronous code changes its
state, so it needs no lock.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from services.common.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

# A backend's Retry-After extends the cool-down up to this many seconds, so that
# a wrong header cannot keep a backend cut off for hours.
MAX_COOL_DOWN_SECONDS = 300.0


class CircuitState(enum.IntEnum):
    """Circuit states; the values are those of the `visionserve_circuit_state` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpen(ServiceUnavailable):
    code = "circuit_open"


@dataclass(frozen=True)
class CircuitConfig:
    failure_threshold: int
    failure_ratio: float
    window_seconds: float
    min_calls: int
    open_seconds: float


class CircuitBreaker:
    """Tracks the outcome of calls to one backend and rejects calls while the circuit is open.

    Callers call `acquire` before each call, then exactly one of
    `record_success`, `record_failure` or `release` with the returned probe flag.
    """

    def __init__(
        self,
        backend: str,
        config: CircuitConfig,
        *,
        on_state_change: Callable[[CircuitState], None] = lambda state: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self._config = config
        self._on_state_change = on_state_change
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._consecutive_failures = 0
        # (end time, failed) of the calls that ended within the ratio window.
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._opened_at = 0.0
        self._cool_down = config.open_seconds
        self._probe_in_flight = False
        on_state_change(self._state)

    @property
    def state(self) -> CircuitState:
        return self._state

    def acquire(self) -> bool:
        """Allow one call or raise CircuitOpen; return True when the call is the half-open probe."""
        if self._state is CircuitState.CLOSED:
            return False
        if self._state is CircuitState.OPEN and self._remaining_cool_down() <= 0:
            self._transition(CircuitState.HALF_OPEN, "the cool-down has passed; probing")
        if self._state is CircuitState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        raise self._open_error()

    def record_success(self, probe: bool) -> None:
        self._remember(failed=False)
        self._consecutive_failures = 0
        if probe:
            self._probe_in_flight = False
            self._transition(CircuitState.CLOSED, "the probe call succeeded")

    def record_failure(self, probe: bool, retry_after: float | None = None) -> None:
        """Count a failed call; `retry_after` is the backend's own Retry-After, if it sent one."""
        self._remember(failed=True)
        self._consecutive_failures += 1
        if probe:
            self._probe_in_flight = False
            self._open("the probe call failed", retry_after)
        elif self._state is CircuitState.CLOSED and self._should_open():
            reason = (
                f"{self._consecutive_failures} consecutive failures"
                if self._consecutive_failures >= self._config.failure_threshold
                else f"{self._failure_count()} of the last {len(self._outcomes)} calls failed"
            )
            self._open(reason, retry_after)

    def release(self, probe: bool) -> None:
        """End a call whose outcome shows nothing about the backend, such as a cancelled one."""
        if probe:
            self._probe_in_flight = False

    def _should_open(self) -> bool:
        if self._consecutive_failures >= self._config.failure_threshold:
            return True
        calls = len(self._outcomes)
        if calls < self._config.min_calls:
            return False
        return self._failure_count() / calls >= self._config.failure_ratio

    def _failure_count(self) -> int:
        return sum(1 for _, failed in self._outcomes if failed)

    def _remember(self, *, failed: bool) -> None:
        now = self._clock()
        self._outcomes.append((now, failed))
        horizon = now - self._config.window_seconds
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._outcomes.popleft()

    def _open(self, reason: str, retry_after: float | None) -> None:
        self._opened_at = self._clock()
        self._cool_down = self._config.open_seconds
        if retry_after is not None:
            self._cool_down = min(max(self._cool_down, retry_after), MAX_COOL_DOWN_SECONDS)
        # A new window starts after the circuit closes again, so that failures
        # from before the outage cannot reopen it at once.
        self._outcomes.clear()
        self._transition(CircuitState.OPEN, f"{reason}; rejecting calls for {self._cool_down:g} s")

    def _remaining_cool_down(self) -> float:
        return self._opened_at + self._cool_down - self._clock()

    def _open_error(self) -> CircuitOpen:
        retry_after = max(1, math.ceil(self._remaining_cool_down()))
        return CircuitOpen(
            f"the {self.backend} service is failing, so the gateway is not calling it for "
            f"now; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    def _transition(self, state: CircuitState, reason: str) -> None:
        if state is self._state:
            return
        previous = self._state
        self._state = state
        if state is CircuitState.CLOSED:
            self._consecutive_failures = 0
        log = logger.warning if state is CircuitState.OPEN else logger.info
        log(
            "circuit of the %s backend is %s (was %s): %s",
            self.backend,
            _state_name(state),
            _state_name(previous),
            reason,
            extra={"backend": self.backend, "circuit_state": _state_name(state)},
        )
        self._on_state_change(state)


def _state_name(state: CircuitState) -> str:
    return state.name.lower().replace("_", "-")
