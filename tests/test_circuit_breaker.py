"""The circuit breaker's state machine and the retry policy, on a controlled clock."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from services.gateway.circuit import CircuitBreaker, CircuitConfig, CircuitOpen, CircuitState
from services.gateway.retry import RetryPolicy, parse_retry_after

CONFIG = CircuitConfig(
    failure_threshold=3, failure_ratio=0.5, window_seconds=10.0, min_calls=6, open_seconds=5.0
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, states: list[CircuitState] | None = None) -> CircuitBreaker:
    record = states.append if states is not None else (lambda state: None)
    return CircuitBreaker("classifier", CONFIG, on_state_change=record, clock=clock)


def fail(circuit: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        circuit.record_failure(circuit.acquire())


def succeed(circuit: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        circuit.record_success(circuit.acquire())


def test_opens_after_consecutive_failures(clock: Clock) -> None:
    circuit = breaker(clock)

    fail(circuit, 2)
    assert circuit.state is CircuitState.CLOSED
    fail(circuit)

    assert circuit.state is CircuitState.OPEN
    with pytest.raises(CircuitOpen) as raised:
        circuit.acquire()
    assert raised.value.status_code == 503
    assert raised.value.headers == {"Retry-After": "5"}


def test_success_resets_consecutive_count(clock: Clock) -> None:
    circuit = breaker(clock)

    fail(circuit, 2)
    succeed(circuit)
    fail(circuit, 2)

    assert circuit.state is CircuitState.CLOSED


def test_opens_on_failure_ratio(clock: Clock) -> None:
    circuit = breaker(clock)

    # Alternating outcomes never reach 3 in a row, but half of the calls fail.
    for _ in range(2):
        fail(circuit)
        succeed(circuit)
    assert circuit.state is CircuitState.CLOSED
    fail(circuit)
    succeed(circuit)

    assert circuit.state is CircuitState.CLOSED  # the success was the 6th call
    fail(circuit)
    assert circuit.state is CircuitState.OPEN


def test_ratio_forgets_calls_outside_window(clock: Clock) -> None:
    circuit = breaker(clock)

    for _ in range(3):
        fail(circuit)
        succeed(circuit)
    clock.now += CONFIG.window_seconds + 1
    succeed(circuit, 5)
    fail(circuit)

    assert circuit.state is CircuitState.CLOSED


def test_half_open_allows_one_probe(clock: Clock) -> None:
    states: list[CircuitState] = []
    circuit = breaker(clock, states)
    fail(circuit, 3)

    clock.now += CONFIG.open_seconds - 0.5
    with pytest.raises(CircuitOpen) as raised:
        circuit.acquire()
    assert raised.value.headers == {"Retry-After": "1"}

    clock.now += 0.5
    assert circuit.acquire() is True
    assert circuit.state is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpen):
        circuit.acquire()

    circuit.record_success(True)
    assert circuit.state is CircuitState.CLOSED
    assert circuit.acquire() is False
    assert states == [
        CircuitState.CLOSED,
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]


def test_failed_probe_reopens(clock: Clock) -> None:
    circuit = breaker(clock)
    fail(circuit, 3)
    clock.now += CONFIG.open_seconds

    circuit.record_failure(circuit.acquire())

    assert circuit.state is CircuitState.OPEN
    with pytest.raises(CircuitOpen) as raised:
        circuit.acquire()
    assert raised.value.headers == {"Retry-After": "5"}


def test_released_probe_frees_slot(clock: Clock) -> None:
    circuit = breaker(clock)
    fail(circuit, 3)
    clock.now += CONFIG.open_seconds

    circuit.release(circuit.acquire())

    assert circuit.acquire() is True
    assert circuit.state is CircuitState.HALF_OPEN


def test_backend_retry_after_extends_cool_down(clock: Clock) -> None:
    circuit = breaker(clock)
    fail(circuit, 2)

    circuit.record_failure(circuit.acquire(), retry_after=30.0)

    clock.now += CONFIG.open_seconds + 1
    with pytest.raises(CircuitOpen) as raised:
        circuit.acquire()
    assert raised.value.headers == {"Retry-After": "24"}


def test_transitions_logged_once(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    circuit = breaker(clock)
    caplog.set_level("INFO", logger="services.gateway.circuit")

    fail(circuit, 3)
    for _ in range(4):
        with pytest.raises(CircuitOpen):
            circuit.acquire()
    clock.now += CONFIG.open_seconds
    succeed(circuit)

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    assert "is open (was closed): 3 consecutive failures" in messages[0]
    assert "is half-open (was open)" in messages[1]
    assert "is closed (was half-open)" in messages[2]


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(retries=5, backoff_seconds=0.1, max_delay_seconds=0.5)
    rng = random.Random(7)

    for retry, bound in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (5, 0.5)]:
        waits = [policy.backoff(retry, rng) for _ in range(200)]
        assert min(waits) >= 0
        assert max(waits) <= bound
        # Full jitter spreads the waits over the whole range.
        assert max(waits) > bound * 0.8


def test_delay_honours_retry_after() -> None:
    policy = RetryPolicy(retries=2, backoff_seconds=0.01, max_delay_seconds=1.0)

    assert policy.delay(1, 0.5) == 0.5
    assert policy.delay(1, 2.0) is None
    assert policy.delay(3, None) is None
    first = policy.delay(1, None)
    assert first is not None
    assert 0 <= first <= 0.01


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("7", 7.0), (" 0 ", 0.0), ("soon", None), ("-3", None), ("1.5", None)],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_date() -> None:
    now = 1_700_000_000.0

    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
