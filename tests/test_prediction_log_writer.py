"""`PredictionLog` in this process: queue limits, shutdown flush and failures, with real Redis.

The writer runs against the shared Redis below a key prefix of each test, or
against a closed port for the failure cases. The records counter is read
from the metrics registry the writer updates.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from services.common.imaging import decode_image
from services.common.input_stats import measure_input
from services.common.metrics import ServiceMetrics
from services.common.prediction_log import PredictionLog
from services.common.prediction_record import PredictionRecord, prediction_log_key
from services.common.repository import LoadedModel, ModelRepository
from services.common.session_config import SessionConfig
from tests.images import RED, solid_png
from tests.onnx_models import COLOUR_MODEL, build_colour_repository
from tests.redis_servers import SHARED_REDIS_URL, shared_redis_prefix
from tests.servers import free_port

SERVICE = "classifier"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    root = build_colour_repository(tmp_path_factory.mktemp("models"))
    repository = ModelRepository(root, task="classification", session_config=SessionConfig(1, 1))
    repository.load()
    return repository.get(COLOUR_MODEL)


@pytest.fixture
def prefix() -> Iterator[str]:
    with shared_redis_prefix("predlog-writer") as value:
        yield value


def new_log(
    metrics: ServiceMetrics, prefix: str, *, url: str = SHARED_REDIS_URL, **options: float
) -> PredictionLog:
    settings = {
        "max_length": 1000,
        "queue_size": 100,
        "timeout_seconds": 0.5,
        "flush_seconds": 5.0,
        **options,
    }
    return PredictionLog(
        url,
        prefix=prefix,
        service=SERVICE,
        metrics=metrics,
        max_length=int(settings["max_length"]),
        queue_size=int(settings["queue_size"]),
        timeout_seconds=settings["timeout_seconds"],
        flush_seconds=settings["flush_seconds"],
    )


def append_red(log: PredictionLog, model: LoadedModel, count: int) -> None:
    inputs = measure_input(decode_image(solid_png(RED), max_pixels=1_000_000))
    for index in range(count):
        log.append(model, inputs, ["red"], [0.5 + index / 1000])


def records_total(metrics: ServiceMetrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "visionserve_prediction_log_records_total",
        {"service": SERVICE, "model": COLOUR_MODEL, "result": result},
    )
    return value or 0.0


def closed_port_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def test_close_writes_queued_records(model: LoadedModel, prefix: str) -> None:
    metrics = ServiceMetrics(SERVICE)
    log = new_log(metrics, prefix)
    append_red(log, model, 40)

    log.start()
    log.close()
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    try:
        entries = client.xrange(prediction_log_key(prefix, SERVICE, COLOUR_MODEL))
    finally:
        client.close()

    records = [PredictionRecord.from_fields(fields) for _, fields in entries]
    assert len(records) == 40
    assert [record.scores[0] for record in records] == [0.5 + i / 1000 for i in range(40)]
    assert records_total(metrics, "written") == 40
    assert records_total(metrics, "dropped") == 0


def test_full_queue_drops_and_counts(model: LoadedModel, prefix: str) -> None:
    metrics = ServiceMetrics(SERVICE)
    log = new_log(metrics, prefix, queue_size=3)

    append_red(log, model, 5)
    log.start()
    log.close()

    assert records_total(metrics, "dropped") == 2
    assert records_total(metrics, "written") == 3


def test_unreachable_redis_counts_dropped(model: LoadedModel) -> None:
    metrics = ServiceMetrics(SERVICE)
    log = new_log(metrics, "vs-test-unreachable", url=closed_port_url(), flush_seconds=0.5)

    append_red(log, model, 7)
    log.start()
    log.close()

    assert records_total(metrics, "dropped") == 7
    assert records_total(metrics, "written") == 0


def test_append_without_request_id(model: LoadedModel, prefix: str) -> None:
    metrics = ServiceMetrics(SERVICE)
    log = new_log(metrics, prefix)

    append_red(log, model, 1)
    log.start()
    log.close()
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    try:
        (entry,) = client.xrange(prediction_log_key(prefix, SERVICE, COLOUR_MODEL))
    finally:
        client.close()

    # Outside a request there is no X-Request-ID, and the field is empty.
    assert PredictionRecord.from_fields(entry[1]).request_id == ""
