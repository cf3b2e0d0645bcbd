"""Drawing detections onto the image, and choosing the output format from the request."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Literal

from PIL import Image, ImageDraw, ImageFont

from services.common.errors import InvalidParameter, NotAcceptable
from services.detector.results import Detection

ImageFormat = Literal["jpeg", "png"]
MEDIA_TYPES: dict[ImageFormat, str] = {"jpeg": "image/jpeg", "png": "image/png"}

# Distinct, saturated colours. Class i gets _PALETTE[i % len(_PALETTE)].
_PALETTE = (
    (255, 56, 56),
    (72, 149, 255),
    (44, 200, 90),
    (255, 178, 29),
    (207, 80, 240),
    (0, 194, 204),
    (255, 112, 31),
    (132, 56, 255),
    (146, 204, 23),
    (255, 55, 199),
)


def choose_format(requested: str | None, accept: str | None) -> ImageFormat:
    """Return the output format from the `format` query value, else from the Accept header.

    Without either, or with an Accept header that allows any image, the
    result is JPEG. Raises InvalidParameter (422) for an unknown `format` and
    NotAcceptable (406) when Accept allows neither JPEG nor PNG.
    """
    if requested is not None:
        if requested.lower() not in MEDIA_TYPES:
            raise InvalidParameter("query parameter 'format' must be 'jpeg' or 'png'")
        return "png" if requested.lower() == "png" else "jpeg"
    if not accept:
        return "jpeg"

    quality = _accepted_qualities(accept)
    jpeg = _quality_of("image/jpeg", quality)
    png = _quality_of("image/png", quality)
    if max(jpeg, png) <= 0.0:
        raise NotAcceptable(
            "the Accept header allows neither image/jpeg nor image/png; "
            "accept one of them or set the format query parameter"
        )
    return "png" if png > jpeg else "jpeg"


def _accepted_qualities(accept: str) -> dict[str, float]:
    """Parse an Accept header into media range to q-value (RFC 9110, section 12.5.1)."""
    quality: dict[str, float] = {}
    for part in accept.split(","):
        media_range, *parameters = (item.strip() for item in part.split(";"))
        if not media_range:
            continue
        value = 1.0
        for parameter in parameters:
            name, _, raw = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    value = float(raw)
                except ValueError:
                    value = 0.0
        quality[media_range.lower()] = value
    return quality


def _quality_of(media_type: str, quality: dict[str, float]) -> float:
    # The most specific matching range decides, as RFC 9110 requires.
    kind = media_type.split("/")[0]
    for media_range in (media_type, f"{kind}/*", "*/*"):
        if media_range in quality:
            return quality[media_range]
    return 0.0


def draw_detections(image: Image.Image, detections: Sequence[Detection]) -> Image.Image:
    """Return a copy of the RGB image with a box and a "label score" tag per detection."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    shorter_side = min(canvas.size)
    line_width = max(1, round(shorter_side / 300))
    font = ImageFont.load_default(size=max(10, round(shorter_side / 40)))
    for detection in detections:
        color = _PALETTE[detection.class_id % len(_PALETTE)]
        box = (detection.x1, detection.y1, detection.x2, detection.y2)
        draw.rectangle(box, outline=color, width=line_width)

        text = f"{detection.label} {detection.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        padding = line_width
        tag_width = right - left + 2 * padding
        tag_height = bottom - top + 2 * padding
        # The tag sits above the box, or inside it when the box touches the top edge.
        tag_top = detection.y1 - tag_height if detection.y1 >= tag_height else detection.y1
        # A box near the right edge gets its tag shifted left so that the text stays visible.
        tag_left = max(0.0, min(detection.x1, canvas.width - tag_width))
        tag = (tag_left, tag_top, tag_left + tag_width, tag_top + tag_height)
        draw.rectangle(tag, fill=color)
        origin = (tag_left + padding - left, tag_top + padding - top)
        draw.text(origin, text, fill=(255, 255, 255), font=font)
    return canvas


def encode_image(image: Image.Image, image_format: ImageFormat, jpeg_quality: int) -> bytes:
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, "PNG", compress_level=6)
    else:
        image.save(buffer, "JPEG", quality=jpeg_quality)
    return buffer.getvalue()
