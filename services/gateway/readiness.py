"""Readiness of the gateway: every backend must return 200 on its own /readyz."""

from __future__ import annotations

import asyncio
import logging

from services.gateway.backend import Backends

logger = logging.getLogger(__name__)


class ReadinessMonitor:
    """Checks the backends' /readyz and logs only when the set of unready backends changes.

    Probes call /readyz every few seconds, so logging every failed check would
    repeat the same error for the whole outage.
    """

    def __init__(self, backends: Backends, timeout_seconds: float) -> None:
        self._backends = backends
        self._timeout_seconds = timeout_seconds
        self._last_problems: dict[str, str] = {}

    async def find_unready_backends(self) -> dict[str, str]:
        """Check every backend concurrently and return the reason for each one that is unready."""
        backends = self._backends.all()
        results = await asyncio.gather(
            *(backend.check_ready(self._timeout_seconds) for backend in backends)
        )
        problems = {
            backend.name: problem
            for backend, problem in zip(backends, results, strict=True)
            if problem is not None
        }
        self._log_change(problems)
        return problems

    def _log_change(self, problems: dict[str, str]) -> None:
        if problems.keys() == self._last_problems.keys():
            return
        for name, problem in problems.items():
            if name not in self._last_problems:
                logger.warning(
                    "backend %s is not ready: %s", name, problem, extra={"backend": name}
                )
        for name in self._last_problems.keys() - problems.keys():
            logger.info("backend %s is ready again", name, extra={"backend": name})
        self._last_problems = problems
