"""Detection without HTTP: image bytes in, boxes in original pixels and stage timings out.

The stages are decode (bytes to RGB, EXIF orientation applied), preprocess
(letterbox to the model input as `model.json` describes), inference
(onnxruntime) and postprocess (decoding, NMS and mapping the boxes back to
the original image). They run in a worker thread, so the event loop keeps
serving other requests while one image is being processed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from services.common.imaging import decode_image
from services.common.letterbox import letterbox_tensor
from services.common.model_selection import select_model
from services.common.pipeline import ModelPipeline, check_finite
from services.common.prediction_metrics import record_detections
from services.common.repository import LoadedModel
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
        """Detect objects in one encoded image in a worker thread.

        Raises the errors of `decode_image` for bad image bytes.
        """
        queued_at = time.perf_counter()
        result, _ = await self.run_in_worker(self._detect_sync, data, model, parameters, queued_at)
        return result

    async def render(
        self,
        data: bytes,
        model: LoadedModel,
        parameters: DetectionParameters,
        image_format: ImageFormat,
    ) -> RenderedImage:
        """Detect objects and return the image with the boxes drawn, in the original size."""
        queued_at = time.perf_counter()
        return await self.run_in_worker(
            self._render_sync, data, model, parameters, image_format, queued_at
        )

    def _render_sync(
        self,
        data: bytes,
        model: LoadedModel,
        parameters: DetectionParameters,
        image_format: ImageFormat,
        queued_at: float,
    ) -> RenderedImage:
        result, image = self._detect_sync(data, model, parameters, queued_at)
        drawn = draw_detections(image, result.detections)
        content = encode_image(drawn, image_format, self.settings.render_jpeg_quality)
        return RenderedImage(content=content, image_format=image_format)

    def _detect_sync(
        self, data: bytes, model: LoadedModel, parameters: DetectionParameters, queued_at: float
    ) -> tuple[DetectionResult, Image.Image]:
        timer = StageTimer(queued_at)
        timer.lap("queue")
        # Decoded at full size, without JPEG draft scaling, because ultralytics
        # letterboxes the full-size image and the boxes must match its output.
        decoded = decode_image(
            data, max_pixels=self.settings.max_pixels, background=self.settings.alpha_background
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
        boxes = transform.to_original(found.boxes)
        labels = model.metadata.labels
        detections = [
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
        timer.lap("postprocess")
        record_detections(self.metrics, model, detections)

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
