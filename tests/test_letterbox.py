"""The numpy letterbox against OpenCV and ultralytics, and the box mapping in both directions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from ultralytics.data.augment import LetterBox

from services.common.letterbox import (
    LetterboxTransform,
    letterbox,
    letterbox_tensor,
    letterbox_transform,
    resize_linear,
)
from tests.detection_models import letterbox_spec

INPUT = 640
# (width, height): odd sizes, thin images, exact 2x and 4x reductions,
# upscaling and a phone photo.
IMAGE_SIZES = [
    (3775, 1571),
    (1571, 3775),
    (1, 500),
    (500, 1),
    (1, 1),
    (2, 3),
    (7, 5),
    (100, 80),
    (333, 777),
    (640, 640),
    (640, 480),
    (1280, 960),
    (2560, 1920),
    (641, 479),
    (4032, 3024),
]


def random_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(("width", "height"), IMAGE_SIZES)
def test_resize_matches_opencv_exactly(width: int, height: int) -> None:
    image = random_image(width, height)
    transform = letterbox_transform(width, height, INPUT, INPUT)
    size = (transform.resized_width, transform.resized_height)

    expected = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)

    assert np.array_equal(resize_linear(image, *size), expected)


def test_resize_matches_opencv_on_random_sizes() -> None:
    rng = np.random.default_rng(1)
    for _ in range(60):
        width, height, target_width, target_height = (int(v) for v in rng.integers(1, 900, 4))
        image = random_image(width, height, seed=width)

        expected = cv2.resize(image, (target_width, target_height), interpolation=cv2.INTER_LINEAR)
        actual = resize_linear(image, target_width, target_height)

        assert np.array_equal(actual, expected), (width, height, target_width, target_height)


@pytest.mark.parametrize(("width", "height"), IMAGE_SIZES)
def test_letterbox_matches_ultralytics_exactly(width: int, height: int) -> None:
    # Tolerance: none. Every pixel must be equal, padding included.
    image = random_image(width, height)
    expected = LetterBox((INPUT, INPUT), auto=False)(image=image.copy())

    padded, _ = letterbox(image, INPUT, INPUT, pad_value=114)

    assert padded.shape == expected.shape
    assert np.array_equal(padded, expected)


@pytest.mark.parametrize(("width", "height"), IMAGE_SIZES)
def test_transform_matches_ultralytics_parameters(width: int, height: int) -> None:
    reference = LetterBox((INPUT, INPUT), auto=False).get_params(
        {"img": np.zeros((height, width, 3), np.uint8)}
    )

    transform = letterbox_transform(width, height, INPUT, INPUT)

    assert (transform.resized_width, transform.resized_height) == reference["new_unpad"]
    assert transform.pad_left == reference["left"]
    assert transform.pad_top == reference["top"]
    assert transform.scale == reference["ratio"][0]


def test_non_square_input_pads_the_short_axis() -> None:
    padded, transform = letterbox(random_image(100, 100), 320, 160)

    assert padded.shape == (160, 320, 3)
    assert (transform.resized_width, transform.resized_height) == (160, 160)
    assert transform.pad_left == 80
    assert transform.pad_top == 0


@pytest.mark.parametrize(("width", "height"), IMAGE_SIZES)
def test_box_round_trip_is_exact(width: int, height: int) -> None:
    transform = letterbox_transform(width, height, INPUT, INPUT)
    boxes = np.array(
        [[0, 0, width, height], [width * 0.25, height * 0.1, width * 0.75, height * 0.6]]
    )

    back = transform.to_original(transform.to_input(boxes))

    assert np.allclose(back, boxes, rtol=0, atol=1e-9)


def located_box(mask: np.ndarray) -> np.ndarray:
    """Return the xyxy pixel-edge box of the True pixels of a 2-D mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    return np.array([columns[0], rows[0], columns[-1] + 1, rows[-1] + 1], dtype=np.float64)


@pytest.mark.parametrize(
    ("width", "height", "box"),
    [
        (3775, 1571, (1000, 300, 2400, 1200)),
        (1571, 3775, (200, 1500, 1300, 3000)),
        (1, 500, (0, 100, 1, 350)),
        (500, 1, (120, 0, 380, 1)),
        (333, 777, (17, 401, 290, 700)),
        (100, 80, (10, 20, 61, 53)),
    ],
)
def test_drawn_box_maps_back_within_a_pixel(
    width: int, height: int, box: tuple[int, int, int, int]
) -> None:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255

    padded, transform = letterbox(image, INPUT, INPUT, pad_value=0)
    # Half intensity marks the edge of the resized rectangle.
    found = located_box(padded[:, :, 0] >= 128)
    original = transform.to_original(found)[0]

    # One input pixel is 1 / gain original pixels, so that is the tolerance
    # wherever the image was shrunk, and 1 pixel where it was enlarged.
    tolerance = np.array([1 / transform.gain_x, 1 / transform.gain_y] * 2).clip(min=1.0)
    assert np.all(np.abs(found - transform.to_input(np.array(box))[0]) <= 1.0)
    assert np.all(np.abs(original - np.array(box)) <= tolerance)


def test_to_original_clips_to_the_image() -> None:
    transform = letterbox_transform(200, 100, 640, 640)
    inside_padding = np.array([[-50.0, 0.0, 700.0, 160.0], [0.0, 500.0, 640.0, 640.0]])

    mapped = transform.to_original(inside_padding)

    assert mapped[0].tolist() == [0.0, 0.0, 200.0, 0.0]
    assert mapped[1].tolist() == [0.0, 100.0, 200.0, 100.0]


def test_transform_fields_of_odd_padding() -> None:
    # 640 - 213 = 427 rows of padding: ultralytics puts 213 on top and 214 below.
    transform = letterbox_transform(3, 1, 640, 640)

    assert transform == LetterboxTransform(
        scale=640 / 3,
        pad_left=0,
        pad_top=213,
        original_width=3,
        original_height=1,
        resized_width=640,
        resized_height=213,
        input_width=640,
        input_height=640,
    )


def test_letterbox_tensor_is_scaled_rgb() -> None:
    image = Image.fromarray(random_image(50, 30))

    tensor, transform = letterbox_tensor(image, letterbox_spec(64))
    padded, _ = letterbox(np.asarray(image), 64, 64)

    assert tensor.shape == (3, 64, 64)
    assert tensor.dtype == np.float32
    assert np.array_equal(tensor, padded.transpose(2, 0, 1).astype(np.float32) / 255)
    assert transform.pad_top == round((64 - transform.resized_height) / 2 - 0.1)


def test_letterbox_rejects_invalid_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        letterbox(np.zeros((4, 4, 3), dtype=np.float32), 8, 8)
    with pytest.raises(ValueError, match="positive"):
        letterbox_transform(0, 10, 640, 640)


def test_letterbox_tensor_rejects_other_resize_policies() -> None:
    spec = letterbox_spec(64).model_copy(update={"resize": "stretch"})

    with pytest.raises(ValueError, match="letterbox"):
        letterbox_tensor(Image.new("RGB", (10, 10)), spec)
