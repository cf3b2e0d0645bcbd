"""Letterbox resizing for detection models, and its inverse for boxes.

`letterbox` reproduces `ultralytics.data.augment.LetterBox` (ultralytics 8.4,
with `auto=False`, `scaleup=True`, `center=True`) on 8-bit images: the same
scale, the same rounding of the resized size and of the padding, and the same
pixels. Ultralytics resizes with OpenCV's `cv2.resize(..., INTER_LINEAR)`,
which does not antialias when it downscales, so Pillow's bilinear filter gives
different pixels. `resize_linear` reimplements OpenCV's 8-bit fixed-point
bilinear resize in numpy instead, so that serving needs neither OpenCV nor
torch. It equals opencv-python 5.1.0 bit for bit on the sizes in
`tests/test_letterbox.py`.

Training-time evaluation and the detector service both call these functions,
so a box predicted on the model input maps back to the same original pixels
everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from services.common.metadata import PreprocessSpec
from services.common.preprocess import to_tensor

# OpenCV's INTER_RESIZE_COEF_BITS: interpolation weights are integers out of 2**11.
_WEIGHT_BITS = 11
_WEIGHT_ONE = 1 << _WEIGHT_BITS


@dataclass(frozen=True)
class LetterboxTransform:
    """The geometry of one letterboxed image: how original pixels map onto the model input.

    `scale` is ultralytics' ratio `min(input_h / h, input_w / w)`. The resized
    image is `resized_width` x `resized_height` (each side rounded, at least 1)
    and is placed at (`pad_left`, `pad_top`) inside the input.
    """

    scale: float
    pad_left: int
    pad_top: int
    original_width: int
    original_height: int
    resized_width: int
    resized_height: int
    input_width: int
    input_height: int

    @property
    def gain_x(self) -> float:
        """Horizontal scale that was applied, after rounding the resized width."""
        return self.resized_width / self.original_width

    @property
    def gain_y(self) -> float:
        """Vertical scale that was applied, after rounding the resized height."""
        return self.resized_height / self.original_height

    def to_input(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map (N, 4) xyxy boxes from original pixels to model-input pixels."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        mapped = np.empty_like(boxes)
        mapped[:, [0, 2]] = boxes[:, [0, 2]] * self.gain_x + self.pad_left
        mapped[:, [1, 3]] = boxes[:, [1, 3]] * self.gain_y + self.pad_top
        return mapped

    def to_original(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map (N, 4) xyxy boxes from model-input pixels to original pixels, clipped to the image.

        The inverse of `to_input` (up to the clipping), and the same arithmetic
        as ultralytics' `scale_boxes` followed by `clip_boxes`. Returns float64.
        """
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        mapped = np.empty_like(boxes)
        mapped[:, [0, 2]] = (boxes[:, [0, 2]] - self.pad_left) / self.gain_x
        mapped[:, [1, 3]] = (boxes[:, [1, 3]] - self.pad_top) / self.gain_y
        mapped[:, [0, 2]] = mapped[:, [0, 2]].clip(0, self.original_width)
        mapped[:, [1, 3]] = mapped[:, [1, 3]].clip(0, self.original_height)
        return mapped


def letterbox_transform(
    original_width: int, original_height: int, input_width: int, input_height: int
) -> LetterboxTransform:
    """Compute the letterbox geometry that ultralytics' LetterBox uses for this size."""
    if min(original_width, original_height, input_width, input_height) < 1:
        raise ValueError(
            f"sizes must be positive, got image {original_width}x{original_height} "
            f"and input {input_width}x{input_height}"
        )
    scale = min(input_height / original_height, input_width / original_width)
    # Python's round() halves to even, as in ultralytics. Each side stays at
    # least one pixel so that a 1 x 3000 image still has content.
    resized_width = max(round(original_width * scale), 1)
    resized_height = max(round(original_height * scale), 1)
    # The -0.1 puts the odd pixel of an odd padding on the right and bottom.
    pad_left = round((input_width - resized_width) / 2 - 0.1)
    pad_top = round((input_height - resized_height) / 2 - 0.1)
    return LetterboxTransform(
        scale=scale,
        pad_left=pad_left,
        pad_top=pad_top,
        original_width=original_width,
        original_height=original_height,
        resized_width=resized_width,
        resized_height=resized_height,
        input_width=input_width,
        input_height=input_height,
    )


def letterbox(
    pixels: np.ndarray, input_width: int, input_height: int, pad_value: int = 114
) -> tuple[np.ndarray, LetterboxTransform]:
    """Resize an (H, W, C) uint8 image to fit the input size, keeping its aspect ratio, and pad it.

    Returns the (input_height, input_width, C) uint8 array and its geometry.
    The padding has the value `pad_value` in every channel.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise ValueError(f"expected an (H, W, C) uint8 array, got {pixels.dtype} {pixels.shape}")
    height, width, channels = pixels.shape
    transform = letterbox_transform(width, height, input_width, input_height)

    resized = pixels
    if (transform.resized_width, transform.resized_height) != (width, height):
        resized = resize_linear(pixels, transform.resized_width, transform.resized_height)

    padded = np.full((input_height, input_width, channels), pad_value, dtype=np.uint8)
    top, left = transform.pad_top, transform.pad_left
    padded[top : top + transform.resized_height, left : left + transform.resized_width] = resized
    return padded, transform


def letterbox_tensor(
    image: Image.Image, spec: PreprocessSpec
) -> tuple[np.ndarray, LetterboxTransform]:
    """Letterbox a decoded image into one normalised (C, H, W) float32 model input.

    Raises ValueError unless `spec.resize` is "letterbox" with bilinear
    interpolation, the only combination that matches ultralytics.
    """
    if spec.resize != "letterbox" or spec.interpolation != "bilinear":
        raise ValueError(
            f"expected resize 'letterbox' with 'bilinear' interpolation, got "
            f"{spec.resize!r} with {spec.interpolation!r}"
        )
    pixels = np.asarray(image.convert("RGB"))
    padded, transform = letterbox(pixels, spec.width, spec.height, spec.pad_value)
    return to_tensor(Image.fromarray(padded), spec), transform


def resize_linear(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an (H, W, C) uint8 image as `cv2.resize(pixels, (width, height), INTER_LINEAR)` does.

    Half-pixel-centre bilinear interpolation without antialiasing, with
    OpenCV's 11-bit integer weights and its rounding.
    """
    source_height, source_width = pixels.shape[:2]
    x0, x1, wx0, wx1 = _horizontal_taps(source_width, width)
    y0, y1, wy0, wy1 = _vertical_taps(source_height, height)

    # Interpolate along x on the source rows that are needed only, then along y.
    rows = np.unique(np.concatenate([y0, y1]))
    row_position = np.searchsorted(rows, np.arange(source_height))
    left = pixels[np.ix_(rows, x0)].astype(np.int32)
    right = pixels[np.ix_(rows, x1)].astype(np.int32)
    horizontal = left * wx0[None, :, None] + right * wx1[None, :, None]

    top = horizontal[row_position[y0]] >> 4
    bottom = horizontal[row_position[y1]] >> 4
    # OpenCV's vectorised vertical pass: each product is shifted down by 16
    # bits on its own before the sum is rounded to 8 bits.
    weight_top = wy0[:, None, None]
    weight_bottom = wy1[:, None, None]
    blended = (((weight_top * top) >> 16) + ((weight_bottom * bottom) >> 16) + 2) >> 2
    return blended.clip(0, 255).astype(np.uint8)


def _source_positions(source_size: int, target_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the integer source index and the float32 fraction for each target pixel."""
    # OpenCV computes the position in double from an inverted inverse scale,
    # then stores it in float before flooring. Both steps change the weights.
    scale = 1.0 / (target_size / source_size)
    position = ((np.arange(target_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    index = np.floor(position).astype(np.int64)
    fraction = (position - index.astype(np.float32)).astype(np.float32)
    return index, fraction


def _integer_weights(fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first = np.rint((np.float32(1.0) - fraction) * np.float32(_WEIGHT_ONE)).astype(np.int32)
    return first, _WEIGHT_ONE - first


def _horizontal_taps(
    source_size: int, target_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    index, fraction = _source_positions(source_size, target_size)
    # Along x, OpenCV clamps out-of-range positions to the edge pixel with full weight.
    before = index < 0
    index[before] = 0
    fraction[before] = 0.0
    after = index >= source_size - 1
    index[after] = source_size - 1
    fraction[after] = 0.0
    first, second = _integer_weights(fraction)
    return index, np.minimum(index + 1, source_size - 1), first, second


def _vertical_taps(
    source_size: int, target_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    index, fraction = _source_positions(source_size, target_size)
    # Along y, OpenCV keeps the fraction and clamps only the row indices, so an
    # edge row is blended with itself. The rounding then differs from the x case.
    first, second = _integer_weights(fraction)
    return (
        np.clip(index, 0, source_size - 1),
        np.clip(index + 1, 0, source_size - 1),
        first,
        second,
    )
