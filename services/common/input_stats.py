"""Summary statistics of one input image, logged per prediction and compared for drift.

The model services compute them on each decoded request image, and the
exporters in `training/` compute them on the validation images for
`reference.json`. Both call `measure_input` on the output of
`services.common.imaging.decode_image`, so a change here changes both sides.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from services.common.imaging import DecodedImage

# Pixel statistics are measured on a copy whose longer side is at most this
# many pixels. Sharpness depends on scale, so a fixed working size keeps a
# 12 MP photo and its 640 px copy comparable, and it bounds the cost per request.
WORKING_SIZE = 256

INPUT_FEATURES = (
    "width",
    "height",
    "aspect",
    "brightness",
    "contrast",
    "saturation",
    "sharpness",
)


@dataclass(frozen=True)
class InputStats:
    """Statistics of one image. Pixel values are scaled to [0, 1] before measuring."""

    width: int
    height: int
    aspect: float  # width / height
    brightness: float  # mean luma (ITU-R 601-2, as PIL's "L" mode)
    contrast: float  # standard deviation of luma
    saturation: float  # mean HSV saturation
    sharpness: float  # variance of the 4-neighbour Laplacian of luma

    def as_dict(self) -> dict[str, float]:
        return {name: float(value) for name, value in asdict(self).items()}


def measure_input(decoded: DecodedImage) -> InputStats:
    """Measure `decoded`, whose width and height are the full size after EXIF orientation."""
    image = decoded.image
    if max(image.size) > WORKING_SIZE:
        image = image.copy()
        image.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BILINEAR)

    luma = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    saturation = np.asarray(image.convert("HSV"), dtype=np.float32)[..., 1] / 255.0
    return InputStats(
        width=decoded.width,
        height=decoded.height,
        aspect=decoded.width / decoded.height,
        brightness=float(luma.mean()),
        contrast=float(luma.std()),
        saturation=float(saturation.mean()),
        sharpness=laplacian_variance(luma),
    )


def laplacian_variance(luma: np.ndarray) -> float:
    """Return the variance of the 4-neighbour Laplacian over the interior pixels.

    A blurred image has weaker edges, so its Laplacian varies less. Images
    smaller than 3x3 have no interior and return 0.
    """
    if luma.shape[0] < 3 or luma.shape[1] < 3:
        return 0.0
    laplacian = (
        luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4.0 * luma[1:-1, 1:-1]
    )
    return float(laplacian.var())
