"""Readiness of a service that loads its models after it starts listening.

The server responds to `/healthz` at once and `/readyz` with 503 until the models
are loaded and warmed up, so an orchestrator can tell "starting" from "dead".
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

import anyio.to_thread

from services.common.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

# Seconds a client should wait before retrying while models load.
LOADING_RETRY_AFTER = 5


class State(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class Readiness:
    """Loading state of the models: LOADING, then READY or FAILED for the life of the process."""

    def __init__(self) -> None:
        self.state = State.LOADING

    @property
    def is_ready(self) -> bool:
        return self.state is State.READY

    def unavailable_error(self) -> ServiceUnavailable | None:
        """Return the 503 error that describes the current state, or None when ready."""
        if self.state is State.LOADING:
            return ServiceUnavailable(
                "models are still loading; retry shortly",
                headers={"Retry-After": str(LOADING_RETRY_AFTER)},
            )
        if self.state is State.FAILED:
            return ServiceUnavailable("models failed to load; see the service log")
        return None

    def check(self) -> None:
        """Raise ServiceUnavailable (503) unless the models are ready."""
        error = self.unavailable_error()
        if error is not None:
            raise error

    async def load(self, load_models: Callable[[], None]) -> None:
        """Run `load_models` in a worker thread and record whether it succeeded.

        A failure is logged and leaves the service running but not ready, so
        `/healthz` still responds and the log shows the cause.
        """
        try:
            await anyio.to_thread.run_sync(load_models)
        except Exception as error:
            logger.exception("model loading failed: %s; the service stays not ready", error)
            self.state = State.FAILED
            return
        self.state = State.READY
        logger.info("models loaded; the service is ready")
