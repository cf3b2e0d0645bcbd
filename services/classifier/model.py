"""Classification without HTTP: image bytes in, top-k labels and stage timings out.

The stages are decode (bytes to RGB), preprocess (RGB to the input tensor as
`model.json` describes), inference (onnxruntime) and postprocess (softmax and
top-k). Decoding and preprocessing run in a worker thread, so the event loop
keeps serving other requests; inference runs in the model's batcher, together
with the other requests that arrive at the same time. When the prediction log
is on, the decode stage also measures the input statistics of each image.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from services.classifier.settings import ClassifierSettings
from services.common.errors import InvalidParameter, ServiceError
from services.common.imaging import DecodedImage, decode_image
from services.common.input_stats import InputStats
from services.common.metadata import PreprocessSpec
from services.common.model_selection import select_model
from services.common.pipeline import ModelPipeline, check_finite
from services.common.prediction_log import PredictionLog
from services.common.prediction_metrics import record_classifications
from services.common.preprocess import draft_request, preprocess, preprocess_batch
from services.common.repository import LoadedModel
from services.common.settings import ModelServiceSettings
from services.common.stages import StageTimer, StageTimings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    label: str
    class_id: int
    probability: float


@dataclass(frozen=True)
class Classification:
    """The result for one image. `width` and `height` are the image as the user sees it."""

    model_name: str
    model_version: int
    predictions: list[Prediction]
    width: int
    height: int
    timings: StageTimings


@dataclass(frozen=True)
class BatchEntry:
    """The result for one image of a batch: predictions and size, or the error that rejected it."""

    predictions: list[Prediction] | None = None
    width: int = 0
    height: int = 0
    error: ServiceError | None = None


@dataclass(frozen=True)
class BatchClassification:
    """The results of a batch request, in request order, with the timings of the whole batch."""

    model_name: str
    model_version: int
    entries: list[BatchEntry]
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


def top_k_limit(settings: ClassifierSettings, model: LoadedModel) -> int:
    """Return the largest top_k that a request may ask of `model`."""
    return min(settings.max_top_k, model.metadata.num_classes)


def default_top_k(settings: ClassifierSettings, model: LoadedModel) -> int:
    """Return the top_k of a request that sets none: `default_top_k` capped at the limit."""
    return min(settings.default_top_k, top_k_limit(settings, model))


def decode_request_image(
    data: bytes, spec: PreprocessSpec, settings: ModelServiceSettings
) -> DecodedImage:
    """Decode one request image as `/v1/classify` does, letting JPEGs decode at reduced scale."""
    return decode_image(
        data,
        max_pixels=settings.max_pixels,
        draft_size=draft_request(spec),
        background=settings.alpha_background,
    )


def log_top1(
    prediction_log: PredictionLog | None,
    model: LoadedModel,
    inputs: InputStats | None,
    predictions: list[Prediction],
) -> None:
    """Append the top-1 prediction of one image to the prediction log, when it is on."""
    if prediction_log is None or inputs is None or not predictions:
        return
    top = predictions[0]
    prediction_log.append(model, inputs, [top.label], [top.probability])


class Classifier(ModelPipeline[ClassifierSettings]):
    """The classification pipeline over the models of a loaded repository."""

    def select(self, model_name: str | None, top_k: int | None) -> tuple[LoadedModel, int]:
        """Resolve the request's model and top_k, or raise before the body is read.

        Raises ModelNotFound (404) for an unknown model and InvalidParameter
        (422) for a missing model name or a top_k out of range. Without top_k,
        `default_top_k` capped at the allowed range is used.
        """
        model = select_model(self.repository, model_name, self.default_model)

        limit = top_k_limit(self.settings, model)
        if top_k is None:
            return model, default_top_k(self.settings, model)
        if not 1 <= top_k <= limit:
            raise InvalidParameter(
                f"query parameter 'top_k' must be between 1 and {limit} for model "
                f"{model.name} ({model.metadata.num_classes} labels, max_top_k "
                f"{self.settings.max_top_k}); got {top_k}"
            )
        return model, top_k

    async def classify(self, data: bytes, model: LoadedModel, top_k: int) -> Classification:
        """Classify one encoded image: decode in a worker thread, then join a batch.

        Raises the errors of `decode_image` for bad image bytes, and QueueFull
        (503) when too many requests wait for the model.
        """
        timer = StageTimer(time.perf_counter())
        decoded, tensor, inputs = await self.run_in_worker(self._prepare, data, model, timer)
        run = await self.batchers.submit(model, tensor[np.newaxis])
        timer.record_batch(run.inference_seconds)
        logits = run.output[0]
        check_finite(logits, model)
        predictions = top_k_predictions(logits, model.metadata.labels, top_k)
        timer.lap("postprocess")
        record_classifications(self.metrics, model, [predictions])
        log_top1(self.prediction_log, model, inputs, predictions)

        timer.observe(self.metrics, model)
        return Classification(
            model_name=model.name,
            model_version=model.version,
            predictions=predictions,
            width=decoded.width,
            height=decoded.height,
            timings=timer.timings(),
        )

    def _prepare(
        self, data: bytes, model: LoadedModel, timer: StageTimer
    ) -> tuple[DecodedImage, np.ndarray, InputStats | None]:
        timer.lap("queue")
        spec = model.metadata.preprocess
        decoded = decode_request_image(data, spec, self.settings)
        inputs = self.measure_for_log(decoded)
        timer.lap("decode")
        tensor = preprocess(decoded.image, spec)
        timer.lap("preprocess")
        return decoded, tensor, inputs

    async def classify_batch(
        self, images: list[bytes], model: LoadedModel, top_k: int
    ) -> BatchClassification:
        """Classify several encoded images, which run together in one batch.

        An image that cannot be decoded gets its own error entry, and the
        others are still classified.
        """
        timer = StageTimer(time.perf_counter())
        decoded, errors, tensors, inputs = await self.run_in_worker(
            self._prepare_batch, images, model, timer
        )
        logits = np.zeros((0, model.metadata.num_classes), dtype=np.float32)
        if decoded:
            # Without any decoded image nothing runs, so no inference is timed.
            run = await self.batchers.submit(model, tensors)
            timer.record_batch(run.inference_seconds)
            logits = run.output
            check_finite(logits, model)
        labels = model.metadata.labels
        predictions = {
            index: top_k_predictions(row, labels, top_k)
            for index, row in zip(decoded, logits, strict=True)
        }
        timer.lap("postprocess")
        record_classifications(self.metrics, model, predictions.values())
        for index, ranked in predictions.items():
            log_top1(self.prediction_log, model, inputs.get(index), ranked)

        timer.observe(self.metrics, model)
        entries = [
            BatchEntry(error=errors[index])
            if index in errors
            else BatchEntry(
                predictions=predictions[index],
                width=decoded[index].width,
                height=decoded[index].height,
            )
            for index in range(len(images))
        ]
        return BatchClassification(model.name, model.version, entries, timer.timings())

    def _prepare_batch(
        self, images: list[bytes], model: LoadedModel, timer: StageTimer
    ) -> tuple[dict[int, DecodedImage], dict[int, ServiceError], np.ndarray, dict[int, InputStats]]:
        timer.lap("queue")
        spec = model.metadata.preprocess
        decoded: dict[int, DecodedImage] = {}
        errors: dict[int, ServiceError] = {}
        for index, data in enumerate(images):
            try:
                decoded[index] = decode_request_image(data, spec, self.settings)
            except ServiceError as error:
                if error.status_code >= 500:
                    raise
                logger.info(
                    "rejected image %d of a batch: %s",
                    index,
                    error.message,
                    extra={"model": model.name, "code": error.code},
                )
                errors[index] = error
        inputs: dict[int, InputStats] = {}
        for index, item in decoded.items():
            measured = self.measure_for_log(item)
            if measured is not None:
                inputs[index] = measured
        timer.lap("decode")
        tensors = preprocess_batch([item.image for item in decoded.values()], spec)
        timer.lap("preprocess")
        return decoded, errors, tensors, inputs
