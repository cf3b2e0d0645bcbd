"""The detector's part of the Open Inference Protocol: its inputs, outputs and model work.

A tensor input returns the model's raw output. An `image` input (one image
per request) returns the detections of `/v1/detect`: `boxes` FP32 [D, 4]
xyxy in original pixels, `scores` FP32 [D], `class_ids` INT64 [D] and
`labels` BYTES [D]. The request parameters `conf`, `iou` and `max_det`
apply to the image input. Both kinds of input run in the model's batcher,
with `/v1` requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from services.common.errors import InvalidParameter, InvalidRequest
from services.common.inference_protocol.adapter import InferencePlan
from services.common.inference_protocol.inputs import (
    TensorInput,
    check_not_empty,
    image_element,
    infer_tensor,
    input_metadata,
    read_input,
)
from services.common.inference_protocol.request_codec import InputTensor
from services.common.inference_protocol.schemas import MetadataTensor, ParameterValue
from services.common.pipeline import ModelPipeline
from services.common.repository import LoadedModel
from services.detector.model import Detector
from services.detector.parameters import DetectionParameters, resolve_parameters
from services.detector.postprocess import BOX_ROWS
from services.detector.settings import DetectorSettings

BOXES_OUTPUT = "boxes"
SCORES_OUTPUT = "scores"
CLASS_IDS_OUTPUT = "class_ids"
LABELS_OUTPUT = "labels"
DETECTION_OUTPUTS = (BOXES_OUTPUT, SCORES_OUTPUT, CLASS_IDS_OUTPUT, LABELS_OUTPUT)
DETECTION_PARAMETERS = ("conf", "iou", "max_det")
MAX_IMAGES = 1


async def detect_image(
    detector: Detector, model: LoadedModel, data: bytes, parameters: DetectionParameters
) -> dict[str, np.ndarray]:
    """Detect objects in one image file with the code of `/v1/detect`; return the four outputs."""
    with image_element(0):
        check_not_empty(data, 0)
        result = await detector.detect(data, model, parameters)

    detections = result.detections
    labels = np.empty(len(detections), dtype=np.object_)
    labels[:] = [detection.label.encode() for detection in detections]
    boxes = [[item.x1, item.y1, item.x2, item.y2] for item in detections]
    return {
        BOXES_OUTPUT: np.array(boxes, dtype=np.float32).reshape(-1, 4),
        SCORES_OUTPUT: np.array([item.score for item in detections], dtype=np.float32),
        CLASS_IDS_OUTPUT: np.array([item.class_id for item in detections], dtype=np.int64),
        LABELS_OUTPUT: labels,
    }


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
            batch = request_input.batch
            raw_name = model.metadata.output_names[0]

            async def compute_raw() -> dict[str, np.ndarray]:
                return {raw_name: await infer_tensor(pipeline, model, batch)}

            return InferencePlan(output_names=(raw_name,), compute=compute_raw)

        if not isinstance(pipeline, Detector):
            raise TypeError(f"the detector adapter needs a Detector, got {type(pipeline)}")
        detector = pipeline
        detection = _detection_parameters(pipeline, model, parameters)
        (data,) = request_input.files

        async def compute_detections() -> dict[str, np.ndarray]:
            return await detect_image(detector, model, data, detection)

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
