"""Graceful shutdown: on SIGTERM the gateway reports not ready first, then stops.

Load balancers and Kubernetes keep sending requests to an instance until its
readiness probe fails. So on the first SIGTERM the gateway keeps serving for
`drain_seconds` while `/readyz` returns 503, and only then hands the signal
to uvicorn. uvicorn closes the listening socket, waits for the requests in
flight to finish and runs the lifespan shutdown, and the process exits.
A second SIGTERM, or SIGINT (Ctrl+C), starts uvicorn's shutdown at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], object]


class GracefulShutdown:
    """Delays the server's own SIGTERM handling by a drain period and records that it started."""

    def __init__(self, drain_seconds: float) -> None:
        self.drain_seconds = drain_seconds
        self.draining = False
        self._drain_task: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Wrap the SIGTERM handler that the server installed; call it from the lifespan.

        Does nothing outside the main thread (Python allows signal handlers
        only there), or when no server handler is installed to hand over to.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        server_handler = signal.getsignal(signal.SIGTERM)
        if not callable(server_handler):
            logger.warning(
                "no SIGTERM handler of the server to wrap; the gateway stops without draining"
            )
            return
        loop = asyncio.get_running_loop()

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self.draining:
                server_handler(signum, frame)
                return
            self.draining = True
            logger.info(
                "SIGTERM received; /readyz returns 503 for %g s, then the gateway stops "
                "accepting connections and waits for the requests in flight",
                self.drain_seconds,
            )
            loop.call_soon_threadsafe(self._start_drain, server_handler, signum)

        signal.signal(signal.SIGTERM, on_sigterm)

    def _start_drain(self, server_handler: SignalHandler, signum: int) -> None:
        self._drain_task = asyncio.create_task(self._drain(server_handler, signum))

    async def _drain(self, server_handler: SignalHandler, signum: int) -> None:
        await asyncio.sleep(self.drain_seconds)
        logger.info("drain period over; shutting down")
        server_handler(signum, None)
