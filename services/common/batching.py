"""Dynamic batching: requests to one model version that arrive close together run as one batch.

Each request decodes and preprocesses its image before it reaches the batcher,
so images of any size arrive as rows of the model's fixed input shape. The
batcher waits at most `max_queue_delay_ms` after the oldest waiting request
for others to arrive, runs up to `max_batch_size` rows in one `session.run`,
and hands each request its own rows of the output.

One batch runs at a time per model version. onnxruntime already spreads one
run over every thread it was given, so two runs at once would only compete for
the same cores, while the requests that arrive during a run fill the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import anyio
import anyio.to_thread
import numpy as np

from services.common.errors import ServiceError, ServiceUnavailable
from services.common.metrics import ServiceMetrics
from services.common.repository import LoadedModel
from services.common.settings import ModelServiceSettings

logger = logging.getLogger(__name__)

# Seconds a client should wait after a 503 for a full queue.
QUEUE_FULL_RETRY_AFTER = 1


class QueueFull(ServiceUnavailable):
    code = "queue_full"


@dataclass(frozen=True)
class BatchPolicy:
    """Batching settings of one model. With batching disabled, every request runs alone."""

    enabled: bool
    max_batch_size: int
    max_queue_delay_ms: float
    max_queue_size: int


def batch_policy(settings: ModelServiceSettings, model: LoadedModel) -> BatchPolicy:
    """Return the policy of `model`: the service-wide settings with its own overrides applied.

    A graph whose batch axis is fixed at 1 runs one row at a time, whatever the settings.
    """
    override = settings.model_batching.get(model.name)
    enabled = settings.batching_enabled
    max_batch_size = settings.max_batch_size
    delay = settings.max_queue_delay_ms
    queue_size = settings.max_queue_size
    if override is not None:
        enabled = override.enabled if override.enabled is not None else enabled
        max_batch_size = override.max_batch_size or max_batch_size
        delay = override.max_queue_delay_ms if override.max_queue_delay_ms is not None else delay
        queue_size = override.max_queue_size or queue_size
    if model.fixed_batch_size == 1 and enabled:
        logger.info(
            "batching is off for %s: its graph fixes the batch size at 1",
            model.name,
            extra={"model": model.name, "version": model.version},
        )
        enabled = False
    return BatchPolicy(enabled, max_batch_size, delay, queue_size)


@dataclass(frozen=True)
class BatchRun:
    """One request's share of a batch: its output rows and where its time went."""

    output: np.ndarray
    queue_seconds: float
    inference_seconds: float
    batch_size: int


@dataclass
class _Pending:
    inputs: np.ndarray
    future: asyncio.Future[BatchRun]
    enqueued_at: float


class MicroBatcher:
    """The request queue of one model version and the task that runs its batches."""

    def __init__(self, model: LoadedModel, policy: BatchPolicy, metrics: ServiceMetrics) -> None:
        self.model = model
        self.policy = policy
        self._metrics = metrics
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        # Inference gets its own thread so that decoding requests, which hold
        # the pipeline's worker threads, never delay a batch that is ready.
        self._inference_limiter = anyio.CapacityLimiter(1)

    @property
    def idle(self) -> bool:
        return not self._queue and (self._runner is None or self._runner.done())

    async def submit(self, inputs: np.ndarray) -> BatchRun:
        """Queue `inputs` (N, C, H, W) and return their output rows once their batch has run.

        Raises QueueFull (503) when `max_queue_size` requests are already waiting.
        """
        if len(self._queue) >= self.policy.max_queue_size:
            self._metrics.queue_rejections.labels(self._metrics.service, self.model.name).inc()
            raise QueueFull(
                f"too many requests are waiting for model {self.model.name}; "
                f"retry after {QUEUE_FULL_RETRY_AFTER} s",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER)},
            )
        future: asyncio.Future[BatchRun] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(inputs, future, time.perf_counter()))
        self._record_depth()
        self._arrived.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_queued())
        return await future

    async def _run_queued(self) -> None:
        try:
            while self._queue:
                await self._wait_for_batch()
                batch = self._take_batch()
                if batch:
                    await self._run_batch(batch)
        except asyncio.CancelledError:
            self._fail_waiting(ServiceUnavailable("the service is shutting down; retry"))
            raise
        except Exception:
            # Reached only by a bug; nothing that waits may hang.
            logger.exception("the batch runner of %s stopped", self.model.name)
            self._fail_waiting(ServiceError("the batch runner stopped; see the service log"))

    async def _wait_for_batch(self) -> None:
        if not self.policy.enabled:
            return
        deadline = self._queue[0].enqueued_at + self.policy.max_queue_delay_ms / 1000.0
        while self._queued_rows() < self.policy.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _queued_rows(self) -> int:
        return sum(len(pending.inputs) for pending in self._queue)

    def _take_batch(self) -> list[_Pending]:
        """Take waiting requests up to `max_batch_size` rows; the first one always fits."""
        limit = self.policy.max_batch_size if self.policy.enabled else 1
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():  # the client went away while waiting
                self._queue.popleft()
                continue
            if batch and rows + len(pending.inputs) > limit:
                break
            batch.append(self._queue.popleft())
            rows += len(pending.inputs)
        self._record_depth()
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        rows = sum(len(pending.inputs) for pending in batch)
        started = time.perf_counter()
        try:
            inputs = np.concatenate([pending.inputs for pending in batch])
            output = await anyio.to_thread.run_sync(
                run_rows, self.model, inputs, limiter=self._inference_limiter
            )
        except Exception as exc:
            logger.exception(
                "inference failed for a batch of %d rows",
                rows,
                extra={"model": self.model.name, "version": self.model.version},
            )
            error = exc if isinstance(exc, ServiceError) else ServiceError("inference failed")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        seconds = time.perf_counter() - started
        self._observe(rows, seconds)
        offset = 0
        for pending in batch:
            count = len(pending.inputs)
            if not pending.future.done():
                run = BatchRun(
                    output=output[offset : offset + count],
                    queue_seconds=started - pending.enqueued_at,
                    inference_seconds=seconds,
                    batch_size=rows,
                )
                pending.future.set_result(run)
            offset += count

    def _fail_waiting(self, error: ServiceError) -> None:
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(error)
        self._record_depth()

    def _observe(self, rows: int, seconds: float) -> None:
        metrics, model = self._metrics, self.model
        metrics.batch_size.labels(metrics.service, model.name).observe(rows)
        metrics.inference_latency.labels(metrics.service, model.name, str(model.version)).observe(
            seconds
        )

    def _record_depth(self) -> None:
        self._metrics.queue_depth.labels(self._metrics.service, self.model.name).set(
            len(self._queue)
        )


def run_rows(model: LoadedModel, inputs: np.ndarray) -> np.ndarray:
    """Run `inputs` through the model, one row at a time when its graph fixes the batch at 1."""
    if model.fixed_batch_size == 1 and len(inputs) > 1:
        return np.concatenate([model.run(row[np.newaxis]) for row in inputs])
    return model.run(inputs)


class BatcherPool:
    """One MicroBatcher per live model version, created on first use.

    After a reload, requests that picked the old version before the swap still
    finish on its batcher; it is dropped once it is idle.
    """

    def __init__(self, settings: ModelServiceSettings, metrics: ServiceMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._batchers: dict[tuple[str, int], MicroBatcher] = {}

    def get(self, model: LoadedModel) -> MicroBatcher:
        key = (model.name, model.version)
        batcher = self._batchers.get(key)
        if batcher is None or batcher.model is not model:
            self._drop_idle(model.name)
            batcher = MicroBatcher(model, batch_policy(self._settings, model), self._metrics)
            self._batchers[key] = batcher
        return batcher

    async def submit(self, model: LoadedModel, inputs: np.ndarray) -> BatchRun:
        """Queue `inputs` on the batcher of `model`; see `MicroBatcher.submit`."""
        return await self.get(model).submit(inputs)

    def _drop_idle(self, name: str) -> None:
        for key, batcher in list(self._batchers.items()):
            if key[0] == name and batcher.idle:
                del self._batchers[key]
