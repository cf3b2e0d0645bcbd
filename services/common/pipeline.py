"""Base class of the classifier and detector pipelines: models, worker threads, batchers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar, TypeVarTuple

import anyio
import anyio.to_thread
import numpy as np

from services.common.batching import BatcherPool
from services.common.cpus import threads_per_worker
from services.common.errors import ServiceError
from services.common.imaging import DecodedImage
from services.common.input_stats import InputStats, measure_input
from services.common.metrics import ServiceMetrics
from services.common.model_selection import default_model_name
from services.common.prediction_log import PredictionLog
from services.common.repository import LoadedModel, ModelRepository
from services.common.settings import ModelServiceSettings

logger = logging.getLogger(__name__)

Result = TypeVar("Result")
Arguments = TypeVarTuple("Arguments")
SettingsT = TypeVar("SettingsT", bound=ModelServiceSettings)


class ModelPipeline(Generic[SettingsT]):
    """The models of a loaded repository, the worker threads that decode and preprocess
    requests, and the batchers that run them through the models."""

    def __init__(
        self,
        repository: ModelRepository,
        settings: SettingsT,
        metrics: ServiceMetrics,
        prediction_log: PredictionLog | None = None,
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.metrics = metrics
        # None when the log is off, and then no input statistics are measured either.
        self.prediction_log = prediction_log
        self.default_model = default_model_name(repository, settings.default_model)
        worker_threads = settings.worker_threads or threads_per_worker(settings.workers)
        self._limiter = anyio.CapacityLimiter(worker_threads)
        self.batchers = BatcherPool(settings, metrics)

    def measure_for_log(self, decoded: DecodedImage) -> InputStats | None:
        """Measure `decoded` for the prediction log, or return None when the log is off."""
        return None if self.prediction_log is None else measure_input(decoded)

    async def run_in_worker(
        self, function: Callable[[*Arguments], Result], *args: *Arguments
    ) -> Result:
        """Run `function` in a worker thread, waiting while `worker_threads` others run."""
        return await anyio.to_thread.run_sync(function, *args, limiter=self._limiter)


def check_finite(output: np.ndarray, model: LoadedModel) -> None:
    """Raise ServiceError (500) when a model output contains NaN or infinity, and log it."""
    if not np.all(np.isfinite(output)):
        logger.error(
            "model returned NaN or infinite values",
            extra={"model": model.name, "version": model.version},
        )
        raise ServiceError("the model returned an invalid output; see the service log")
