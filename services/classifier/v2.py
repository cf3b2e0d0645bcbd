"""The classifier's part of the Open Inference Protocol: its inputs, outputs and model work.

Outputs, for either kind of input: the model's own output (logits) and
`probabilities`, the softmax that `/v1/classify` reports. Both accept Triton's
classification extension. Images are decoded in the pipeline's worker
threads, and both kinds of input run in the model's batcher, with `/v1` requests.

Image inputs go to the prediction log like `/v1/classify` requests. Tensor
inputs do not, because they carry no image to measure input statistics on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from services.classifier.model import log_top1, softmax, top_k_predictions
from services.classifier.settings import ClassifierSettings
from services.common.inference_protocol.adapter import InferencePlan
from services.common.inference_protocol.inputs import (
    TensorInput,
    decode_image_file,
    infer_tensor,
    input_metadata,
    read_input,
)
from services.common.inference_protocol.request_codec import InputTensor
from services.common.inference_protocol.schemas import MetadataTensor, ParameterValue
from services.common.input_stats import InputStats
from services.common.pipeline import ModelPipeline, check_finite
from services.common.preprocess import draft_request, preprocess_batch
from services.common.repository import LoadedModel
from services.common.stages import StageTimer

PROBABILITIES_OUTPUT = "probabilities"


def output_names(model: LoadedModel) -> tuple[str, ...]:
    # NOTE: a model whose own output is named "probabilities" gets one output
    # of that name, the softmax computed here.
    return tuple(dict.fromkeys((model.metadata.output_names[0], PROBABILITIES_OUTPUT)))


async def classify_images(
    pipeline: ModelPipeline[Any], model: LoadedModel, files: Sequence[bytes]
) -> np.ndarray:
    """Decode and preprocess image files exactly as `/v1/classify` does; return their logits."""
    timer = StageTimer(time.perf_counter())
    batch, inputs = await pipeline.run_in_worker(_prepare_images, pipeline, model, files, timer)
    run = await pipeline.batchers.submit(model, batch)
    timer.record_batch(run.inference_seconds)
    check_finite(run.output, model)
    timer.observe(pipeline.metrics, model)
    labels = model.metadata.labels
    for row, measured in zip(run.output, inputs, strict=True):
        log_top1(pipeline.prediction_log, model, measured, top_k_predictions(row, labels, 1))
    return run.output


def _prepare_images(
    pipeline: ModelPipeline[Any], model: LoadedModel, files: Sequence[bytes], timer: StageTimer
) -> tuple[np.ndarray, list[InputStats | None]]:
    timer.lap("queue")
    settings: ClassifierSettings = pipeline.settings
    spec = model.metadata.preprocess
    decoded = [
        decode_image_file(
            data,
            index,
            max_pixels=settings.max_pixels,
            background=settings.alpha_background,
            draft_size=draft_request(spec),
        )
        for index, data in enumerate(files)
    ]
    inputs = [pipeline.measure_for_log(item) for item in decoded]
    timer.lap("decode")
    batch = preprocess_batch([item.image for item in decoded], spec)
    timer.lap("preprocess")
    return batch, inputs


class ClassifierProtocolAdapter:
    """Plugs the classifier into the shared protocol routes."""

    server_name = "visionserve-classifier"
    extensions = ("binary_tensor_data", "classification")
    request_parameters: tuple[str, ...] = ()

    def inputs(self, pipeline: ModelPipeline[Any], model: LoadedModel) -> list[MetadataTensor]:
        return input_metadata(model, pipeline.settings.max_batch_images)

    def outputs(self, pipeline: ModelPipeline[Any], model: LoadedModel) -> list[MetadataTensor]:
        shape = [-1, model.metadata.num_classes]
        return [
            MetadataTensor(name=name, datatype="FP32", shape=shape) for name in output_names(model)
        ]

    def plan(
        self,
        pipeline: ModelPipeline[Any],
        model: LoadedModel,
        inputs: Sequence[InputTensor],
        parameters: Mapping[str, ParameterValue],
    ) -> InferencePlan:
        settings: ClassifierSettings = pipeline.settings
        request_input = read_input(
            inputs,
            model,
            max_images=settings.max_batch_images,
            max_tensor_batch=settings.max_batch_images,
        )

        async def compute() -> dict[str, np.ndarray]:
            if isinstance(request_input, TensorInput):
                logits = await infer_tensor(pipeline, model, request_input.batch)
            else:
                logits = await classify_images(pipeline, model, request_input.files)
            return _outputs(model, logits)

        names = output_names(model)
        return InferencePlan(
            output_names=names,
            compute=compute,
            classifiable=frozenset(names),
            labels=model.metadata.labels,
            classification_limit=min(settings.max_top_k, model.metadata.num_classes),
        )


def _outputs(model: LoadedModel, logits: np.ndarray) -> dict[str, np.ndarray]:
    # The softmax of /v1/classify, in float64, so that both APIs report the same numbers.
    probabilities = np.stack([softmax(row) for row in logits]).astype(np.float32)
    return {
        model.metadata.output_names[0]: logits.astype(np.float32, copy=False),
        PROBABILITIES_OUTPUT: probabilities,
    }
