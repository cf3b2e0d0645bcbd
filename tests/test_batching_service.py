"""Dynamic batching on real classifier and detector processes: what clients see."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.detection_models import YOLO_MODEL, build_yolo_repository, calibration_photos
from tests.images import BLUE, GREEN, RED, encode, solid_jpeg, solid_png, truncated_jpeg
from tests.onnx_models import COLOUR_MODEL, build_colour_repository
from tests.scraping import metric
from tests.servers import Server, running_server

pytestmark = pytest.mark.slow

CLASSIFIER = "services.classifier.app:create_app"
DETECTOR = "services.detector.app:create_app"


def post(server: Server, path: str, body: bytes, **params: Any) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}",
        params=params,
        content=body,
        headers={"Content-Type": "application/octet-stream"},
        timeout=60.0,
    )


def post_all(server: Server, path: str, bodies: list[bytes], **params: Any) -> list[httpx.Response]:
    """Send every body at once, each from its own thread."""
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(lambda body: post(server, path, body, **params), bodies))


@pytest.fixture(scope="module")
def colour_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def classifier(
    colour_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(colour_repository),
        "VS_CLASSIFIER_INTRA_OP_THREADS": "1",
        # Long enough that requests sent together always meet in one batch.
        "VS_CLASSIFIER_MAX_QUEUE_DELAY_MS": "300",
        "VS_CLASSIFIER_MAX_BATCH_SIZE": "16",
    }
    with running_server(CLASSIFIER, env, tmp_path_factory.mktemp("logs")) as server:
        yield server


def test_batch_isolates_bad_image(classifier: Server) -> None:
    runs_before = metric(classifier, "visionserve_batch_size_count", model=COLOUR_MODEL)
    rows_before = metric(classifier, "visionserve_batch_size_sum", model=COLOUR_MODEL)
    colours = {"red": RED, "green": GREEN, "blue": BLUE}
    bodies = [
        solid_png(colour, (20 + 7 * i, 13 + 3 * i)) for i, colour in enumerate(colours.values())
    ]
    bodies += [solid_jpeg(RED, (640, 480)), truncated_jpeg()]

    responses = post_all(classifier, "/v1/classify", bodies, top_k=1)

    labels = [r.json()["predictions"][0]["label"] for r in responses[:4]]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 400]
    assert labels == ["red", "green", "blue", "red"]
    assert responses[4].json()["error"]["code"] == "corrupt_image"
    runs = metric(classifier, "visionserve_batch_size_count", model=COLOUR_MODEL) - runs_before
    rows = metric(classifier, "visionserve_batch_size_sum", model=COLOUR_MODEL) - rows_before
    assert rows == 4
    assert runs < rows, "no two requests ran in the same batch"


def test_batched_answers_equal_single_answers(classifier: Server) -> None:
    bodies = [encode(Image.fromarray(photo), "JPEG") for photo in calibration_photos()]
    alone = [post(classifier, "/v1/classify", body, top_k=3).json() for body in bodies]

    together = post_all(classifier, "/v1/classify", bodies, top_k=3)

    for single, batched in zip(alone, together, strict=True):
        pairs = zip(single["predictions"], batched.json()["predictions"], strict=True)
        for first, second in pairs:
            assert first["label"] == second["label"]
            assert first["probability"] == pytest.approx(second["probability"], abs=1e-6)


def test_full_queue_answers_503_with_retry_after(colour_repository: Path, tmp_path: Path) -> None:
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(colour_repository),
        "VS_CLASSIFIER_MAX_QUEUE_SIZE": "1",
        "VS_CLASSIFIER_MAX_QUEUE_DELAY_MS": "1000",
    }
    with running_server(CLASSIFIER, env, tmp_path) as server:
        first: list[httpx.Response] = []
        queued = threading.Thread(
            target=lambda: first.append(post(server, "/v1/classify", solid_png(RED)))
        )
        queued.start()
        deadline = time.monotonic() + 10
        while metric(server, "visionserve_queue_depth", model=COLOUR_MODEL) < 1:
            assert time.monotonic() < deadline, "the first request never reached the queue"
            time.sleep(0.02)

        rejected = post(server, "/v1/classify", solid_png(RED))
        queued.join()

        assert rejected.status_code == 503
        assert rejected.headers["Retry-After"] == "1"
        assert rejected.json()["error"]["code"] == "queue_full"
        assert first[0].status_code == 200
        assert metric(server, "visionserve_queue_rejected_total", model=COLOUR_MODEL) == 1


def test_batching_can_be_turned_off_for_one_model(colour_repository: Path, tmp_path: Path) -> None:
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(colour_repository),
        "VS_CLASSIFIER_MAX_QUEUE_DELAY_MS": "300",
        "VS_CLASSIFIER_MODEL_BATCHING": f'{{"{COLOUR_MODEL}": {{"enabled": false}}}}',
    }
    with running_server(CLASSIFIER, env, tmp_path) as server:
        responses = post_all(server, "/v1/classify", [solid_png(RED)] * 4)

        assert [r.status_code for r in responses] == [200] * 4
        assert metric(server, "visionserve_batch_size_count", model=COLOUR_MODEL) == 4
        assert metric(server, "visionserve_batch_size_sum", model=COLOUR_MODEL) == 4


def test_invalid_batching_settings_stop_start_up(colour_repository: Path, tmp_path: Path) -> None:
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(colour_repository),
        "VS_CLASSIFIER_MODEL_BATCHING": '{"colours": {"max_batch_size": 0}}',
    }
    with (
        pytest.raises(RuntimeError, match="VS_CLASSIFIER_MODEL_BATCHING"),
        running_server(CLASSIFIER, env, tmp_path),
    ):
        pass


def test_detector_batching_keeps_boxes(
    tmp_path: Path,
) -> None:
    repository = build_yolo_repository(tmp_path / "models", dynamic=True)
    env = {
        "VS_DETECTOR_MODEL_REPOSITORY": str(repository),
        "VS_DETECTOR_INTRA_OP_THREADS": "1",
        "VS_DETECTOR_MAX_QUEUE_DELAY_MS": "300",
    }
    photos = [Image.fromarray(photo) for photo in calibration_photos()]
    bodies = [
        encode(photo.resize((photo.width // (i + 1), photo.height)), "PNG")
        for i, photo in enumerate(photos)
    ]
    with running_server(DETECTOR, env, tmp_path) as server:
        alone = [post(server, "/v1/detect", body).json() for body in bodies]
        runs_before = metric(server, "visionserve_batch_size_count", model=YOLO_MODEL)

        together = [response.json() for response in post_all(server, "/v1/detect", bodies)]

        runs = metric(server, "visionserve_batch_size_count", model=YOLO_MODEL) - runs_before
    assert runs < len(bodies), "no two requests ran in the same batch"
    for single, batched in zip(alone, together, strict=True):
        assert batched["image"] == single["image"]
        assert [d["label"] for d in batched["detections"]] == [
            d["label"] for d in single["detections"]
        ]
        assert len(single["detections"]) > 0
        for first, second in zip(single["detections"], batched["detections"], strict=True):
            first_box, second_box = first["box"], second["box"]
            assert np.allclose(list(first_box.values()), list(second_box.values()), atol=1e-3)
