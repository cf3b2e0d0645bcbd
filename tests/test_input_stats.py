"""Input statistics, the prediction record format and the reference profile schema."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data as skimage_data

from services.common.imaging import DecodedImage, decode_image
from services.common.input_stats import INPUT_FEATURES, WORKING_SIZE, measure_input
from services.common.prediction_record import PredictionRecord, prediction_log_key
from services.common.reference_profile import ReferenceProfile, read_reference, write_reference


def decoded(image: Image.Image) -> DecodedImage:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return decode_image(buffer.getvalue(), max_pixels=50_000_000)


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return Image.fromarray(skimage_data.chelsea())


def test_darker_image_has_lower_brightness(chelsea: Image.Image) -> None:
    dark = Image.fromarray((np.asarray(chelsea) * 0.4).astype(np.uint8))
    assert (
        measure_input(decoded(dark)).brightness < 0.5 * measure_input(decoded(chelsea)).brightness
    )


def test_blurred_image_has_lower_sharpness(chelsea: Image.Image) -> None:
    blurred = chelsea.filter(ImageFilter.GaussianBlur(4))
    assert (
        measure_input(decoded(blurred)).sharpness < 0.2 * measure_input(decoded(chelsea)).sharpness
    )


def test_grey_image_has_zero_saturation(chelsea: Image.Image) -> None:
    stats = measure_input(decoded(chelsea.convert("L").convert("RGB")))
    assert stats.saturation == pytest.approx(0.0, abs=1e-6)
    assert stats.contrast > 0.05


def test_size_features_use_full_size(chelsea: Image.Image) -> None:
    large = chelsea.resize((chelsea.width * 3, chelsea.height * 3))
    stats = measure_input(decoded(large))
    assert (stats.width, stats.height) == large.size
    assert stats.aspect == pytest.approx(large.width / large.height)
    assert max(large.size) > WORKING_SIZE


def test_pixel_features_do_not_depend_on_scale(chelsea: Image.Image) -> None:
    small = measure_input(decoded(chelsea))
    large = measure_input(decoded(chelsea.resize((chelsea.width * 3, chelsea.height * 3))))
    assert large.brightness == pytest.approx(small.brightness, abs=0.01)
    assert large.sharpness == pytest.approx(small.sharpness, rel=0.25)


def test_tiny_image_has_zero_sharpness() -> None:
    stats = measure_input(decoded(Image.new("RGB", (2, 1), (10, 20, 30))))
    assert stats.sharpness == 0.0


def test_record_round_trip(chelsea: Image.Image) -> None:
    record = PredictionRecord(
        timestamp=1_700_000_000.25,
        service="detector",
        model="digits-yolo",
        version=3,
        task="detection",
        request_id="abc",
        labels=("7", "1"),
        scores=(0.9, 0.4),
        inputs=measure_input(decoded(chelsea)),
    )
    fields = {key.encode(): value.encode() for key, value in record.to_fields().items()}
    assert PredictionRecord.from_fields(fields) == record
    assert record.box_count == 2
    assert (
        prediction_log_key("vs", "detector", "digits-yolo") == "vs:predictions:detector:digits-yolo"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("task", "segmentation", "unknown task"),
        ("scores", "[0.5]", "2 labels but 1 scores"),
        ("width", "wide", "invalid literal"),
        ("labels", "[", "malformed"),
    ],
)
def test_malformed_record_raises(
    chelsea: Image.Image, field: str, value: str, message: str
) -> None:
    record = PredictionRecord(
        1.0,
        "detector",
        "m",
        1,
        "detection",
        "r",
        ("a", "b"),
        (0.5, 0.6),
        measure_input(decoded(chelsea)),
    )
    fields = record.to_fields() | {field: value}
    with pytest.raises(ValueError, match=message):
        PredictionRecord.from_fields(fields)


def test_record_missing_field_raises() -> None:
    with pytest.raises(ValueError, match="no field 'task'"):
        PredictionRecord.from_fields({"ts": "1.0"})


def profile_data(task: str = "classification") -> dict[str, object]:
    features: dict[str, list[float]] = {name: [1.0, 2.0] for name in INPUT_FEATURES}
    features["confidence"] = [0.9, 0.8, 0.7]
    if task == "detection":
        features["box_count"] = [1.0, 2.0]
    return {
        "model": "m",
        "version": 1,
        "task": task,
        "source": "validation split",
        "image_count": 2,
        "features": features,
        "label_frequencies": {"a": 0.25, "b": 0.75},
    }


def test_reference_round_trip(tmp_path: Path) -> None:
    profile = ReferenceProfile.model_validate(profile_data("detection"))
    write_reference(profile, tmp_path)
    assert read_reference(tmp_path) == profile


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, "format 2 is not supported"),
        ({"task": "detection"}, "missing: \\['box_count'\\]"),
        ({"image_count": 3}, "feature width has 2 values for 3 images"),
        ({"label_frequencies": {"a": 0.5}}, "sum to 0.5"),
    ],
)
def test_invalid_reference_raises(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReferenceProfile.model_validate(profile_data() | change)
