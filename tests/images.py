"""Image bytes for tests: valid files in every supported format and hostile ones.

Everything is built in memory with Pillow, numpy and zlib, so no test data
is stored in the repository.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    """Encode `image` with Pillow and return the file bytes."""
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def solid_jpeg(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(Image.new("RGB", size, color), "JPEG", quality=95)


def solid_png(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(Image.new("RGB", size, color), "PNG")


def noise_image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """An RGB image of random pixels, which compresses badly, so truncation hits pixel data."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def truncated_jpeg() -> bytes:
    data = encode(noise_image((120, 80)), "JPEG", quality=90)
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    data = encode(noise_image((120, 80)), "PNG")
    return data[: len(data) // 2]


def png_chunk(chunk_type: bytes, payload: bytes) -> bytes:
    """Return one PNG chunk: length, type, payload and the CRC-32 of type and payload."""
    crc = zlib.crc32(chunk_type + payload)
    return struct.pack(">I", len(payload)) + chunk_type + payload + struct.pack(">I", crc)


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG that declares `width` x `height` RGB pixels but carries one row.

    The decoder must reject it from the header, without allocating the pixels.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    first_row = zlib.compress(b"\x00" + b"\x00" * 3 * min(width, 64))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", first_row)
        + png_chunk(b"IEND", b"")
    )


def png_with_bad_crc(chunk_type: bytes) -> bytes:
    """A small valid PNG whose first `chunk_type` chunk has its CRC flipped."""
    data = bytearray(solid_png(RED, (16, 16)))
    position = 8
    while position < len(data):
        (length,) = struct.unpack_from(">I", data, position)
        if bytes(data[position + 4 : position + 8]) == chunk_type:
            data[position + 8 + length] ^= 0xFF
            return bytes(data)
        position += 12 + length
    raise ValueError(f"no {chunk_type!r} chunk in the sample PNG")


def jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """Return (marker, start offset) of each JPEG segment before the start of scan."""
    segments = []
    position = 2
    while position < len(data):
        marker = data[position + 1]
        segments.append((marker, position))
        if marker == 0xDA:
            break
        (length,) = struct.unpack_from(">H", data, position + 2)
        position += 2 + length
    return segments


def without_jpeg_segment(data: bytes, marker: int) -> bytes:
    """Remove every segment with `marker` (e.g. 0xEE for Adobe APP14) from a JPEG."""
    result = bytearray(data[:2])
    segments = jpeg_segments(data)
    for index, (segment_marker, start) in enumerate(segments):
        if segment_marker == 0xDA:
            result += data[start:]
            break
        end = segments[index + 1][1]
        if segment_marker != marker:
            result += data[start:end]
    return bytes(result)


def jpeg_with_declared_size(width: int, height: int) -> bytes:
    """A small JPEG whose SOF header is patched to declare `width` x `height`."""
    data = bytearray(solid_jpeg(RED, (16, 16)))
    for marker, start in jpeg_segments(bytes(data)):
        if marker in (0xC0, 0xC2):
            struct.pack_into(">HH", data, start + 5, height, width)
            return bytes(data)
    raise ValueError("no SOF segment in the sample JPEG")


def exif_rotated_jpeg(view: Image.Image) -> bytes:
    """Store `view` turned 90 degrees counter-clockwise, with EXIF orientation 6 to undo it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(view.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)
