"""The single definition of image preprocessing for classification models.

Training-time evaluation, the ONNX parity check and the classifier service all
call `preprocess`, so an image gives the same tensor everywhere. It depends on
numpy and Pillow only, because the serving install has no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from services.common.metadata import PreprocessSpec

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def resized_shorter_side(spec: PreprocessSpec) -> int:
    """Return the shorter-side length before the center crop.

    Rounds down, as timm does for `crop_pct` (224 / 0.875 gives 256).
    """
    return math.floor(min(spec.height, spec.width) / spec.crop_fraction)


def draft_request(spec: PreprocessSpec) -> tuple[int, int]:
    """Return the smallest size a JPEG may be decoded at without hurting the resize.

    The request is square and twice the resized size, so that whichever way the
    EXIF orientation turns the image, both sides keep at least 2x the pixels the
    resize needs and its antialiasing still has data to average.
    """
    if spec.resize == "shorter_side_center_crop":
        side = 2 * resized_shorter_side(spec)
    else:
        side = 2 * max(spec.height, spec.width)
    return side, side


def _resize_shorter_side_center_crop(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    width, height = image.size
    target = resized_shorter_side(spec)
    # Same arithmetic as torchvision's resize with an int size: the shorter side
    # becomes `target` and the longer side is truncated.
    if width <= height:
        new_size = (target, int(target * height / width))
    else:
        new_size = (int(target * width / height), target)
    resized = image.resize(new_size, _RESAMPLING[spec.interpolation])

    left = round((new_size[0] - spec.width) / 2.0)
    top = round((new_size[1] - spec.height) / 2.0)
    return resized.crop((left, top, left + spec.width, top + spec.height))


def resize(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Resize an RGB image to the model's input size following `spec.resize`."""
    if spec.resize == "stretch":
        return image.resize((spec.width, spec.height), _RESAMPLING[spec.interpolation])
    if spec.resize == "shorter_side_center_crop":
        return _resize_shorter_side_center_crop(image, spec)
    raise ValueError(
        f"resize policy {spec.resize!r} is for detection models; use the detector preprocessing"
    )


def to_tensor(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Convert a resized RGB image into a normalised float32 array of shape (C, H, W)."""
    if spec.color_mode == "L":
        pixels = np.asarray(image.convert("L"), dtype=np.float32)[:, :, np.newaxis]
    else:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        if spec.color_mode == "BGR":
            pixels = pixels[:, :, ::-1]

    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    normalised = (pixels / np.float32(255.0) - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)


def preprocess(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Turn a decoded RGB image into the model input for one sample, shape (C, H, W)."""
    return to_tensor(resize(image, spec), spec)


def preprocess_batch(images: Sequence[Image.Image], spec: PreprocessSpec) -> np.ndarray:
    """Preprocess several images into one float32 batch of shape (N, C, H, W)."""
    if not images:
        return np.zeros((0, spec.channels, spec.height, spec.width), dtype=np.float32)
    return np.stack([preprocess(image, spec) for image in images])
