"""`training.reference`: reference profiles built with the serving code, checked against services.

The colour models of `tests.onnx_models` and `tests.detection_models` give
known, confident predictions, so every compared list is long. The exporter
tests in test_export.py and test_detection_training.py check the same on
trained models.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from services.common.imaging import decode_image
from services.common.metadata import read_metadata
from services.common.reference_profile import read_reference
from tests.detection_models import COLOUR_DETECTOR, build_colour_detector_repository
from tests.images import BLUE, GREEN, RED, encode, noise_image
from tests.onnx_models import COLOUR_MODEL, build_colour_repository
from tests.reference_checks import (
    check_classifications,
    check_detections,
    check_input_features,
    model_service_env,
    post_each,
)
from tests.servers import running_server
from training.reference import ReferenceImages, write_reference_profile

pytestmark = pytest.mark.slow

MAX_PIXELS = 50_000_000
GREY = (114, 114, 114)


def tinted_photos(count: int) -> list[bytes]:
    """PNGs of noise over red, green and blue in turn, of varying size."""
    colors = [RED, GREEN, BLUE]
    files = []
    for index in range(count):
        size = (48 + 8 * index, 40 + 4 * index)
        base = Image.new("RGB", size, colors[index % 3])
        files.append(encode(Image.blend(base, noise_image(size, index), 0.35), "PNG"))
    return files


def square_scenes(count: int) -> list[bytes]:
    """Grey PNGs with one to three coloured squares at positions that change per index."""
    files = []
    for index in range(count):
        image = Image.new("RGB", (200, 150), GREY)
        image.paste(RED, (10 + 5 * index, 20, 60 + 5 * index, 70))
        if index % 2:
            image.paste(GREEN, (120, 80, 170, 130))
        if index % 3 == 2:
            image.paste(BLUE, (110, 10, 150, 50))
        files.append(encode(image, "PNG"))
    return files


def test_classifier_reference_matches_service(tmp_path: Path) -> None:
    repository = build_colour_repository(tmp_path / "models")
    version_dir = repository / COLOUR_MODEL / "1"
    files = tinted_photos(9)

    write_reference_profile(
        version_dir, read_metadata(version_dir), ReferenceImages(files, "tinted noise")
    )
    profile = read_reference(version_dir)
    env = model_service_env("classifier", repository)
    with running_server("services.classifier.app:create_app", env, tmp_path) as server:
        bodies = post_each(server.url, "/v1/classify", files)

    assert profile.model == COLOUR_MODEL
    assert profile.task == "classification"
    assert profile.source == "tinted noise"
    check_input_features(profile, [decode_image(data, max_pixels=MAX_PIXELS) for data in files])
    check_classifications(profile, bodies)
    assert set(profile.label_frequencies) == {"red", "green", "blue"}


def test_detector_reference_matches_service(tmp_path: Path) -> None:
    repository = build_colour_detector_repository(tmp_path / "models")
    version_dir = repository / COLOUR_DETECTOR / "1"
    files = square_scenes(6)

    write_reference_profile(
        version_dir, read_metadata(version_dir), ReferenceImages(files, "square scenes")
    )
    profile = read_reference(version_dir)
    env = model_service_env("detector", repository)
    with running_server("services.detector.app:create_app", env, tmp_path) as server:
        bodies = post_each(server.url, "/v1/detect", files)

    assert profile.task == "detection"
    check_input_features(profile, [decode_image(data, max_pixels=MAX_PIXELS) for data in files])
    check_detections(profile, bodies)
    assert sum(profile.features["box_count"]) >= 9
    assert set(profile.label_frequencies) == {"red", "green", "blue"}


def test_reference_only_uses_max_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repository = build_colour_repository(tmp_path / "models")
    version_dir = repository / COLOUR_MODEL / "1"
    monkeypatch.setattr("training.reference.MAX_REFERENCE_SAMPLES", 4)

    write_reference_profile(
        version_dir, read_metadata(version_dir), ReferenceImages(tinted_photos(7), "capped")
    )

    assert read_reference(version_dir).image_count == 4


def test_reference_without_images_rejected(tmp_path: Path) -> None:
    repository = build_colour_repository(tmp_path / "models")
    version_dir = repository / COLOUR_MODEL / "1"

    with pytest.raises(ValueError, match="no images"):
        write_reference_profile(version_dir, read_metadata(version_dir), ReferenceImages([], "-"))
    assert not (version_dir / "reference.json").exists()
