"""Decoding of untrusted image bytes into RGB, shared by the classifier and the detector.

`decode_image` raises only `ServiceError` subclasses, so a route can pass any
request body to it and every bad input becomes a 4xx response:

- empty data: `EmptyBody` (400)
- unknown bytes or a format outside `SUPPORTED_FORMATS`: `UnsupportedMediaType` (415)
- more pixels declared in the header than allowed: `PayloadTooLarge` (413)
- truncated or corrupt data: `CorruptImage` (400)
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, NoReturn

from PIL import (
    BmpImagePlugin,
    ExifTags,
    GifImagePlugin,
    Image,
    ImageChops,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from services.common.errors import (
    CorruptImage,
    EmptyBody,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
)
from services.common.image_modes import Color, to_rgb

logger = logging.getLogger(__name__)

# Pillow format names. MPO is the multi-picture JPEG that many phones write.
SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF")
_JPEG_FORMATS = ("JPEG", "MPO")
_SUPPORTED_LIST = "JPEG, PNG, WebP, BMP, TIFF or GIF"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (_PNG_SIGNATURE, "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
_OPENERS: dict[str, Callable[[IO[bytes]], ImageFile.ImageFile]] = {
    "JPEG": JpegImagePlugin.jpeg_factory,  # returns an MpoImageFile for MPO data
    "PNG": PngImagePlugin.PngImageFile,
    "GIF": GifImagePlugin.GifImageFile,
    "TIFF": TiffImagePlugin.TiffImageFile,
    "BMP": BmpImagePlugin.BmpImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
}
_ROTATING_ORIENTATIONS = frozenset(range(2, 9))


@dataclass(frozen=True)
class DecodedImage:
    """A decoded upload.

    `width` and `height` are the full-resolution size as the user sees it,
    after the EXIF orientation. `image` may be smaller than that when a JPEG
    was decoded at reduced scale (see `decode_image`'s `draft_size`).
    """

    image: Image.Image
    format: str
    width: int
    height: int


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    draft_size: tuple[int, int] | None = None,
    background: Color = (255, 255, 255),
) -> DecodedImage:
    """Decode image bytes into an 8-bit RGB image with the EXIF orientation applied.

    The pixel count in the header is checked against `max_pixels` before any
    pixel data is decoded. For JPEG and MPO, `draft_size` lets libjpeg decode
    at 1/2, 1/4 or 1/8 scale while both sides stay at least `draft_size`.
    Animated GIF, WebP and PNG and multi-page TIFF give their first frame.
    Alpha is composited over `background`; `to_rgb` lists the rule for each mode.
    """
    if not data:
        raise EmptyBody("the request body is empty; send the image bytes")
    _check_decoder_config()
    if data.startswith(_PNG_SIGNATURE):
        check_png_chunks(data)

    image = _open(data)
    source_format = str(image.format)
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"the image is {width}x{height} ({width * height} pixels), "
            f"more than the limit of {max_pixels} pixels; send a smaller image"
        )

    if draft_size is not None and source_format in _JPEG_FORMATS:
        image.draft("RGB", draft_size)
    _load(image, source_format)
    loaded: Image.Image = image
    if source_format in _JPEG_FORMATS and image.mode == "CMYK" and "adobe" not in image.info:
        loaded = _undo_adobe_inversion(image)

    oriented = _apply_exif_orientation(loaded, source_format)
    if oriented.size != loaded.size:
        width, height = height, width
    return DecodedImage(
        image=to_rgb(oriented, background), format=source_format, width=width, height=height
    )


def declared_size(data: bytes) -> tuple[int, int]:
    """Return the width and height that the image header declares, without decoding pixels.

    The size is the stored one, before any EXIF rotation, so its pixel count
    is the one `decode_image` checks. Raises UnsupportedMediaType, CorruptImage
    or EmptyBody as `decode_image` does for data whose header cannot be read.
    """
    if not data:
        raise EmptyBody("the request body is empty; send the image bytes")
    with _open(data) as image:
        return image.size


def check_png_chunks(data: bytes) -> None:
    """Verify the length and CRC-32 of every PNG chunk up to IEND.

    Pillow 13 checks the CRC of the chunks before the image data only, so a
    damaged IDAT chunk would otherwise decode to wrong pixels without an error.
    """
    view = memoryview(data)
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, chunk_type = struct.unpack_from(">I4s", data, position)
        name = _chunk_name(chunk_type)
        end = position + 12 + length
        if end > len(data):
            raise CorruptImage(f"the PNG data ends inside the {name} chunk; the file is truncated")
        (stored_crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[position + 4 : end - 4]) != stored_crc:
            raise CorruptImage(
                f"the PNG {name} chunk at byte {position} fails its CRC check; the file is corrupt"
            )
        if chunk_type == b"IEND":
            return
        position = end
    raise CorruptImage("the PNG data ends before its IEND chunk; the file is truncated")


def _chunk_name(chunk_type: bytes) -> str:
    # Only a well-formed type is quoted, so that no other client bytes reach the message.
    if chunk_type.isalpha() and chunk_type.isascii():
        return chunk_type.decode("ascii")
    return "next"


def _check_decoder_config() -> None:
    # With this flag set, Pillow decodes a truncated file partially and reports
    # success, so a cut upload would be classified instead of rejected.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.error("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; refusing to decode images")
        raise ServiceError("image decoding is misconfigured; see the service log")


def _open(data: bytes) -> ImageFile.ImageFile:
    """Read the header with the plugin that the signature names, without decoding pixels.

    The plugin is called directly, not through `Image.open`, because
    `Image.open` raises its own DecompressionBombError above
    2 * Image.MAX_IMAGE_PIXELS (about 179 MP) before the caller could see the
    declared size. `decode_image` checks `max_pixels` right after this.
    """
    signature_format = _format_from_signature(data)
    if signature_format is None:
        _reject_unsupported(data)
    opener = _OPENERS[signature_format]
    try:
        return opener(io.BytesIO(data))
    except Exception as exc:
        # Pillow's format plugins raise OSError, SyntaxError, ValueError,
        # struct.error, EOFError and others for malformed headers.
        raise CorruptImage(
            f"the data starts like a {signature_format} file but its header cannot be read; "
            "the file is truncated or corrupt"
        ) from exc


def _format_from_signature(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, format_name in _SIGNATURES:
        if data.startswith(signature):
            return format_name
    return None


def _reject_unsupported(data: bytes) -> NoReturn:
    """Raise UnsupportedMediaType, naming the format when Pillow can identify it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            identified = image.format
    except Exception:
        # Unidentifiable data, Pillow's DecompressionBombError and malformed
        # headers of unsupported formats are all rejected the same way.
        identified = None
    if identified:
        raise UnsupportedMediaType(f"{identified} images are not supported; send {_SUPPORTED_LIST}")
    raise UnsupportedMediaType(f"the data is not a supported image; send {_SUPPORTED_LIST}")


def _load(image: ImageFile.ImageFile, source_format: str) -> None:
    try:
        image.load()
    except Exception as exc:
        # As in _open, any exception type can come out of a plugin's decoder.
        # Pillow's message goes to the log only, because it may quote header values.
        logger.debug("Pillow failed to decode a %s image: %r", source_format, exc)
        if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
            raise CorruptImage(
                f"the {source_format} data is truncated; send the complete file"
            ) from exc
        raise CorruptImage(f"the {source_format} data is corrupt and cannot be decoded") from exc


def _undo_adobe_inversion(image: Image.Image) -> Image.Image:
    """Invert a CMYK JPEG that has no Adobe APP14 marker back to plain CMYK.

    Pillow 13 reads every CMYK JPEG as Adobe-inverted (JpegImagePlugin uses
    rawmode "CMYK;I"). Only files with the Adobe APP14 marker follow that
    convention, and a file without the marker stores plain CMYK values.
    """
    return ImageChops.invert(image)


def _apply_exif_orientation(image: Image.Image, source_format: str) -> Image.Image:
    """Return the image as the user sees it, rotated or mirrored by its EXIF orientation.

    `exif_transpose` also removes the tag from the result, so a second call
    cannot rotate the image twice.
    """
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
        if orientation not in _ROTATING_ORIENTATIONS:
            return image
        return ImageOps.exif_transpose(image)
    except Exception as exc:
        # A photo with a broken EXIF block is still a valid photo, so it is
        # served unrotated rather than rejected.
        logger.info(
            "ignoring unreadable EXIF data in a %s image: %s", source_format, type(exc).__name__
        )
        return image
