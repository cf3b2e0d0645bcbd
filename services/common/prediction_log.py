"""The prediction log writer: one `PredictionRecord` per predicted image, appended to Redis.

Requests call `PredictionLog.append`, which only puts the record on a bounded
in-memory queue. A background thread drains the queue and sends the records
to Redis in pipelines of XADD with `MAXLEN ~`. So a slow or unreachable Redis
never delays or fails a request. Records that do not fit in the queue, or
that Redis does not take, are dropped and counted in
`visionserve_prediction_log_records_total{result="dropped"}`.

Stream keys and fields are those of `services.common.prediction_record`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence

import redis

from services.common.input_stats import InputStats
from services.common.logging import current_request_id
from services.common.metrics import ServiceMetrics
from services.common.prediction_record import PredictionRecord, prediction_log_key
from services.common.redis_keys import redacted_redis_url, single_attempt_client
from services.common.repository import LoadedModel

logger = logging.getLogger(__name__)

# Records sent to Redis in one pipeline.
MAX_PIPELINE_RECORDS = 256
# Seconds the writer waits after a failed write before it tries again. Records
# that arrive meanwhile wait in the queue, or are dropped when it is full.
RETRY_SECONDS = 1.0
# Seconds between two warnings while records keep being dropped.
WARNING_INTERVAL_SECONDS = 60.0
# Seconds the writer blocks on an empty queue before it checks for shutdown.
_POLL_SECONDS = 0.2


class PredictionLog:
    """Appends prediction records to one Redis stream per model, from a background thread.

    Call `start` once, `append` from any thread or the event loop, and `close`
    at shutdown to write what is still queued within `flush_seconds`.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        service: str,
        metrics: ServiceMetrics,
        max_length: int,
        queue_size: int,
        timeout_seconds: float,
        flush_seconds: float,
    ) -> None:
        self._url = url
        # No retries: a failed pipeline is dropped, and the next one tries again.
        self._client = single_attempt_client(url, timeout_seconds)
        self._prefix = prefix
        self._service = service
        self._metrics = metrics
        self._max_length = max_length
        self._flush_seconds = flush_seconds
        self._timeout_seconds = timeout_seconds
        self._queue: queue.Queue[PredictionRecord] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._flush_deadline = 0.0
        self._thread = threading.Thread(
            target=self._run, name=f"prediction-log-{service}", daemon=True
        )
        self._drops = _DropWarnings(redacted_redis_url(url))
        self._redis_failing = False  # read and written only by the writer thread

    def start(self) -> None:
        self._thread.start()

    def append(
        self,
        model: LoadedModel,
        inputs: InputStats,
        labels: Sequence[str],
        scores: Sequence[float],
    ) -> None:
        """Queue the record of one predicted image, or count it as dropped when the queue is full.

        The request id is the one of the current request (`X-Request-ID`).
        """
        record = PredictionRecord(
            timestamp=time.time(),
            service=self._service,
            model=model.name,
            version=model.version,
            task=model.metadata.task,
            request_id=current_request_id() or "",
            labels=tuple(labels),
            scores=tuple(float(score) for score in scores),
            inputs=inputs,
        )
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._count(Counter([record.model]), "dropped")
            self._drops.record(1, "the prediction log queue is full")

    def close(self) -> None:
        """Write the queued records for at most `flush_seconds`, then drop the rest. Blocks."""
        self._flush_deadline = time.monotonic() + self._flush_seconds
        self._stopping.set()
        # A pipeline that started just before the deadline may take one more timeout.
        wait_seconds = self._flush_seconds + self._timeout_seconds + 1.0
        if self._thread.is_alive():
            self._thread.join(wait_seconds)
        if self._thread.is_alive():
            logger.warning(
                "the prediction log writer did not stop within %.1f s, so queued records "
                "may be lost",
                wait_seconds,
            )
        else:
            self._client.close()

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if self._stopping.is_set() and time.monotonic() > self._flush_deadline:
                self._drop_remaining(batch)
                return
            if batch:
                if not self._write(batch) and not self._stopping.is_set():
                    self._stopping.wait(RETRY_SECONDS)
            elif self._stopping.is_set():
                return

    def _next_batch(self) -> list[PredictionRecord]:
        """Return up to MAX_PIPELINE_RECORDS records, waiting briefly for the first one."""
        batch: list[PredictionRecord] = []
        try:
            if self._stopping.is_set():
                batch.append(self._queue.get_nowait())
            else:
                batch.append(self._queue.get(timeout=_POLL_SECONDS))
            while len(batch) < MAX_PIPELINE_RECORDS:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _write(self, batch: list[PredictionRecord]) -> bool:
        """Send `batch` in one pipeline. Return False, and count it as dropped, when Redis fails."""
        pipeline = self._client.pipeline(transaction=False)
        for record in batch:
            key = prediction_log_key(self._prefix, self._service, record.model)
            # redis-py accepts a dict of str to str, but its stubs declare a wider mapping type.
            pipeline.xadd(
                key,
                record.to_fields(),  # type: ignore[arg-type]
                maxlen=self._max_length,
                approximate=True,
            )
        models = Counter(record.model for record in batch)
        try:
            pipeline.execute()
        except redis.RedisError as error:
            self._count(models, "dropped")
            self._redis_failing = True
            self._drops.record(len(batch), f"Redis failed: {error}")
            return False
        self._count(models, "written")
        if self._redis_failing:
            self._redis_failing = False
            logger.info(
                "writing the prediction log to Redis works again",
                extra={"redis_url": redacted_redis_url(self._url)},
            )
        return True

    def _drop_remaining(self, batch: list[PredictionRecord]) -> None:
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if batch:
            self._count(Counter(record.model for record in batch), "dropped")
            logger.warning(
                "dropped %d prediction records that were not written before shutdown",
                len(batch),
                extra={"redis_url": redacted_redis_url(self._url)},
            )

    def _count(self, models: Counter[str], result: str) -> None:
        counter = self._metrics.prediction_log_records
        for model, count in models.items():
            counter.labels(self._metrics.service, model, result).inc(count)


class _DropWarnings:
    """Logs dropped records at most once per WARNING_INTERVAL_SECONDS, with the count since."""

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._lock = threading.Lock()
        self._dropped = 0
        self._last_warning: float | None = None

    def record(self, count: int, reason: str) -> None:
        with self._lock:
            self._dropped += count
            now = time.monotonic()
            if (
                self._last_warning is not None
                and now - self._last_warning < WARNING_INTERVAL_SECONDS
            ):
                return
            dropped, self._dropped = self._dropped, 0
            self._last_warning = now
        logger.warning(
            "dropped %d prediction records since the last warning, the latest because %s. "
            "Requests are not affected",
            dropped,
            reason,
            extra={"redis_url": self._redis_url},
        )
