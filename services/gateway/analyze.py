"""The analyze pipeline: detect objects, crop each one from the original image, classify the crops.

The gateway decodes the image itself, with the EXIF orientation applied as
the detector does, while the detector runs. It crops every box with a margin
and sends all crops to the classifier in one batch request, so the classifier
runs one inference for the whole image.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import time
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import httpx
from PIL import Image

from services.common.imaging import DecodedImage, decode_image
from services.common.model_selection import MODEL_REQUIRED
from services.common.stages import milliseconds
from services.common.upload import FILE_FIELD
from services.gateway.backend import Backends, FilePart
from services.gateway.backend_errors import BackendRejected

# Lossless and fast to encode. The classifier decodes PNG like any upload.
CLASSIFIER_MODEL_REQUIRED = "query parameter 'classifier_model' is required"
CROP_FORMAT = "PNG"
CROP_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class AnalyzeRequest:
    image: bytes
    detector_params: httpx.QueryParams
    classifier_model: str | None
    margin: float
    max_pixels: int


def crop_box(
    box: dict[str, float], margin: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """Return the integer pixel box to crop: `box` grown by `margin` of its size on each side.

    The result is clipped to the image and keeps at least one pixel on each axis.
    """
    grow_x = (box["x2"] - box["x1"]) * margin
    grow_y = (box["y2"] - box["y1"]) * margin
    left = min(max(math.floor(box["x1"] - grow_x), 0), width - 1)
    top = min(max(math.floor(box["y1"] - grow_y), 0), height - 1)
    right = max(min(math.ceil(box["x2"] + grow_x), width), left + 1)
    bottom = max(min(math.ceil(box["y2"] + grow_y), height), top + 1)
    return left, top, right, bottom


def encode_crops(image: Image.Image, boxes: list[tuple[int, int, int, int]]) -> list[bytes]:
    crops = []
    for box in boxes:
        buffer = io.BytesIO()
        image.crop(box).save(buffer, CROP_FORMAT, compress_level=CROP_COMPRESS_LEVEL)
        crops.append(buffer.getvalue())
    return crops


async def analyze(backends: Backends, request: AnalyzeRequest) -> dict[str, Any]:
    """Run the pipeline and return the response body.

    Raises the detector's and the classifier's errors as the gateway's own,
    and the errors of `decode_image` when the image cannot be decoded.
    """
    started = time.perf_counter()
    decoded, detected, decoded_at = await _decode_and_detect(backends, request)
    detected_at = time.perf_counter()

    detections: list[dict[str, Any]] = detected["detections"]
    boxes = [
        crop_box(item["box"], request.margin, decoded.width, decoded.height) for item in detections
    ]
    crops = await anyio.to_thread.run_sync(encode_crops, decoded.image, boxes)
    cropped_at = time.perf_counter()

    classified = await _classify_crops(backends, crops, request.classifier_model)
    finished = time.perf_counter()

    results = classified["results"] if classified else [None] * len(boxes)
    objects = [
        _object_entry(item, box, result)
        for item, box, result in zip(detections, boxes, results, strict=True)
    ]
    return {
        "detector_model": detected["model"],
        "classifier_model": classified["model"] if classified else None,
        "image": {"width": decoded.width, "height": decoded.height},
        "objects": objects,
        "timings_ms": {
            "decode": milliseconds(decoded_at - started),
            "detect": milliseconds(detected_at - started),
            "crop": milliseconds(cropped_at - detected_at),
            "classify": milliseconds(finished - cropped_at),
            "total": milliseconds(finished - started),
        },
    }


async def _decode_and_detect(
    backends: Backends, request: AnalyzeRequest
) -> tuple[DecodedImage, dict[str, Any], float]:
    """Call the detector and decode the image at the same time.

    Returns the decoded image, the detector's body and when decoding finished.
    """
    detector = backends.require_detector()
    detection_call = asyncio.create_task(
        detector.post(
            "/v1/detect",
            content=request.image,
            content_type="application/octet-stream",
            params=request.detector_params,
            # Both calls of the pipeline are inference, which changes no state
            # on a model service, so retrying them is safe.
            idempotent=True,
        )
    )
    try:
        decoded = await anyio.to_thread.run_sync(
            lambda: decode_image(request.image, max_pixels=request.max_pixels)
        )
    except BaseException:
        # The image is invalid or the request was cancelled, so the
        # detector's response is no longer needed.
        detection_call.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await detection_call
        raise
    decoded_at = time.perf_counter()
    detected = await detection_call
    return decoded, detected.body, decoded_at


async def _classify_crops(
    backends: Backends, crops: list[bytes], classifier_model: str | None
) -> dict[str, Any] | None:
    """Classify every crop with one batch request, or return None when there are no crops."""
    if not crops:
        return None
    files = [FilePart(f"object-{index}.png", crop, "image/png") for index, crop in enumerate(crops)]
    params = {"top_k": "1"}
    if classifier_model is not None:
        params["model"] = classifier_model
    try:
        response = await backends.classifier.post_files(
            "/v1/classify/batch", field=FILE_FIELD, files=files, params=params, idempotent=True
        )
    except BackendRejected as error:
        if classifier_model is None and MODEL_REQUIRED in error.message:
            # The classifier names its own query parameter, which this route calls classifier_model.
            error.message = error.message.replace(MODEL_REQUIRED, CLASSIFIER_MODEL_REQUIRED, 1)
        raise
    body: dict[str, Any] = response.body
    return body


def _object_entry(
    detection: dict[str, Any], box: tuple[int, int, int, int], result: dict[str, Any] | None
) -> dict[str, Any]:
    classification = None
    error = None
    if result is not None and result.get("error") is not None:
        error = result["error"]
    elif result is not None and result.get("predictions"):
        top = result["predictions"][0]
        classification = {
            "label": top["label"],
            "class_id": top["class_id"],
            "probability": top["probability"],
        }
    return {
        "label": detection["label"],
        "class_id": detection["class_id"],
        "score": detection["score"],
        "box": detection["box"],
        "crop_box": dict(zip(("x1", "y1", "x2", "y2"), box, strict=True)),
        "classification": classification,
        "classification_error": error,
    }
