"""Drift end to end: services write the prediction log, the drift job scores it, Prometheus alerts.

The colour model's reference profile is built by the export code from random
crops of scikit-image photos. Live traffic goes through the gateway. First come
other crops of the same photos, which must not drift. Then the same crops come
darkened, blurred or rotated. Each change must push the score of the feature it
moves over its threshold and raise VisionServeDriftDetected in Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from tests.drift_runs import (
    run_drift_job,
    wait_for_drift_results,
    write_reference,
)
from tests.images import encode
from tests.monitored_stack import MonitoredStack, monitored_stack
from tests.onnx_models import COLOUR_MODEL
from tests.prometheus_servers import finite_values, needs_prometheus, poll

pytestmark = [pytest.mark.slow, needs_prometheus]

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon")
REFERENCE_IMAGES = 400
LIVE_IMAGES = 200
# The drift job reads only the newest LIVE_IMAGES records, so each phase is
# judged on its own images.
JOB_SETTINGS = {"min_samples": "100", "window_max_records": str(LIVE_IMAGES)}
BATCH_IMAGES = 32
# Each change and the input feature it moves most.
CHANGES: dict[str, tuple[Callable[[Image.Image], Image.Image], str]] = {
    "darkened": (lambda image: ImageEnhance.Brightness(image).enhance(0.4), "brightness"),
    "blurred": (lambda image: image.filter(ImageFilter.GaussianBlur(3)), "sharpness"),
    "rotated": (lambda image: image.transpose(Image.Transpose.ROTATE_90), "aspect"),
}
ALERT_TIMEOUT = 20.0


def photo_crops(count: int, seed: int) -> list[Image.Image]:
    """Return `count` landscape crops, 120 to 240 px wide, of random scikit-image photos."""
    from skimage import data as skimage_data

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(skimage_data, name)()).convert("RGB") for name in PHOTOS]
    crops = []
    for _ in range(count):
        photo = photos[int(rng.integers(len(photos)))]
        width = int(rng.integers(120, 241))
        height = int(width / rng.uniform(1.2, 1.6))
        left = int(rng.integers(0, photo.width - width + 1))
        top = int(rng.integers(0, photo.height - height + 1))
        crops.append(photo.crop((left, top, left + width, top + height)))
    return crops


def png_files(images: list[Image.Image]) -> list[bytes]:
    return [encode(image, "PNG") for image in images]


def classify_through_gateway(stack: MonitoredStack, images: list[Image.Image]) -> None:
    gateway = stack.services["gateway"]
    files = png_files(images)
    with httpx.Client(base_url=gateway.url, timeout=60.0) as client:
        for start in range(0, len(files), BATCH_IMAGES):
            form = [
                ("file", (f"image-{index}.png", data, "image/png"))
                for index, data in enumerate(files[start : start + BATCH_IMAGES])
            ]
            response = client.post("/v1/classify/batch", params={"model": COLOUR_MODEL}, files=form)
            assert response.status_code == 200, response.text


def drift_check(stack: MonitoredStack) -> None:
    """Run the drift job for the classifier and wait until Prometheus has its results."""
    started = run_drift_job(
        stack.prometheus,
        stack.pushgateway.url,
        stack.redis_key_prefix,
        "classifier",
        stack.classifier_repository,
        stack.work_dir / "drift-reports",
        **JOB_SETTINGS,
    )
    wait_for_drift_results(stack.prometheus, COLOUR_MODEL, started)


def drift_value(stack: MonitoredStack, expression: str) -> float:
    values = finite_values(stack.prometheus.query(expression))
    assert len(values) == 1, f"{expression} returned {values}"
    return values[0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoredStack]:
    with monitored_stack(tmp_path_factory.mktemp("drift")) as running:
        write_reference(
            running.classifier_repository / COLOUR_MODEL / "1",
            png_files(photo_crops(REFERENCE_IMAGES, seed=1)),
            "random crops of scikit-image photos",
        )
        yield running


@pytest.fixture(scope="module")
def live_images() -> list[Image.Image]:
    return photo_crops(LIVE_IMAGES, seed=2)


def test_in_distribution_has_no_drift(
    stack: MonitoredStack, live_images: list[Image.Image]
) -> None:
    classify_through_gateway(stack, live_images)
    drift_check(stack)

    detected = drift_value(stack, f'visionserve_drift_detected{{model="{COLOUR_MODEL}"}}')
    samples = drift_value(stack, f'visionserve_drift_samples{{model="{COLOUR_MODEL}"}}')

    assert detected == 0
    assert samples == LIVE_IMAGES


@pytest.mark.parametrize("change", list(CHANGES))
def test_changed_images_raise_drift(
    stack: MonitoredStack, live_images: list[Image.Image], change: str
) -> None:
    transform, feature = CHANGES[change]
    classify_through_gateway(stack, [transform(image) for image in live_images])
    drift_check(stack)

    selector = f'model="{COLOUR_MODEL}", feature="{feature}", statistic="psi"'
    score = drift_value(stack, f"visionserve_drift_score{{{selector}}}")
    threshold = drift_value(stack, 'visionserve_drift_threshold{statistic="psi"}')
    detected = drift_value(stack, f'visionserve_drift_detected{{model="{COLOUR_MODEL}"}}')

    assert score > threshold
    assert detected == 1

    def drift_alert() -> str | None:
        for alert in stack.prometheus.alerts():
            labels = alert["labels"]
            if (
                labels["alertname"] == "VisionServeDriftDetected"
                and labels["model"] == COLOUR_MODEL
            ):
                return str(alert["state"])
        return None

    assert poll(drift_alert, ALERT_TIMEOUT, "VisionServeDriftDetected") in {"pending", "firing"}


def test_reports_written(stack: MonitoredStack) -> None:
    reports = stack.work_dir / "drift-reports"

    assert (reports / "drift-report.json").is_file()
    assert (reports / "drift-report.html").is_file()
