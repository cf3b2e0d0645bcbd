"""Conversion of every Pillow image mode that a supported format can produce to 8-bit RGB.

Models take 8-bit RGB, so each mode needs a rule for what its values mean.
Pillow's own `convert("RGB")` is right for most modes but clips 16-bit
grayscale at 255 and leaves transparent pixels at whatever colour they store.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageCms

from services.common.errors import UnsupportedMediaType

Color = tuple[int, int, int]

# Modes that `Image.convert("RGB")` maps correctly, given that transparency is
# handled before it.
_DIRECT_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"})
_ALPHA_MODES = frozenset({"LA", "PA", "RGBA", "RGBa"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


def to_rgb(image: Image.Image, background: Color = (255, 255, 255)) -> Image.Image:
    """Convert a loaded image of any supported mode to 8-bit RGB.

    Rules by mode:
    - Alpha (LA, La, PA, RGBA, RGBa, and 1, L, P or RGB with a `transparency`
      entry in `image.info`) is composited over `background`, so a transparent
      pixel becomes `background` and a half-transparent one a 50% blend.
    - I;16, I;16B, I;16L, I;16N: the top 8 bits of each 16-bit value, so
      0-65535 maps to 0-255. Pillow's `convert` would clip everything above 255.
    - I (32-bit integer) and F (32-bit float): min-max scaled to 0-255 per
      image, because these modes carry no fixed range (depth, counts, HDR).
      NaN and infinities become 0, and a constant image becomes black.
    - LAB: converted to sRGB with Pillow's built-in LCMS profiles.
    - CMYK: Pillow's naive conversion, without the ICC profile.

    Embedded ICC profiles are ignored for every mode, as torchvision's
    default loader ignores them, so served inputs match training inputs.

    Raises UnsupportedMediaType for a mode with no rule here.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _SIXTEEN_BIT_MODES:
        return _gray_to_rgb(_top_byte(image))
    if mode in ("I", "F"):
        return _gray_to_rgb(_min_max_scaled(image))
    if mode == "La":
        luminance, alpha = image.split()
        image = Image.merge("RGBa", (luminance, luminance, luminance, alpha))
        mode = image.mode
    if mode in _ALPHA_MODES or (mode in ("1", "L", "P", "RGB") and "transparency" in image.info):
        return _composite(image.convert("RGBA"), background)
    if mode == "LAB":
        return _lab_to_rgb(image)
    if mode in _DIRECT_MODES:
        return image.convert("RGB")
    raise UnsupportedMediaType(
        f"image mode {mode} is not supported; send an 8-bit or 16-bit grayscale, "
        "palette, RGB, RGBA or CMYK image"
    )


def _composite(rgba: Image.Image, background: Color) -> Image.Image:
    composed = Image.new("RGB", rgba.size, background)
    composed.paste(rgba, mask=rgba.getchannel("A"))
    return composed


def _top_byte(image: Image.Image) -> np.ndarray:
    # np.asarray honours the byte order that the mode names (I;16B is big-endian).
    pixels = np.asarray(image)
    return (pixels >> 8).astype(np.uint8)


def _min_max_scaled(image: Image.Image) -> np.ndarray:
    values = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(values)
    scaled = np.zeros(values.shape, dtype=np.uint8)
    if not finite.any():
        return scaled

    low = values[finite].min()
    high = values[finite].max()
    if high > low:
        scale = np.float32(255.0) / (high - low)
        scaled[finite] = np.rint((values[finite] - low) * scale).astype(np.uint8)
    return scaled


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(gray)).convert("RGB")


def _lab_to_rgb(image: Image.Image) -> Image.Image:
    transform = ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
    )
    converted = transform.apply(image)
    # apply() attaches the sRGB profile. Drop it so that no caller mistakes it
    # for a profile that came with the upload.
    converted.info.pop("icc_profile", None)
    return converted
