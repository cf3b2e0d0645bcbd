"""The micro-batcher on a real onnxruntime session of the colour model, without HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from services.common.batching import BatchPolicy, MicroBatcher, QueueFull, batch_policy
from services.common.metrics import ServiceMetrics
from services.common.repository import LoadedModel, ModelRepository
from services.common.session_config import SessionConfig
from services.common.settings import BatchingOverride, ModelServiceSettings
from tests.onnx_models import (
    COLOUR_MODEL,
    INPUT_SIZE,
    build_colour_repository,
    colour_classifier,
    colour_metadata,
    write_model_version,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def load_model(root: Path) -> LoadedModel:
    repository = ModelRepository(
        root,
        task="classification",
        session_config=SessionConfig(intra_op_threads=1, inter_op_threads=1),
    )
    repository.load()
    return repository.get(COLOUR_MODEL)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(build_colour_repository(tmp_path_factory.mktemp("models")))


def policy(**changes: object) -> BatchPolicy:
    values: dict[str, object] = {
        "enabled": True,
        "max_batch_size": 8,
        "max_queue_delay_ms": 50.0,
        "max_queue_size": 64,
    }
    values.update(changes)
    return BatchPolicy(**values)  # type: ignore[arg-type]


def colour_rows(count: int, seed: int = 0) -> np.ndarray:
    """Random preprocessed inputs in [-1, 1], one row per image."""
    generator = np.random.default_rng(seed)
    shape = (count, 3, INPUT_SIZE, INPUT_SIZE)
    return generator.uniform(-1, 1, size=shape).astype(np.float32)


def batch_sizes(metrics: ServiceMetrics) -> list[float]:
    """Return [count, sum] of the batch size histogram of the colour model."""
    labels = {"service": "test", "model": COLOUR_MODEL}
    count = metrics.registry.get_sample_value("visionserve_batch_size_count", labels) or 0.0
    total = metrics.registry.get_sample_value("visionserve_batch_size_sum", labels) or 0.0
    return [count, total]


async def test_concurrent_requests_run_as_one_batch(model: LoadedModel) -> None:
    metrics = ServiceMetrics("test")
    batcher = MicroBatcher(model, policy(max_queue_delay_ms=200.0), metrics)
    inputs = colour_rows(5)

    runs = await asyncio.gather(*(batcher.submit(inputs[i : i + 1]) for i in range(5)))

    assert [run.batch_size for run in runs] == [5] * 5
    assert batch_sizes(metrics) == [1.0, 5.0]
    expected = model.run(inputs)
    for index, run in enumerate(runs):
        np.testing.assert_allclose(run.output, expected[index : index + 1], rtol=1e-6, atol=1e-6)


async def test_full_batch_skips_delay(model: LoadedModel) -> None:
    # A delay far longer than the test: only a full batch lets it finish in time.
    batcher = MicroBatcher(
        model, policy(max_batch_size=4, max_queue_delay_ms=1000.0 * 60), ServiceMetrics("test")
    )
    inputs = colour_rows(4)

    runs = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(inputs[i : i + 1]) for i in range(4))), timeout=30
    )

    assert {run.batch_size for run in runs} == {4}


async def test_lone_request_waits_for_delay(model: LoadedModel) -> None:
    delay_ms = 300.0
    batcher = MicroBatcher(model, policy(max_queue_delay_ms=delay_ms), ServiceMetrics("test"))

    run = await asyncio.wait_for(batcher.submit(colour_rows(1)), timeout=30)

    assert run.batch_size == 1
    # It waited for company for the whole delay, and then ran alone.
    assert run.queue_seconds >= delay_ms / 1000.0 * 0.9


async def test_batches_never_exceed_max_batch_size(model: LoadedModel) -> None:
    metrics = ServiceMetrics("test")
    batcher = MicroBatcher(model, policy(max_batch_size=3, max_queue_delay_ms=100.0), metrics)
    inputs = colour_rows(7)

    runs = await asyncio.gather(*(batcher.submit(inputs[i : i + 1]) for i in range(7)))

    assert max(run.batch_size for run in runs) == 3
    count, total = batch_sizes(metrics)
    assert total == 7
    assert count >= 3
    np.testing.assert_allclose(
        np.concatenate([run.output for run in runs]), model.run(inputs), rtol=1e-6, atol=1e-6
    )


async def test_multi_row_requests_get_their_own_rows(model: LoadedModel) -> None:
    batcher = MicroBatcher(model, policy(max_queue_delay_ms=100.0), ServiceMetrics("test"))
    first, second = colour_rows(3, seed=1), colour_rows(2, seed=2)

    run_first, run_second = await asyncio.gather(batcher.submit(first), batcher.submit(second))

    assert run_first.batch_size == run_second.batch_size == 5
    np.testing.assert_allclose(run_first.output, model.run(first), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(run_second.output, model.run(second), rtol=1e-6, atol=1e-6)


async def test_disabled_batching_runs_each_request_alone(model: LoadedModel) -> None:
    metrics = ServiceMetrics("test")
    batcher = MicroBatcher(model, policy(enabled=False), metrics)
    inputs = colour_rows(4)

    runs = await asyncio.gather(*(batcher.submit(inputs[i : i + 1]) for i in range(4)))

    assert [run.batch_size for run in runs] == [1, 1, 1, 1]
    assert batch_sizes(metrics) == [4.0, 4.0]


async def test_full_queue_rejects_with_retry_after(model: LoadedModel) -> None:
    metrics = ServiceMetrics("test")
    batcher = MicroBatcher(model, policy(max_queue_size=2, max_queue_delay_ms=500.0), metrics)
    waiting = [asyncio.create_task(batcher.submit(colour_rows(1))) for _ in range(2)]
    await asyncio.sleep(0)  # let both join the queue

    with pytest.raises(QueueFull) as raised:
        await batcher.submit(colour_rows(1))

    assert raised.value.status_code == 503
    assert raised.value.headers["Retry-After"] == "1"
    rejected = metrics.registry.get_sample_value(
        "visionserve_queue_rejected_total", {"service": "test", "model": COLOUR_MODEL}
    )
    assert rejected == 1.0
    assert [run.batch_size for run in await asyncio.gather(*waiting)] == [2, 2]


async def test_cancelled_request_leaves_batch(model: LoadedModel) -> None:
    batcher = MicroBatcher(model, policy(max_queue_delay_ms=300.0), ServiceMetrics("test"))
    leaving = asyncio.create_task(batcher.submit(colour_rows(1, seed=1)))
    staying = asyncio.create_task(batcher.submit(colour_rows(1, seed=2)))
    await asyncio.sleep(0)
    leaving.cancel()

    run = await staying

    assert run.batch_size == 1
    assert leaving.cancelled()


async def test_failing_batch_then_recovers(model: LoadedModel) -> None:
    batcher = MicroBatcher(model, policy(max_queue_delay_ms=100.0), ServiceMetrics("test"))
    wrong_shape = np.zeros((1, 3, INPUT_SIZE + 1, INPUT_SIZE + 1), dtype=np.float32)

    results = await asyncio.gather(
        batcher.submit(colour_rows(1)), batcher.submit(wrong_shape), return_exceptions=True
    )

    assert all(isinstance(result, Exception) for result in results)
    assert all(getattr(result, "status_code", None) == 500 for result in results)
    # The batcher keeps working for later requests.
    run = await batcher.submit(colour_rows(1))
    assert run.output.shape == (1, 3)


def test_policy_applies_per_model_overrides(model: LoadedModel) -> None:
    settings = ModelServiceSettings(
        max_batch_size=16,
        max_queue_delay_ms=4,
        model_batching={COLOUR_MODEL: BatchingOverride(enabled=False, max_queue_size=3)},
    )

    assert batch_policy(settings, model) == BatchPolicy(False, 16, 4.0, 3)
    assert batch_policy(ModelServiceSettings(), model).enabled


def test_graph_with_fixed_batch_size_turns_batching_off(tmp_path: Path) -> None:
    write_model_version(tmp_path, colour_classifier(batch_dim=1), colour_metadata())
    fixed = load_model(tmp_path)

    assert fixed.fixed_batch_size == 1
    assert not batch_policy(ModelServiceSettings(), fixed).enabled


async def test_fixed_batch_graph_runs_rows_singly(tmp_path: Path) -> None:
    write_model_version(tmp_path, colour_classifier(batch_dim=1), colour_metadata())
    fixed = load_model(tmp_path)
    batcher = MicroBatcher(fixed, batch_policy(ModelServiceSettings(), fixed), ServiceMetrics("t"))
    inputs = colour_rows(3)

    run = await batcher.submit(inputs)

    expected = np.concatenate([fixed.run(inputs[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(run.output, expected, rtol=1e-6, atol=1e-6)
