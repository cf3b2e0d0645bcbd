"""Render scenes of handwritten digits pasted onto photo backgrounds, with exact boxes.

Each digit comes from scikit-learn's `load_digits` (8x8 ink intensities 0-16).
It is upscaled bilinearly, pixels below INK_THRESHOLD of full ink are cleared,
and the patch is cropped to the remaining stroke pixels before pasting. So the
pasted patch is exactly the stroke extent, every pixel the digit changes lies
inside its box, and each edge row and column of the box has a stroke pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

# Fraction of full ink (16 in load_digits) below which an upscaled pixel is not stroke.
INK_THRESHOLD = 0.25
# Minimum difference in luminance (0-255) between ink and the mean background
# under the digit, so that no labelled digit is invisible.
MIN_INK_CONTRAST = 90.0
# Free pixels kept between the boxes of two digits in one scene.
BOX_MARGIN = 2
MAX_PLACEMENT_TRIES = 50

# Photos bundled with scikit-image, so building the data set needs no download.
# Excluded: text, page and clock (they show letters or numerals) and binary
# or synthetic images (horse, chessboard, logo, phantom).
BACKGROUND_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
)

_LUMINANCE = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class SceneOptions:
    """Scene layout. Digit heights are fractions of the scene's shorter side."""

    width: int
    height: int
    min_digits: int = 1
    max_digits: int = 4
    min_digit_size: float = 0.2
    max_digit_size: float = 0.45
    clean_fraction: float = 0.2


@dataclass(frozen=True)
class PastedDigit:
    """One digit in a scene: class, source index in load_digits, and pixel box.

    The box is (x0, y0, x1, y1) in pixel edges: columns x0..x1-1 and rows
    y0..y1-1 contain the stroke.
    """

    label: int
    source_index: int
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    digits: list[PastedDigit]
    background: str


@cache
def load_photo(name: str) -> np.ndarray:
    """Return a scikit-image sample photo as (H, W, 3) uint8 RGB."""
    import skimage.data

    photo = np.asarray(getattr(skimage.data, name)())
    if photo.ndim == 2:
        photo = np.repeat(photo[:, :, np.newaxis], 3, axis=2)
    return np.ascontiguousarray(photo[:, :, :3].astype(np.uint8))


def digit_alpha(digit: np.ndarray, height: int, width: int) -> np.ndarray:
    """Upscale an 8x8 ink map (0-16) to (height, width) and crop it to the stroke pixels.

    Returns float32 opacity in [0, 1], zero where the upscaled ink is below
    INK_THRESHOLD. The result may be smaller than (height, width), because the
    8x8 cell has blank rows and columns around most digits.
    """
    ink = Image.fromarray((digit.astype(np.float32) / 16.0).astype(np.float32), mode="F")
    alpha = np.asarray(ink.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    alpha = np.clip(alpha, 0.0, 1.0)
    alpha[alpha < INK_THRESHOLD] = 0.0
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        raise ValueError("digit has no stroke pixels at this size")
    return alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def ink_colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """Pick an ink colour whose luminance differs from the background's by MIN_INK_CONTRAST."""
    background_luminance = float(background_mean @ _LUMINANCE)
    dark_room = background_luminance - MIN_INK_CONTRAST
    light_room = 255.0 - MIN_INK_CONTRAST - background_luminance
    if dark_room >= light_room:
        target = rng.uniform(0.0, max(dark_room, 0.0))
    else:
        target = rng.uniform(min(background_luminance + MIN_INK_CONTRAST, 255.0), 255.0)
    # Scaling a random colour towards black or white keeps its hue and reaches
    # the target luminance exactly, without clipping.
    colour = rng.uniform(0.0, 255.0, size=3)
    luminance = float(colour @ _LUMINANCE)
    if target <= luminance:
        return colour * (target / max(luminance, 1e-6))
    return 255.0 - (255.0 - colour) * ((255.0 - target) / max(255.0 - luminance, 1e-6))


def photo_background(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, str]:
    """Crop a random patch of a random photo, rescale it to (height, width), jitter its colours."""
    name = BACKGROUND_PHOTOS[int(rng.integers(len(BACKGROUND_PHOTOS)))]
    photo = load_photo(name)
    photo_height, photo_width = photo.shape[:2]
    scale = rng.uniform(0.25, 1.0) * min(photo_width / width, photo_height / height)
    crop_width = max(8, round(width * scale))
    crop_height = max(8, round(height * scale))
    left = int(rng.integers(0, photo_width - crop_width + 1))
    top = int(rng.integers(0, photo_height - crop_height + 1))
    crop = Image.fromarray(photo[top : top + crop_height, left : left + crop_width])
    pixels = np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR), np.float32)
    if rng.random() < 0.2:
        pixels = np.repeat((pixels @ _LUMINANCE)[:, :, np.newaxis], 3, axis=2)
    contrast = rng.uniform(0.6, 1.2)
    brightness = rng.uniform(-40.0, 40.0)
    pixels = (pixels - 128.0) * contrast + 128.0 + brightness
    return np.clip(pixels, 0.0, 255.0), name


def clean_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Return a plain colour with a linear gradient and light noise, as float32 (H, W, 3)."""
    start = rng.uniform(0.0, 255.0, size=3)
    end = np.clip(start + rng.uniform(-80.0, 80.0, size=3), 0.0, 255.0)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xs * np.cos(angle) + ys * np.sin(angle)) / max(width, height)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    pixels = start + ramp[:, :, np.newaxis] * (end - start)
    pixels += rng.normal(0.0, 4.0, size=pixels.shape)
    return np.clip(pixels, 0.0, 255.0).astype(np.float32)


def _overlaps(box: tuple[int, int, int, int], others: Sequence[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    return any(
        x0 < ox1 + BOX_MARGIN
        and ox0 < x1 + BOX_MARGIN
        and y0 < oy1 + BOX_MARGIN
        and oy0 < y1 + BOX_MARGIN
        for ox0, oy0, ox1, oy1 in others
    )


def paste_digit(
    canvas: np.ndarray,
    alpha: np.ndarray,
    left: int,
    top: int,
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """Blend `alpha` in a contrasting colour into float `canvas` in place; return its box."""
    patch_height, patch_width = alpha.shape
    box = (left, top, left + patch_width, top + patch_height)
    region = canvas[top : top + patch_height, left : left + patch_width]
    colour = ink_colour(rng, region.reshape(-1, 3).mean(axis=0))
    opacity = alpha[:, :, np.newaxis] * rng.uniform(0.8, 1.0)
    region[...] = region * (1.0 - opacity) + colour * opacity
    return box


def render_scene(
    rng: np.random.Generator,
    digit_images: np.ndarray,
    digit_targets: np.ndarray,
    pool: np.ndarray,
    options: SceneOptions,
) -> Scene:
    """Render one scene with digits drawn from `pool` (indices into `digit_images`).

    Digits that find no free place after MAX_PLACEMENT_TRIES are left out, so a
    scene may hold fewer than `options.min_digits` digits when they are large.
    """
    width, height = options.width, options.height
    if rng.random() < options.clean_fraction:
        canvas, background = clean_background(rng, width, height), "clean"
    else:
        canvas, background = photo_background(rng, width, height)

    short_side = min(width, height)
    count = int(rng.integers(options.min_digits, options.max_digits + 1))
    digits: list[PastedDigit] = []
    for _ in range(count):
        index = int(pool[int(rng.integers(len(pool)))])
        digit_height = round(
            short_side * rng.uniform(options.min_digit_size, options.max_digit_size)
        )
        digit_width = round(digit_height * rng.uniform(0.7, 1.1))
        alpha = digit_alpha(digit_images[index], max(digit_height, 4), max(digit_width, 4))
        patch_height, patch_width = alpha.shape
        if patch_width > width or patch_height > height:
            continue
        for _ in range(MAX_PLACEMENT_TRIES):
            left = int(rng.integers(0, width - patch_width + 1))
            top = int(rng.integers(0, height - patch_height + 1))
            candidate = (left, top, left + patch_width, top + patch_height)
            if not _overlaps(candidate, [digit.box for digit in digits]):
                box = paste_digit(canvas, alpha, left, top, rng)
                digits.append(PastedDigit(int(digit_targets[index]), index, box))
                break
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return Scene(image=image, digits=digits, background=background)


def yolo_label_lines(scene: Scene) -> list[str]:
    """Return one `class cx cy w h` line per digit, normalised to the scene size."""
    height, width = scene.image.shape[:2]
    lines = []
    for digit in scene.digits:
        x0, y0, x1, y1 = digit.box
        lines.append(
            f"{digit.label} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
            f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"
        )
    return lines
