"""Detection without HTTP: image bytes in, boxes in original pixels and stage timings out.

The stages are decode (bytes to RGB, EXIF orientation applied), preprocess
(letterbox to the model input as `model.json` describes), inference
(onnxruntime) and postprocess (decoding, NMS and mapping the boxes back to
the original image). Decoding, preprocessing and postprocessing run in worker
threads, so the event loop keeps serving other requests; inference runs in the
model's batcher, together with the other requests that arrive at the same time.
When the prediction log is on, the decode stage also measures the input
statistics of the image, and each prediction appends its labels and scores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from services.common.imaging import DecodedImage, decode_image
from services.common.input_stats import InputStats
from services.common.letterbox import LetterboxTransform, letterbox_tensor
from services.common.model_selection import select_model
from services.common.pipeline import ModelPipeline, check_finite
from services.common.prediction_metrics import record_detections
from services.common.repository import LoadedModel
from services.common.settings import ModelServiceSettings
from services.common.stages import StageTimer
from services.detector.parameters import DetectionParameters, resolve_parameters
from services.detector.postprocess import postprocess
from services.detector.render import ImageFormat, draw_detections, encode_image
from services.detector.results import Detection, DetectionResult
from services.detector.settings import DetectorSettings


@dataclass(frozen=True)
class RenderedImage:
    content: bytes
    image_format: ImageFormat


class Detector(ModelPipeline[DetectorSettings]):
    """The detection pipeline over the models of a loaded repository."""

    def select(
        self,
        model_name: str | None,
        *,
        conf: float | None,
        iou: float | None,
        max_det: int | None,
        classes: Sequence[str] | None,
        agnostic: bool,
    ) -> tuple[LoadedModel, DetectionParameters]:
        """Resolve the request's model and parameters, or raise before the body is read.

        Raises ModelNotFound (404) for an unknown model and InvalidParameter
        (422) for a missing model name or a parameter out of range. Unset
        parameters take the defaults from the model's model.json.
        """
        model = select_model(self.repository, model_name, self.default_model)
        parameters = resolve_parameters(
            model,
            conf=conf,
            iou=iou,
            max_det=max_det,
            classes=classes,
            agnostic=agnostic,
            max_det_limit=self.settings.max_det_limit,
        )
        return model, parameters

    async def detect(
        self, data: bytes, model: LoadedModel, parameters: DetectionParameters
    ) -> DetectionResult:
        """Detect objects in one encoded image.

        Raises the errors of `decode_image` for bad image bytes, and QueueFull
        (503) when too many requests wait for the model.
        """
        result, _ = await self._detect(data, model, parameters)
        return result

    async def render(
        self,
        data: bytes,
        model: LoadedModel,
        parameters: DetectionParameters,
        image_format: ImageFormat,
    ) -> RenderedImage:
        """Detect objects and return the image, in its original size, with the boxes drawn."""
        result, image = await self._detect(data, model, parameters)
        return await self.run_in_worker(self._draw, result, image, image_format)

    def _draw(
        self, result: DetectionResult, image: Image.Image, image_format: ImageFormat
    ) -> RenderedImage:
        drawn = draw_detections(image, result.detections)
        content = encode_image(drawn, image_format, self.settings.render_jpeg_quality)
        return RenderedImage(content=content, image_format=image_format)

    async def _detect(
        self, data: bytes, model: LoadedModel, parameters: DetectionParameters
    ) -> tuple[DetectionResult, Image.Image]:
        timer = StageTimer(time.perf_counter())
        decoded, tensor, transform, inputs = await self.run_in_worker(
            self._prepare, data, model, timer
        )
        run = await self.batchers.submit(model, tensor[np.newaxis])
        timer.record_batch(run.inference_seconds)
        output = run.output[0]
        check_finite(output, model)
        detections = await self.run_in_worker(
            detections_from_output, output, model, parameters, transform
        )
        timer.lap("postprocess")
        record_detections(self.metrics, model, detections)
        if self.prediction_log is not None and inputs is not None:
            labels = [detection.label for detection in detections]
            scores = [detection.score for detection in detections]
            self.prediction_log.append(model, inputs, labels, scores)

        timer.observe(self.metrics, model)
        result = DetectionResult(
            model_name=model.name,
            model_version=model.version,
            detections=detections,
            width=decoded.width,
            height=decoded.height,
            timings=timer.timings(),
        )
        return result, decoded.image

    def _prepare(
        self, data: bytes, model: LoadedModel, timer: StageTimer
    ) -> tuple[DecodedImage, np.ndarray, LetterboxTransform, InputStats | None]:
        timer.lap("queue")
        decoded = decode_request_image(data, self.settings)
        inputs = self.measure_for_log(decoded)
        timer.lap("decode")
        tensor, transform = letterbox_tensor(decoded.image, model.metadata.preprocess)
        timer.lap("preprocess")
        return decoded, tensor, transform, inputs


def decode_request_image(data: bytes, settings: ModelServiceSettings) -> DecodedImage:
    """Decode one request image as `/v1/detect` does."""
    # Decoded at full size, without JPEG draft scaling, because ultralytics
    # letterboxes the full-size image and the boxes must match its output.
    return decode_image(data, max_pixels=settings.max_pixels, background=settings.alpha_background)


def detections_from_output(
    output: np.ndarray,
    model: LoadedModel,
    parameters: DetectionParameters,
    transform: LetterboxTransform,
) -> list[Detection]:
    """Run NMS on one image's raw model output and map the boxes to the original image."""
    found = postprocess(
        output,
        conf_threshold=parameters.conf_threshold,
        iou_threshold=parameters.iou_threshold,
        max_det=parameters.max_det,
        classes=parameters.classes,
        agnostic=parameters.agnostic,
    )
    boxes = transform.to_original(found.boxes)
    labels = model.metadata.labels
    return [
        Detection(
            label=labels[class_id],
            class_id=int(class_id),
            score=float(score),
            x1=float(box[0]),
            y1=float(box[1]),
            x2=float(box[2]),
            y2=float(box[3]),
        )
        for box, score, class_id in zip(boxes, found.scores, found.class_ids, strict=True)
    ]
