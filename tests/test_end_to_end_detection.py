"""A trained detector returns through the gateway what the training-side evaluation returns.

Builds the tiny variant of the default detector (one epoch, real ultralytics
training and export) next to the default classifiers, runs the classifier,
the detector and the gateway as real uvicorn processes, and sends the
held-out scenes that the exporter saved, the EXIF orientation 6 portrait
included.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from scripts.demo import DIGITS_MODEL, local_stack
from scripts.detection_samples import SceneSample, load_scene_samples
from scripts.digit_samples import newest_version_dir
from services.common.metadata import read_metadata
from training.detection.onnx_predict import NmsSettings, OnnxDetector

pytestmark = pytest.mark.slow

TINY_DETECTOR = "digits-yolov8n-tiny"
ROOT = Path(__file__).resolve().parents[1]
# Low enough that the one-epoch model returns boxes to compare: its best
# scores are about 0.001.
CONF = 0.0001
IOU = 0.45


@pytest.fixture(scope="module")
def repository(default_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("models-with-detector")
    shutil.copytree(default_repository, target, dirs_exist_ok=True)
    work = tmp_path_factory.mktemp("detector-build")
    command = [
        sys.executable, "-m", "training.detection.build_default", "--tiny",
        "--repository", str(target),
        "--data-dir", str(work / "data"), "--runs-dir", str(work / "runs"),
    ]  # fmt: skip
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return target


@pytest.fixture(scope="module")
def gateway(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    log_dir = tmp_path_factory.mktemp("detection-logs")
    with (
        local_stack(repository, log_dir, with_detector=True) as servers,
        httpx.Client(base_url=servers["gateway"].url, timeout=60.0) as client,
    ):
        yield client


def post(client: httpx.Client, route: str, sample: SceneSample, **params: object) -> httpx.Response:
    return client.post(
        route,
        params=params,
        files={"file": (sample.path.name, sample.path.read_bytes(), "image/jpeg")},
    )


def test_detections_match_training_evaluation(gateway: httpx.Client, repository: Path) -> None:
    version_dir = newest_version_dir(repository, TINY_DETECTOR)
    metadata = read_metadata(version_dir)
    detector = OnnxDetector(version_dir / "model.onnx", metadata.preprocess)
    samples = load_scene_samples(repository, TINY_DETECTOR)
    compared_boxes = 0

    for sample in samples:
        response = post(gateway, "/v1/detect", sample, model=TINY_DETECTOR, conf=CONF, iou=IOU)
        assert response.status_code == 200, response.text
        body = response.json()
        (expected,) = detector.predict_files([sample.path], NmsSettings(CONF, IOU))

        assert body["image"] == {"width": sample.width, "height": sample.height}
        served = np.array(
            [[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in body["detections"]]
        )
        assert len(served) == len(expected.boxes), sample.path.name
        if len(served):
            np.testing.assert_allclose(served, expected.boxes, atol=0.5)
            served_classes = [d["class_id"] for d in body["detections"]]
            assert served_classes == expected.classes.astype(int).tolist()
        compared_boxes += len(served)

    assert any(sample.exif_orientation == 6 for sample in samples)
    assert compared_boxes > 0


def test_boxes_inside_displayed_portrait(gateway: httpx.Client, repository: Path) -> None:
    (portrait,) = [
        s for s in load_scene_samples(repository, TINY_DETECTOR) if s.exif_orientation == 6
    ]
    with Image.open(portrait.path) as stored:
        stored_width, stored_height = stored.size

    body = post(gateway, "/v1/detect", portrait, model=TINY_DETECTOR, conf=CONF).json()

    # The file stores its pixels sideways; the response uses the upright view.
    assert (body["image"]["width"], body["image"]["height"]) == (stored_height, stored_width)
    for detection in body["detections"]:
        box = detection["box"]
        assert 0 <= box["x1"] <= box["x2"] <= body["image"]["width"]
        assert 0 <= box["y1"] <= box["y2"] <= body["image"]["height"]


def test_render_keeps_displayed_size(gateway: httpx.Client, repository: Path) -> None:
    (portrait,) = [
        s for s in load_scene_samples(repository, TINY_DETECTOR) if s.exif_orientation == 6
    ]

    response = post(gateway, "/v1/detect/render", portrait, model=TINY_DETECTOR, format="png")

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as rendered:
        assert rendered.size == (portrait.width, portrait.height)


def test_analyze_classifies_each_box(gateway: httpx.Client, repository: Path) -> None:
    sample = load_scene_samples(repository, TINY_DETECTOR)[0]
    detected = post(gateway, "/v1/detect", sample, model=TINY_DETECTOR, conf=CONF).json()

    response = post(
        gateway,
        "/v1/analyze",
        sample,
        model=TINY_DETECTOR,
        conf=CONF,
        classifier_model=DIGITS_MODEL,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["classifier_model"]["name"] == DIGITS_MODEL
    assert len(body["objects"]) == len(detected["detections"])
    for found in body["objects"]:
        assert found["classification"] is not None, found.get("classification_error")
        assert found["classification"]["label"] in [str(digit) for digit in range(10)]
