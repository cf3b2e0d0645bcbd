"""Tests of `decode_image` and `to_rgb` on real encoded files of every supported format."""

from __future__ import annotations

import io
import random
import struct

import numpy as np
import pytest
from PIL import Image, ImageChops, ImageFile

from services.common.errors import (
    CorruptImage,
    EmptyBody,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
)
from services.common.image_modes import to_rgb
from services.common.imaging import DecodedImage, decode_image
from tests.images import (
    BLUE,
    GREEN,
    RED,
    encode,
    jpeg_segments,
    jpeg_with_declared_size,
    noise_image,
    png_chunk,
    png_header_only,
    png_with_bad_crc,
    solid_jpeg,
    solid_png,
    truncated_jpeg,
    truncated_png,
    without_jpeg_segment,
)

MAX_PIXELS = 50_000_000
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
ADOBE_APP14 = 0xEE


def decode(data: bytes, **options: object) -> DecodedImage:
    return decode_image(data, max_pixels=MAX_PIXELS, **options)  # type: ignore[arg-type]


def pixel(decoded: DecodedImage, x: int = 0, y: int = 0) -> tuple[int, ...]:
    value = decoded.image.getpixel((x, y))
    assert isinstance(value, tuple)
    return value


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 0) -> None:
    difference = max(abs(a - e) for a, e in zip(actual, expected, strict=True))
    assert difference <= tolerance, f"{actual} differs from {expected} by {difference}"


# Formats and modes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("image_format", "options", "tolerance"),
    [
        ("JPEG", {"quality": 95}, 3),
        ("PNG", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("GIF", {}, 0),
    ],
)
def test_decode_supported_format(image_format: str, options: dict, tolerance: int) -> None:
    data = encode(Image.new("RGB", (40, 30), BLUE), image_format, **options)

    decoded = decode(data)

    assert decoded.format == image_format
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (40, 30)
    assert decoded.image.size == (40, 30)
    assert_close(pixel(decoded, 20, 15), BLUE, tolerance)


def test_decode_mpo_gives_first_picture() -> None:
    data = encode(
        Image.new("RGB", (40, 30), RED),
        "MPO",
        save_all=True,
        append_images=[Image.new("RGB", (40, 30), GREEN)],
    )

    decoded = decode(data)

    assert decoded.format == "MPO"
    assert_close(pixel(decoded), RED, 3)


def test_decode_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (20, 20), color) for color in (GREEN, RED, BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)

    decoded = decode(data)

    assert pixel(decoded) == GREEN


def test_grayscale_png() -> None:
    decoded = decode(encode(Image.new("L", (4, 4), 100), "PNG"))

    assert pixel(decoded) == (100, 100, 100)


def test_bilevel_bmp() -> None:
    image = Image.new("1", (8, 1), 0)
    image.putpixel((7, 0), 1)

    decoded = decode(encode(image, "BMP"))

    assert pixel(decoded, 0) == BLACK
    assert pixel(decoded, 7) == WHITE


def test_palette_png_without_transparency() -> None:
    image = Image.new("RGB", (4, 4), GREEN).convert("P")

    decoded = decode(encode(image, "PNG"))

    assert pixel(decoded) == GREEN


def test_palette_png_transparent_index_shows_background() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *GREEN] + [0] * 762)
    image.putpixel((1, 0), 1)
    data = encode(image, "PNG", transparency=1)

    decoded = decode(data, background=BLUE)

    assert pixel(decoded, 0) == RED
    assert pixel(decoded, 1) == BLUE


def test_gif_transparent_index_shows_background() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *GREEN] + [0] * 762)
    image.putpixel((1, 0), 1)
    data = encode(image, "GIF", transparency=1)

    decoded = decode(data)

    assert pixel(decoded, 0) == RED
    assert pixel(decoded, 1) == WHITE


def test_rgb_png_transparency_key_shows_background() -> None:
    image = Image.new("RGB", (2, 1), RED)
    image.putpixel((1, 0), GREEN)
    data = encode(image, "PNG", transparency=GREEN)

    decoded = decode(data, background=BLACK)

    assert pixel(decoded, 0) == RED
    assert pixel(decoded, 1) == BLACK


def test_rgba_png_composites_over_background() -> None:
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 255), (255, 0, 0, 0), (255, 0, 0, 128)])

    decoded = decode(encode(image, "PNG"))

    assert pixel(decoded, 0) == RED
    assert pixel(decoded, 1) == WHITE
    assert_close(pixel(decoded, 2), (255, 127, 127), 1)


def test_rgba_webp_composites_over_custom_background() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 255, 0))

    decoded = decode(encode(image, "WEBP", lossless=True, exact=True), background=GREEN)

    assert pixel(decoded) == GREEN


def test_gray_alpha_png_composites_over_background() -> None:
    image = Image.new("LA", (2, 1))
    image.putdata([(200, 255), (0, 0)])

    decoded = decode(encode(image, "PNG"), background=BLUE)

    assert pixel(decoded, 0) == (200, 200, 200)
    assert pixel(decoded, 1) == BLUE


def test_palette_alpha_composites_over_background() -> None:
    image = Image.new("PA", (2, 1))
    image.putpalette([*RED, *GREEN] + [0] * 762)
    image.putdata([(0, 255), (1, 0)])

    converted = to_rgb(image, BLUE)

    assert converted.getpixel((0, 0)) == RED
    assert converted.getpixel((1, 0)) == BLUE


@pytest.mark.parametrize("mode", ["La", "RGBa"])
def test_premultiplied_alpha_composites_over_background(mode: str) -> None:
    # A premultiplied pixel stores colour * alpha: 100 at half alpha is 50.
    bands = 2 if mode == "La" else 4
    half = (50,) * (bands - 1) + (128,)
    image = Image.new(mode, (2, 1))
    image.putdata([half, (0,) * bands])

    converted = to_rgb(image, (0, 0, 0))

    assert_close(converted.getpixel((0, 0)), (50, 50, 50), 1)  # type: ignore[arg-type]
    assert converted.getpixel((1, 0)) == BLACK


def test_cmyk_jpeg_with_adobe_marker() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    markers = [marker for marker, _ in jpeg_segments(data)]
    assert ADOBE_APP14 in markers, "libjpeg should write the Adobe marker for CMYK"

    decoded = decode(data)

    assert_close(pixel(decoded, 8, 8), RED, 3)


def test_cmyk_jpeg_without_adobe_marker() -> None:
    # Pillow inverts CMYK on save to match its read convention, so saving the
    # inverted image stores plain CMYK values. Without the APP14 marker those
    # values must be read as they are.
    plain_red = ImageChops.invert(Image.new("CMYK", (16, 16), (0, 255, 255, 0)))
    data = without_jpeg_segment(encode(plain_red, "JPEG", quality=95), ADOBE_APP14)
    markers = [marker for marker, _ in jpeg_segments(data)]
    assert ADOBE_APP14 not in markers

    decoded = decode(data)

    assert_close(pixel(decoded, 8, 8), RED, 3)


def test_cmyk_tiff() -> None:
    data = encode(Image.new("CMYK", (4, 4), (255, 0, 255, 0)), "TIFF")

    assert pixel(decode(data)) == GREEN


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_sixteen_bit_gray_uses_full_range(image_format: str) -> None:
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), image_format)

    decoded = decode(data)

    assert [pixel(decoded, x)[0] for x in range(4)] == [0, 1, 128, 255]


def test_sixteen_bit_big_endian_tiff() -> None:
    image = Image.frombytes("I;16B", (2, 1), b"\x80\x00\xff\xff")
    data = encode(image, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I;16B"

    decoded = decode(data)

    assert pixel(decoded, 0) == (128, 128, 128)
    assert pixel(decoded, 1) == WHITE


def test_sixteen_bit_little_endian_mode() -> None:
    image = Image.frombytes("I;16L", (2, 1), b"\x00\x80\xff\xff")

    converted = to_rgb(image)

    assert converted.getpixel((0, 0)) == (128, 128, 128)
    assert converted.getpixel((1, 0)) == WHITE


def test_int32_tiff_is_min_max_scaled() -> None:
    values = np.array([[-100, 0, 100]], dtype=np.int32)

    decoded = decode(encode(Image.fromarray(values), "TIFF"))

    assert [pixel(decoded, x)[0] for x in range(3)] == [0, 128, 255]


def test_float_tiff_min_max_and_nan() -> None:
    values = np.array([[0.25, 0.5, 0.75, np.nan]], dtype=np.float32)

    decoded = decode(encode(Image.fromarray(values), "TIFF"))

    assert [pixel(decoded, x)[0] for x in range(4)] == [0, 128, 255, 0]


def test_constant_float_image_is_black() -> None:
    converted = to_rgb(Image.fromarray(np.full((2, 2), 3.5, dtype=np.float32)))

    assert converted.getpixel((0, 0)) == BLACK


def test_lab_image_is_converted_to_srgb() -> None:
    # CIELAB red (L=53, a=80, b=67) in Pillow's 8-bit LAB encoding.
    image = Image.new("LAB", (2, 2), (135, 208, 195))

    converted = to_rgb(image)

    red, green, blue = converted.getpixel((0, 0))  # type: ignore[misc]
    assert red > 230
    assert green < 30
    assert blue < 30


# EXIF orientation --------------------------------------------------------------

# What the user sees: 6 wide, 4 tall, red top-left pixel, green top-right pixel.
VISIBLE = np.full((4, 6, 3), 255, dtype=np.uint8)
VISIBLE[0, 0] = RED
VISIBLE[0, 5] = GREEN

# Stored pixel arrays for each value of the EXIF Orientation tag, which names
# where row 0 and column 0 of the stored image appear on screen.
STORED_FOR_ORIENTATION = {
    1: VISIBLE,
    2: VISIBLE[:, ::-1],  # row 0 top, column 0 right
    3: VISIBLE[::-1, ::-1],  # row 0 bottom, column 0 right
    4: VISIBLE[::-1, :],  # row 0 bottom, column 0 left
    5: VISIBLE.transpose(1, 0, 2),  # row 0 left, column 0 top
    6: VISIBLE[:, ::-1].transpose(1, 0, 2),  # row 0 right, column 0 top
    7: VISIBLE[::-1, ::-1].transpose(1, 0, 2),  # row 0 right, column 0 bottom
    8: VISIBLE[::-1, :].transpose(1, 0, 2),  # row 0 left, column 0 bottom
}


def with_orientation(image: Image.Image, orientation: int, image_format: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, image_format, exif=exif)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(orientation: int) -> None:
    stored = Image.fromarray(np.ascontiguousarray(STORED_FOR_ORIENTATION[orientation]))
    data = with_orientation(stored, orientation, "PNG")

    decoded = decode(data)

    assert (decoded.width, decoded.height) == (6, 4)
    assert decoded.image.size == (6, 4)
    assert pixel(decoded, 0, 0) == RED
    assert pixel(decoded, 5, 0) == GREEN
    assert pixel(decoded, 0, 3) == WHITE
    assert decoded.image.getexif().get(0x0112) in (None, 1), "orientation applied twice?"


def test_exif_orientation_on_drafted_jpeg_reports_full_size() -> None:
    # Stored 1600 wide and 2400 tall, orientation 6: the user sees 2400 x 1600.
    stored = Image.new("RGB", (1600, 2400), WHITE)
    stored.paste(RED, (0, 0, 1600, 400))  # stored top rows show up on the right
    data = with_orientation(stored, 6, "JPEG")

    decoded = decode(data, draft_size=(256, 256))

    assert (decoded.width, decoded.height) == (2400, 1600)
    assert decoded.image.size == (600, 400)
    assert_close(pixel(decoded, 590, 200), RED, 3)
    assert_close(pixel(decoded, 10, 200), WHITE, 3)


def test_unreadable_exif_is_ignored() -> None:
    data = encode(Image.new("RGB", (8, 4), RED), "PNG", exif=b"Exif\x00\x00MM\x00*garbage")

    decoded = decode(data)

    assert (decoded.width, decoded.height) == (8, 4)
    assert pixel(decoded) == RED


# Draft decoding -----------------------------------------------------------------


def test_draft_decodes_big_jpeg_at_reduced_scale() -> None:
    data = encode(noise_image((2400, 1600)), "JPEG", quality=80)

    decoded = decode(data, draft_size=(256, 256))

    assert (decoded.width, decoded.height) == (2400, 1600)
    assert decoded.image.size == (600, 400)
    assert decoded.image.mode == "RGB"


def test_draft_keeps_both_sides_at_least_requested() -> None:
    data = encode(Image.new("RGB", (3000, 500), GREEN), "JPEG")

    decoded = decode(data, draft_size=(224, 224))

    width, height = decoded.image.size
    assert height >= 224
    assert width == 3000 * height // 500


def test_draft_is_ignored_for_png() -> None:
    decoded = decode(solid_png(RED, (640, 480)), draft_size=(64, 64))

    assert decoded.image.size == (640, 480)


# Bad input ----------------------------------------------------------------------


def test_empty_data_is_rejected() -> None:
    with pytest.raises(EmptyBody, match="body is empty") as caught:
        decode(b"")

    assert caught.value.status_code == 400


def test_truncated_jpeg_is_rejected() -> None:
    with pytest.raises(CorruptImage, match="JPEG data is truncated") as caught:
        decode(truncated_jpeg())

    assert caught.value.status_code == 400


def test_truncated_png_is_rejected() -> None:
    with pytest.raises(CorruptImage, match="PNG data ends inside the IDAT chunk") as caught:
        decode(truncated_png())

    assert caught.value.status_code == 400


def test_jpeg_cut_inside_header_is_rejected() -> None:
    with pytest.raises(CorruptImage, match="starts like a JPEG file"):
        decode(solid_jpeg(RED)[:20])


@pytest.mark.parametrize("chunk_type", [b"IHDR", b"IDAT"])
def test_png_with_bad_crc_is_rejected(chunk_type: bytes) -> None:
    expected = f"PNG {chunk_type.decode()} chunk at byte \\d+ fails its CRC check"

    with pytest.raises(CorruptImage, match=expected) as caught:
        decode(png_with_bad_crc(chunk_type))

    assert caught.value.status_code == 400


def test_png_with_corrupt_pixel_data_is_rejected() -> None:
    data = bytearray(solid_png(RED, (64, 64)))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF
    # Recompute the CRC, so that the zlib stream is the only damage.
    (length,) = struct.unpack_from(">I", data, idat - 4)
    payload = bytes(data[idat + 4 : idat + 4 + length])
    data[idat - 4 : idat + 8 + length] = png_chunk(b"IDAT", payload)

    with pytest.raises(CorruptImage, match="PNG data is corrupt"):
        decode(bytes(data))


def test_random_bytes_are_rejected() -> None:
    data = random.Random(1).randbytes(4096)

    with pytest.raises(UnsupportedMediaType, match="not a supported image") as caught:
        decode(data)

    assert caught.value.status_code == 415
    assert "JPEG, PNG, WebP, BMP, TIFF or GIF" in caught.value.message


def test_text_file_is_rejected() -> None:
    with pytest.raises(UnsupportedMediaType, match="not a supported image"):
        decode(b"name,label\ncat.jpg,cat\n" * 20)


@pytest.mark.parametrize("image_format", ["ICO", "PPM", "TGA"])
def test_unsupported_format_is_rejected(image_format: str) -> None:
    data = encode(Image.new("RGB", (16, 16), RED), image_format)

    with pytest.raises(UnsupportedMediaType) as caught:
        decode(data)

    assert caught.value.status_code == 415
    assert caught.value.message.startswith(f"{image_format} images are not supported")
    assert "JPEG, PNG, WebP, BMP, TIFF or GIF" in caught.value.message


def test_huge_declared_png_is_rejected_from_header() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        decode(png_header_only(50_000, 50_000))

    assert caught.value.status_code == 413
    assert "50000x50000 (2500000000 pixels)" in caught.value.message
    assert f"limit of {MAX_PIXELS} pixels" in caught.value.message


def test_pixel_limit_applies_to_small_images_too() -> None:
    with pytest.raises(PayloadTooLarge, match="limit of 1000 pixels"):
        decode_image(solid_png(RED, (40, 30)), max_pixels=1000)


def test_jpeg_beyond_pillow_bomb_limit_names_declared_size() -> None:
    # Image.open would raise DecompressionBombError for this size before the
    # decoder could read it, so the message would lose the declared size.
    data = jpeg_with_declared_size(65_000, 60_000)

    with pytest.raises(PayloadTooLarge) as caught:
        decode(data)

    assert caught.value.status_code == 413
    assert "65000x60000" in caught.value.message


def test_unsupported_format_beyond_pillow_bomb_limit() -> None:
    data = b"P6\n60000 60000\n255\n" + bytes(48)

    with pytest.raises(UnsupportedMediaType, match="not a supported image"):
        decode(data)


def test_truncated_images_flag_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)

    with pytest.raises(ServiceError) as caught:
        decode(truncated_jpeg())

    assert caught.value.status_code == 500


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_damaged_files_raise_service_errors_only() -> None:
    samples = [
        encode(noise_image((24, 16)), image_format)
        for image_format in ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
    ]
    rng = random.Random(7)
    for sample in samples:
        for _ in range(300):
            damaged = bytearray(sample)
            for _ in range(rng.randint(1, 8)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            damaged = damaged[: rng.randint(1, len(damaged))]
            try:
                decoded = decode(bytes(damaged))
            except ServiceError as exc:
                assert 400 <= exc.status_code < 500, exc.message
            else:
                assert decoded.image.mode == "RGB"
