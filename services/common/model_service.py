"""The objects one model-service process shares between its routes, built once per app."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

import anyio
import anyio.to_thread

from services.common.live_versions import LiveVersionPublisher
from services.common.metadata import Task
from services.common.metrics import ServiceMetrics
from services.common.model_selection import default_model_name
from services.common.prediction_log import PredictionLog
from services.common.prediction_metrics import record_live_models
from services.common.readiness import Readiness
from services.common.reloading import ModelReloader
from services.common.repository import LoadedModel, ModelRepository
from services.common.session_config import SessionConfig
from services.common.settings import ModelServiceSettings

SettingsT = TypeVar("SettingsT", bound=ModelServiceSettings)
PipelineT = TypeVar("PipelineT")

PipelineFactory = Callable[
    [ModelRepository, SettingsT, ServiceMetrics, PredictionLog | None], PipelineT
]
# The default of each request parameter that changes a model's result, as canonical strings.
RequestDefaults = Callable[[SettingsT, LoadedModel], Mapping[str, str]]


class ModelService(Generic[SettingsT, PipelineT]):
    """Settings, metrics, the model repository of one task, and the pipeline once models load."""

    def __init__(
        self,
        settings: SettingsT,
        *,
        service_name: str,
        task: Task,
        build_pipeline: PipelineFactory[SettingsT, PipelineT],
        request_defaults: RequestDefaults[SettingsT],
    ) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics(service_name)
        self.live_versions = _create_publisher(settings, service_name, request_defaults)
        self.prediction_log = _create_prediction_log(settings, service_name, self.metrics)
        self.repository = ModelRepository(
            settings.model_repository,
            task=task,
            pinned_versions=settings.pinned_versions,
            session_config=SessionConfig.from_settings(settings),
            before_swap=self.live_versions.publish_before_swap if self.live_versions else None,
        )
        self.readiness = Readiness()
        self.reloader = ModelReloader(self.repository, self.metrics)
        self._build_pipeline = build_pipeline
        self._pipeline: PipelineT | None = None

    def load_models(self) -> None:
        """Load and warm up every model, then build the pipeline.

        It blocks for as long as loading takes, so run it in a worker thread.
        """
        self.repository.load()
        record_live_models(self.metrics, self.repository.models())
        if self.live_versions is not None:
            default = default_model_name(self.repository, self.settings.default_model)
            self.live_versions.publish_all(self.repository.models(), default)
        self._pipeline = self._build_pipeline(
            self.repository, self.settings, self.metrics, self.prediction_log
        )

    async def watch_versions(self) -> None:
        """Poll for new version folders every `reload_poll_seconds`; return at once when it is 0."""
        if self.settings.reload_poll_seconds > 0:
            await self.reloader.poll(self.settings.reload_poll_seconds, self.readiness)

    async def publish_live_versions(self) -> None:
        """Renew the published live versions until cancelled; return at once without Redis."""
        if self.live_versions is not None:
            await self.live_versions.heartbeat()

    async def write_prediction_log(self) -> None:
        """Run the prediction log writer until cancelled, then flush it. No-op without the log."""
        if self.prediction_log is None:
            return
        self.prediction_log.start()
        try:
            await anyio.sleep_forever()
        finally:
            # Shielded, so that the flush at shutdown runs to its own deadline.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.prediction_log.close)

    def ready_pipeline(self) -> PipelineT:
        """Return the pipeline, or raise ServiceUnavailable (503) while it is not ready."""
        self.readiness.check()
        if self._pipeline is None:  # READY is set only after load_models succeeded
            raise RuntimeError("readiness is READY but no pipeline was built")
        return self._pipeline


def _create_publisher(
    settings: SettingsT, service_name: str, request_defaults: RequestDefaults[SettingsT]
) -> LiveVersionPublisher | None:
    if not settings.redis_url:
        return None
    return LiveVersionPublisher(
        settings.redis_url,
        prefix=settings.redis_key_prefix,
        service=service_name,
        ttl_seconds=settings.live_version_ttl_seconds,
        timeout_seconds=settings.redis_timeout_seconds,
        request_defaults=functools.partial(request_defaults, settings),
    )


def _create_prediction_log(
    settings: ModelServiceSettings, service_name: str, metrics: ServiceMetrics
) -> PredictionLog | None:
    if not settings.prediction_log_active:
        return None
    return PredictionLog(
        settings.redis_url,
        prefix=settings.redis_key_prefix,
        service=service_name,
        metrics=metrics,
        max_length=settings.prediction_log_max_length,
        queue_size=settings.prediction_log_queue_size,
        timeout_seconds=settings.redis_timeout_seconds,
        flush_seconds=settings.prediction_log_flush_seconds,
    )
