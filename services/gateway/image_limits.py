"""The gateway's checks of uploaded images before it forwards them: file count and pixels.

The gateway reads image headers only and never decodes pixels for these
checks. The backend stays the judge of what a valid image is: a body whose
form or image header the gateway cannot read is forwarded unchanged, and the
backend returns its own 400 or 415.
"""

from __future__ import annotations

import anyio.to_thread
from fastapi import Request

from services.common.errors import CorruptImage, EmptyBody, PayloadTooLarge, UnsupportedMediaType
from services.common.imaging import declared_size
from services.common.upload import MULTIPART_CONTENT_TYPE
from services.gateway.body import read_limited_body
from services.gateway.form_files import form_files
from services.gateway.settings import GatewaySettings

# The /v1 image routes take one image per request.
SINGLE_IMAGE_FILES = 1
# Bodies up to this size are checked on the event loop, because a worker-thread
# hand-off costs more than parsing them. A 270 KiB form took 0.18 ms to check on
# the benchmark machine (docs/benchmarks.md), so 1 MiB blocks the loop for under 1 ms.
INLINE_CHECK_BYTES = 1024 * 1024


async def read_image_upload(request: Request, settings: GatewaySettings) -> bytes:
    """Read the body within max_body_bytes, check its images, and return it for forwarding.

    Raises PayloadTooLarge (413) for a body over max_body_bytes or an image
    whose header declares more than max_pixels, and InvalidRequest (400) for
    a form with more than one file.
    """
    body = await read_limited_body(request, settings.max_body_bytes)
    content_type = request.headers.get("content-type", "")
    if len(body) <= INLINE_CHECK_BYTES:
        _check_upload(body, content_type, settings.max_pixels)
    else:
        # Parsing a 20 MiB form takes tens of milliseconds, too long for the event loop.
        await anyio.to_thread.run_sync(_check_upload, body, content_type, settings.max_pixels)
    return body


def _check_upload(body: bytes, content_type: str, max_pixels: int) -> None:
    for image in uploaded_images(body, content_type):
        check_declared_pixels(image, max_pixels)


def uploaded_images(body: bytes, content_type: str) -> list[bytes]:
    """Return the images of a single-image upload: the form's file parts, or the raw body."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != MULTIPART_CONTENT_TYPE:
        return [body]
    return form_files(body, content_type, max_files=SINGLE_IMAGE_FILES) or []


def check_declared_pixels(image: bytes, max_pixels: int) -> None:
    """Raise PayloadTooLarge (413) when the image header declares more than `max_pixels` pixels.

    Data without a readable header passes, for the backend to reject.
    """
    try:
        width, height = declared_size(image)
    except (EmptyBody, UnsupportedMediaType, CorruptImage):
        return
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"the image is {width}x{height} ({width * height} pixels), more than the gateway "
            f"limit of {max_pixels} pixels (VS_GATEWAY_MAX_PIXELS); send a smaller image"
        )
