"""Classification without HTTP: image bytes in, top-k labels and stage timings out.

The stages are decode (bytes to RGB), preprocess (RGB to the input tensor as
`model.json` describes), inference (onnxruntime) and postprocess (softmax and
top-k). They run in a worker thread, so the event loop keeps serving other
requests while one image is being classified.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import anyio
import anyio.to_thread
import numpy as np
from prometheus_client import Histogram

from services.classifier.settings import ClassifierSettings
from services.common.errors import InvalidParameter, ServiceError
from services.common.imaging import decode_image
from services.common.metrics import LATENCY_BUCKETS, ServiceMetrics
from services.common.preprocess import draft_request, preprocess
from services.common.repository import (
    LoadedModel,
    ModelLoadError,
    ModelRepository,
    available_threads,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    label: str
    class_id: int
    probability: float


@dataclass(frozen=True)
class StageTimings:
    """Milliseconds per stage. `total` also covers the wait for a worker thread."""

    decode: float
    preprocess: float
    inference: float
    postprocess: float
    total: float


@dataclass(frozen=True)
class Classification:
    """The result for one image. `width` and `height` are the image as the user sees it."""

    model_name: str
    model_version: int
    predictions: list[Prediction]
    width: int
    height: int
    timings: StageTimings


def softmax(logits: np.ndarray) -> np.ndarray:
    """Return softmax probabilities of a 1-D logit vector, computed in float64."""
    shifted = logits.astype(np.float64) - np.max(logits)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum()


def top_k_predictions(logits: np.ndarray, labels: list[str], top_k: int) -> list[Prediction]:
    """Return the `top_k` most probable classes, highest first, ties in class order."""
    probabilities = softmax(logits)
    order = np.argsort(-probabilities, kind="stable")[:top_k]
    return [
        Prediction(labels[index], class_id=int(index), probability=float(probabilities[index]))
        for index in order
    ]


class Classifier:
    """The classification pipeline over the models of a loaded repository."""

    def __init__(
        self, repository: ModelRepository, settings: ClassifierSettings, metrics: ServiceMetrics
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.metrics = metrics
        self.default_model = _default_model(repository, settings)
        self._limiter = anyio.CapacityLimiter(settings.worker_threads or available_threads())
        self._stage_latency = Histogram(
            "visionserve_stage_duration_seconds",
            "Per-request time in seconds of each classification stage, by model.",
            ["service", "model", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=metrics.registry,
        )

    def select(self, model_name: str | None, top_k: int | None) -> tuple[LoadedModel, int]:
        """Resolve the request's model and top_k, or raise before the body is read.

        Raises ModelNotFound (404) for an unknown model and InvalidParameter
        (422) for a missing model name or a top_k out of range. Without top_k,
        `default_top_k` capped at the allowed range is used.
        """
        if model_name is None:
            if self.default_model is None:
                raise InvalidParameter(
                    "query parameter 'model' is required because several models are served: "
                    f"{', '.join(self.repository.names)}"
                )
            model_name = self.default_model
        model = self.repository.get(model_name)

        limit = min(self.settings.max_top_k, model.metadata.num_classes)
        if top_k is None:
            return model, min(self.settings.default_top_k, limit)
        if not 1 <= top_k <= limit:
            raise InvalidParameter(
                f"query parameter 'top_k' must be between 1 and {limit} for model "
                f"{model.name} ({model.metadata.num_classes} labels, max_top_k "
                f"{self.settings.max_top_k}); got {top_k}"
            )
        return model, top_k

    async def classify(self, data: bytes, model: LoadedModel, top_k: int) -> Classification:
        """Classify one encoded image in a worker thread.

        Raises the errors of `decode_image` for bad image bytes.
        """
        queued_at = time.perf_counter()
        return await anyio.to_thread.run_sync(
            self._classify_sync, data, model, top_k, queued_at, limiter=self._limiter
        )

    def _classify_sync(
        self, data: bytes, model: LoadedModel, top_k: int, queued_at: float
    ) -> Classification:
        spec = model.metadata.preprocess
        started = time.perf_counter()
        decoded = decode_image(
            data,
            max_pixels=self.settings.max_pixels,
            draft_size=draft_request(spec),
            background=self.settings.alpha_background,
        )
        decoded_at = time.perf_counter()
        batch = preprocess(decoded.image, spec)[np.newaxis]
        preprocessed_at = time.perf_counter()
        logits = model.run(batch)[0]
        inferred_at = time.perf_counter()
        if not np.all(np.isfinite(logits)):
            logger.error(
                "model returned NaN or infinite logits",
                extra={"model": model.name, "version": model.version},
            )
            raise ServiceError("the model returned an invalid output; see the service log")
        predictions = top_k_predictions(logits, model.metadata.labels, top_k)
        finished = time.perf_counter()

        stage_seconds = {
            "queue": started - queued_at,
            "decode": decoded_at - started,
            "preprocess": preprocessed_at - decoded_at,
            "inference": inferred_at - preprocessed_at,
            "postprocess": finished - inferred_at,
        }
        self._observe(model, stage_seconds)
        timings = StageTimings(
            decode=_milliseconds(stage_seconds["decode"]),
            preprocess=_milliseconds(stage_seconds["preprocess"]),
            inference=_milliseconds(stage_seconds["inference"]),
            postprocess=_milliseconds(stage_seconds["postprocess"]),
            total=_milliseconds(finished - queued_at),
        )
        return Classification(
            model_name=model.name,
            model_version=model.version,
            predictions=predictions,
            width=decoded.width,
            height=decoded.height,
            timings=timings,
        )

    def _observe(self, model: LoadedModel, stage_seconds: dict[str, float]) -> None:
        service = self.metrics.service
        self.metrics.inference_latency.labels(service, model.name, str(model.version)).observe(
            stage_seconds["inference"]
        )
        for stage, seconds in stage_seconds.items():
            self._stage_latency.labels(service, model.name, stage).observe(seconds)


def _default_model(repository: ModelRepository, settings: ClassifierSettings) -> str | None:
    """Return the configured default model, or the only model, or None when there are several."""
    if settings.default_model is not None:
        if settings.default_model not in repository.names:
            raise ModelLoadError(
                f"default_model {settings.default_model!r} is not among the served models: "
                f"{', '.join(repository.names)}"
            )
        return settings.default_model
    names = repository.names
    return names[0] if len(names) == 1 else None


def _milliseconds(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
