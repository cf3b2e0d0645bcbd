"""Tests of the readiness state that gates `/readyz` and the model routes."""

from __future__ import annotations

import anyio
import pytest

from services.common.errors import ServiceUnavailable
from services.common.readiness import Readiness, State


def test_loading_is_unavailable_with_retry_after() -> None:
    readiness = Readiness()

    with pytest.raises(ServiceUnavailable, match="still loading") as caught:
        readiness.check()

    assert caught.value.status_code == 503
    assert caught.value.headers == {"Retry-After": "5"}


def test_successful_load_is_ready() -> None:
    readiness = Readiness()

    anyio.run(readiness.load, lambda: None)

    assert readiness.state is State.READY
    assert readiness.unavailable_error() is None


def test_failed_load_stays_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    def fail() -> None:
        raise RuntimeError("model.onnx is missing")

    readiness = Readiness()
    anyio.run(readiness.load, fail)

    assert readiness.state is State.FAILED
    with pytest.raises(ServiceUnavailable, match="failed to load; see the service log"):
        readiness.check()
    assert "model.onnx is missing" in caplog.text
