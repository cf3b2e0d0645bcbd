"""The detector's part of the Open Inference Protocol: its inputs, outputs and model work.

A tensor input returns the model's raw output. An `image` input (one image
per request) returns the detections of `/v1/detect`: `boxes` FP32 [D, 4]
xyxy in original pixels, `scores` FP32 [D], `class_ids` INT64 [D] and
`labels` BYTES [D]. The request parameters `conf`, `iou` and `max_det`
apply to the image input. Each kind of input has one blocking function
below, run through the pipeline's worker threads.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from services.common.errors import InvalidParameter, InvalidRequest
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
from services.common.letterbox import letterbox_tensor
from services.common.pipeline import ModelPipeline, check_finite
from services.common.repository import LoadedModel
from services.common.stages import StageTimer
from services.detector.parameters import DetectionParameters, resolve_parameters
from services.detector.postprocess import BOX_ROWS, postprocess
from services.detector.settings import DetectorSettings

BOXES_OUTPUT = "boxes"
SCORES_OUTPUT = "scores"
CLASS_IDS_OUTPUT = "class_ids"
LABELS_OUTPUT = "labels"
DETECTION_OUTPUTS = (BOXES_OUTPUT, SCORES_OUTPUT, CLASS_IDS_OUTPUT, LABELS_OUTPUT)
DETECTION_PARAMETERS = ("conf", "iou", "max_det")
MAX_IMAGES = 1


def detect_tensor(
    pipeline: ModelPipeline[Any], model: LoadedModel, batch: np.ndarray
) -> np.ndarray:
    """Return the raw output of a client's letterboxed (N, C, H, W) batch."""
    return infer_tensor(pipeline.metrics, model, batch)


def detect_image(
    pipeline: ModelPipeline[Any],
    model: LoadedModel,
    data: bytes,
    parameters: DetectionParameters,
) -> dict[str, np.ndarray]:
    """Detect objects in one image file exactly as `/v1/detect` does; return the four outputs."""
    settings: DetectorSettings = pipeline.settings
    timer = StageTimer(time.perf_counter())

    # Full size, without JPEG draft scaling, as /v1/detect decodes.
    decoded = decode_image_file(
        data, 0, max_pixels=settings.max_pixels, background=settings.alpha_background
    )
    timer.lap("decode")
    tensor, transform = letterbox_tensor(decoded.image, model.metadata.preprocess)
    timer.lap("preprocess")
    output = model.run(tensor[np.newaxis])[0]
    timer.lap("inference")
    check_finite(output, model)

    found = postprocess(
        output,
        conf_threshold=parameters.conf_threshold,
        iou_threshold=parameters.iou_threshold,
        max_det=parameters.max_det,
        classes=parameters.classes,
        agnostic=parameters.agnostic,
    )

    labels = np.empty(len(found), dtype=np.object_)
    labels[:] = [model.metadata.labels[class_id].encode() for class_id in found.class_ids]
    outputs: dict[str, np.ndarray] = {
        BOXES_OUTPUT: transform.to_original(found.boxes).astype(np.float32),
        SCORES_OUTPUT: found.scores.astype(np.float32),
        CLASS_IDS_OUTPUT: found.class_ids.astype(np.int64),
        LABELS_OUTPUT: labels,
    }
    timer.lap("postprocess")

    timer.observe(pipeline.metrics, model)
    return outputs


class DetectorProtocolAdapter:
    """Plugs the detector into the shared protocol routes."""

    server_name = "visionserve-detector"
    extensions = ("binary_tensor_data",)
    request_parameters = DETECTION_PARAMETERS

    def inputs(self, pipeline: ModelPipeline[Any], model: LoadedModel) -> list[MetadataTensor]:
        return input_metadata(model, MAX_IMAGES)

    def outputs(self, pipeline: ModelPipeline[Any], model: LoadedModel) -> list[MetadataTensor]:
        raw = MetadataTensor(
            name=model.metadata.output_names[0],
            datatype="FP32",
            shape=[-1, BOX_ROWS + model.metadata.num_classes, _anchors(model)],
        )
        return [
            raw,
            MetadataTensor(name=BOXES_OUTPUT, datatype="FP32", shape=[-1, 4]),
            MetadataTensor(name=SCORES_OUTPUT, datatype="FP32", shape=[-1]),
            MetadataTensor(name=CLASS_IDS_OUTPUT, datatype="INT64", shape=[-1]),
            MetadataTensor(name=LABELS_OUTPUT, datatype="BYTES", shape=[-1]),
        ]

    def plan(
        self,
        pipeline: ModelPipeline[Any],
        model: LoadedModel,
        inputs: Sequence[InputTensor],
        parameters: Mapping[str, ParameterValue],
    ) -> InferencePlan:
        request_input = read_input(inputs, model, max_images=MAX_IMAGES)
        if isinstance(request_input, TensorInput):
            if parameters.keys() & set(DETECTION_PARAMETERS):
                raise InvalidRequest(
                    f"the parameters {', '.join(DETECTION_PARAMETERS)} apply to the 'image' "
                    "input only; a tensor input returns the raw model output"
                )
            run_tensor = partial(detect_tensor, pipeline, model, request_input.batch)
            raw_name = model.metadata.output_names[0]

            async def compute_raw() -> dict[str, np.ndarray]:
                return {raw_name: await pipeline.run_in_worker(run_tensor)}

            return InferencePlan(output_names=(raw_name,), compute=compute_raw)

        detection = _detection_parameters(pipeline, model, parameters)
        (data,) = request_input.files
        run_image = partial(detect_image, pipeline, model, data, detection)

        async def compute_detections() -> dict[str, np.ndarray]:
            return await pipeline.run_in_worker(run_image)

        return InferencePlan(output_names=DETECTION_OUTPUTS, compute=compute_detections)


def _detection_parameters(
    pipeline: ModelPipeline[Any], model: LoadedModel, parameters: Mapping[str, ParameterValue]
) -> DetectionParameters:
    settings: DetectorSettings = pipeline.settings
    conf = _number(parameters, "conf")
    iou = _number(parameters, "iou")
    max_det = parameters.get("max_det")
    if max_det is not None and (isinstance(max_det, bool) or not isinstance(max_det, int)):
        raise InvalidRequest("request parameter 'max_det' must be an integer")
    try:
        return resolve_parameters(
            model,
            conf=conf,
            iou=iou,
            max_det=max_det,
            classes=None,
            agnostic=False,
            max_det_limit=settings.max_det_limit,
            source="request parameter",
        )
    except InvalidParameter as error:
        # The protocol reports every invalid request as 400.
        raise InvalidRequest(error.message) from error


def _number(parameters: Mapping[str, ParameterValue], name: str) -> float | None:
    value = parameters.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"request parameter {name!r} must be a number between 0 and 1")
    return float(value)


def _anchors(model: LoadedModel) -> int:
    output_name = model.metadata.output_names[0]
    for node in model.session.get_outputs():
        if node.name == output_name and isinstance(node.shape[-1], int):
            return node.shape[-1]
    return -1
