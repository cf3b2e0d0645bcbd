"""Reloading models while the service runs: on request, or by polling for new version folders.

Each reload is counted in `visionserve_model_reloads_total` and logged. A
version that fails to load never serves: the one that was live stays live.
"""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread

from services.common.errors import ModelRejected, ServiceError, ServiceUnavailable
from services.common.live_versions import LiveVersionNotPublished
from services.common.metrics import ServiceMetrics
from services.common.prediction_metrics import record_live_models
from services.common.readiness import Readiness
from services.common.repository import ModelRepository, ReloadOutcome
from services.common.version_folders import ModelLoadError

logger = logging.getLogger(__name__)

# Seconds after which a reload that Redis prevented is worth another try.
REDIS_RETRY_AFTER = 5


class ModelReloader:
    """Swaps new model versions into a loaded repository and records each attempt."""

    def __init__(self, repository: ModelRepository, metrics: ServiceMetrics) -> None:
        self._repository = repository
        self._metrics = metrics

    async def reload(self, name: str) -> ReloadOutcome:
        """Serve the version of `name` that should be live now, loading it in a worker thread.

        Raises ModelNotFound (404) when `name` has no version folders,
        ModelRejected (422) when the version cannot be served, and
        ServiceUnavailable (503) when the new live version cannot be published
        to the Redis that the gateway's response cache reads.
        """
        try:
            outcome = await anyio.to_thread.run_sync(self._repository.reload, name)
        except LiveVersionNotPublished as error:
            self._metrics.reloads.labels(self._metrics.service, name, "failure").inc()
            logger.error("%s", error, extra={"model": name})
            raise ServiceUnavailable(
                f"the new version of {name} cannot be published to Redis, so it does not go "
                "live; retry when Redis is reachable (details in the service log)",
                headers={"Retry-After": str(REDIS_RETRY_AFTER)},
            ) from error
        except ModelLoadError as error:
            self._metrics.reloads.labels(self._metrics.service, name, "failure").inc()
            logger.error(
                "rejected a new version of %s; the live version keeps serving: %s",
                name,
                error,
                extra={"model": name},
            )
            raise ModelRejected(
                f"the new version of {name} cannot be served, so the live version keeps "
                f"serving: {error}"
            ) from error
        if outcome.changed:
            self._record_swap(outcome)
        return outcome

    async def poll(self, interval: float, readiness: Readiness) -> None:
        """Every `interval` seconds, reload each model with a new version on disk; never returns."""
        while True:
            await anyio.sleep(interval)
            if not readiness.is_ready:
                continue
            try:
                names = await anyio.to_thread.run_sync(self._repository.pending_reloads)
            except (ModelLoadError, OSError) as error:
                logger.warning("cannot scan the model repository for new versions: %s", error)
                continue
            for name in names:
                try:
                    await self.reload(name)
                except ServiceError as error:
                    # A rejected version is logged and counted by reload, and
                    # polling retries it once its files change. A folder
                    # removed since the scan is only logged.
                    if not isinstance(error, ModelRejected):
                        logger.warning("cannot reload %s: %s", name, error.message)

    def _record_swap(self, outcome: ReloadOutcome) -> None:
        metrics = self._metrics
        metrics.reloads.labels(metrics.service, outcome.name, "success").inc()
        record_live_models(metrics, self._repository.models())
        logger.info(
            "now serving %s version %d (was %s)",
            outcome.name,
            outcome.version,
            outcome.previous_version if outcome.previous_version is not None else "not served",
            extra={"model": outcome.name, "version": outcome.version},
        )
