"""The two kinds of input a model service accepts, shared by the classifier and the detector.

A request sends exactly one input. Either it is the model's own FP32 input
tensor, already preprocessed, of shape [N, C, H, W]. Or it is a BYTES input
named `image` whose elements are encoded image files (JPEG, PNG, ...), which
the service decodes and preprocesses itself. In JSON each `image` element is
the base64 text of the file, because JSON strings cannot carry arbitrary
bytes. As binary tensor data the elements are the raw file bytes.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.common.errors import InvalidRequest, ServiceError
from services.common.image_modes import Color
from services.common.imaging import DecodedImage, decode_image
from services.common.inference_protocol.datatypes import BYTES
from services.common.inference_protocol.request_codec import InputTensor
from services.common.inference_protocol.schemas import MetadataTensor
from services.common.pipeline import ModelPipeline
from services.common.repository import LoadedModel
from services.common.stages import StageTimer

IMAGE_INPUT = "image"
MODEL_INPUT_DATATYPE = "FP32"
VARIABLE = -1


@dataclass(frozen=True)
class TensorInput:
    """A preprocessed float32 batch of shape (N, C, H, W)."""

    batch: np.ndarray


@dataclass(frozen=True)
class ImageInput:
    """Encoded image files, one per element of the `image` input."""

    files: list[bytes]


def input_metadata(model: LoadedModel, max_images: int) -> list[MetadataTensor]:
    """Describe the two accepted inputs. A request sends one of them, not both."""
    image_shape = [VARIABLE] if max_images > 1 else [1]
    return [
        MetadataTensor(
            name=model.metadata.input_name,
            datatype=MODEL_INPUT_DATATYPE,
            shape=[VARIABLE, *model.input_shape],
        ),
        MetadataTensor(name=IMAGE_INPUT, datatype=BYTES, shape=image_shape),
    ]


def read_input(
    inputs: Sequence[InputTensor],
    model: LoadedModel,
    *,
    max_images: int,
    max_tensor_batch: int | None = None,
) -> TensorInput | ImageInput:
    """Return the request's one input as a checked batch or as image files.

    The BYTES datatype marks the image input, so a model whose own input is
    also named `image` still works. Raises InvalidRequest (400) for a missing,
    unknown or extra input, a wrong datatype or shape, non-finite values,
    invalid base64, more than `max_images` images, or a tensor batch larger
    than `max_tensor_batch` (no limit when None).
    """
    accepted = f"{model.metadata.input_name!r} ({MODEL_INPUT_DATATYPE}) or {IMAGE_INPUT!r} (BYTES)"
    if len(inputs) != 1:
        raise InvalidRequest(
            f"model {model.name} takes exactly one input, {accepted}; got {len(inputs)}"
        )
    (tensor,) = inputs
    if tensor.name == IMAGE_INPUT and tensor.datatype == BYTES:
        return ImageInput(_image_files(tensor, max_images))
    if tensor.name == model.metadata.input_name:
        return TensorInput(_model_batch(tensor, model, max_tensor_batch))
    raise InvalidRequest(f"unknown input {tensor.name!r}; model {model.name} takes {accepted}")


def _model_batch(tensor: InputTensor, model: LoadedModel, max_batch: int | None) -> np.ndarray:
    expected = f"[N, {', '.join(map(str, model.input_shape))}]"
    if tensor.datatype != MODEL_INPUT_DATATYPE:
        raise InvalidRequest(
            f"input {tensor.name!r} must be {MODEL_INPUT_DATATYPE}, got {tensor.datatype}"
        )
    shape = tensor.data.shape
    if len(shape) != 4 or shape[1:] != model.input_shape or shape[0] < 1:
        raise InvalidRequest(
            f"input {tensor.name!r} has shape {list(shape)}, but model {model.name} takes "
            f"{expected} with N >= 1"
        )
    if max_batch is not None and shape[0] > max_batch:
        raise InvalidRequest(
            f"input {tensor.name!r} has a batch of {shape[0]} images, more than the limit of "
            f"{max_batch} per request; split the batch over several requests"
        )
    if not np.all(np.isfinite(tensor.data)):
        raise InvalidRequest(f"input {tensor.name!r} contains NaN or infinite values")
    return np.ascontiguousarray(tensor.data, dtype=np.float32)


def _image_files(tensor: InputTensor, max_images: int) -> list[bytes]:
    if tensor.data.ndim != 1 or not 1 <= tensor.data.shape[0] <= max_images:
        raise InvalidRequest(
            f"input {IMAGE_INPUT!r} has shape {list(tensor.data.shape)}; send shape [N] with "
            f"N >= 1 and at most {max_images} image(s) per request"
        )
    files = list(tensor.data)
    if tensor.binary:
        return files
    return [_from_base64(text, index) for index, text in enumerate(files)]


def _from_base64(text: bytes, index: int) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            f"element {index} of input {IMAGE_INPUT!r} is not valid base64; in JSON, send each "
            "image file as standard base64 text, or send the raw bytes as binary tensor data"
        ) from exc


def check_output_for_tensor_input(output: np.ndarray, model: LoadedModel) -> None:
    """Reject a client tensor that drives the model to NaN or infinity, as a 400 not a 500."""
    if not np.all(np.isfinite(output)):
        raise InvalidRequest(
            f"model {model.name} returned NaN or infinite values for this input tensor; "
            "send values preprocessed as the model expects (see its model.json)"
        )


def decode_image_file(
    data: bytes,
    index: int,
    *,
    max_pixels: int,
    background: Color,
    draft_size: tuple[int, int] | None = None,
) -> DecodedImage:
    """Decode element `index` of the image input as `decode_image` does for `/v1` uploads.

    A rejected image raises the same error class, with the element named in its message.
    """
    with image_element(index):
        check_not_empty(data, index)
        return decode_image(
            data, max_pixels=max_pixels, draft_size=draft_size, background=background
        )


def check_not_empty(data: bytes, index: int) -> None:
    """Raise InvalidRequest (400) when element `index` of the image input is empty."""
    if not data:
        raise InvalidRequest(f"element {index} of input {IMAGE_INPUT!r} is empty; send the file")


@contextmanager
def image_element(index: int) -> Iterator[None]:
    """Re-raise a 4xx error of the block with element `index` of the image input named."""
    try:
        yield
    except ServiceError as error:
        if error.status_code >= 500:
            raise
        raise type(error)(
            f"element {index} of input {IMAGE_INPUT!r}: {error.message}", headers=error.headers
        ) from error


async def infer_tensor(
    pipeline: ModelPipeline[Any], model: LoadedModel, batch: np.ndarray
) -> np.ndarray:
    """Run a client's preprocessed batch through the model's batcher; return its first output."""
    timer = StageTimer(time.perf_counter())
    run = await pipeline.batchers.submit(model, batch)
    timer.record_batch(run.inference_seconds)
    check_output_for_tensor_input(run.output, model)
    timer.observe(pipeline.metrics, model)
    return run.output
