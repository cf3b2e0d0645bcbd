"""The detector as a real uvicorn process, serving the models of `tests.detection_models`."""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from services.common.metadata import DetectionSpec
from tests.detection_models import (
    COLOUR_DETECTOR,
    YOLO_INPUT_SIZE,
    YOLO_LABELS,
    YOLO_MODEL,
    build_colour_detector_repository,
    build_yolo_repository,
    calibration_photos,
    random_yolo_onnx,
)
from tests.images import (
    RED,
    encode,
    exif_rotated_jpeg,
    png_header_only,
    truncated_jpeg,
    truncated_png,
)
from tests.servers import Server, running_server

pytestmark = pytest.mark.slow

APP = "services.detector.app:create_app"
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_DET_LIMIT = 500
# Defaults in the random YOLO's model.json, different from the schema's, so
# that a test can tell which ones were used.
YOLO_DEFAULTS = DetectionSpec(conf_threshold=0.3, iou_threshold=0.5, max_det=40)
GREY = (114, 114, 114)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("detector-logs")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[Server]:
    repository = tmp_path_factory.mktemp("models")
    build_colour_detector_repository(repository)
    build_yolo_repository(repository, detection=YOLO_DEFAULTS)
    env = {
        "VS_DETECTOR_MODEL_REPOSITORY": str(repository),
        "VS_DETECTOR_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "VS_DETECTOR_MAX_DET_LIMIT": str(MAX_DET_LIMIT),
        "VS_DETECTOR_INTRA_OP_THREADS": "1",
    }
    with running_server(APP, env, log_dir) as running:
        yield running


def png_bytes(pixels: np.ndarray | Image.Image) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    return encode(image, "PNG")


def post(
    server: Server,
    body: bytes,
    content_type: str | None = "image/png",
    path: str = "/v1/detect",
    headers: dict[str, str] | None = None,
    **params: Any,
) -> httpx.Response:
    all_headers = {"Content-Type": content_type} if content_type else {}
    all_headers.update(headers or {})
    return httpx.post(
        f"{server.url}{path}", params=params, content=body, headers=all_headers, timeout=60.0
    )


def detect(server: Server, body: bytes, **params: Any) -> dict[str, Any]:
    response = post(server, body, **params)
    assert response.status_code == 200, response.text
    body_json: dict[str, Any] = response.json()
    return body_json


def assert_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert message in body["error"]["message"]


def box_iou(first: list[float], second: list[float]) -> float:
    width = max(0.0, min(first[2], second[2]) - max(first[0], second[0]))
    height = max(0.0, min(first[3], second[3]) - max(first[1], second[1]))
    intersection = width * height
    union = (
        (first[2] - first[0]) * (first[3] - first[1])
        + (second[2] - second[0]) * (second[3] - second[1])
        - intersection
    )
    return intersection / union if union > 0 else 0.0


def as_xyxy(detection: dict[str, Any]) -> list[float]:
    box = detection["box"]
    return [box["x1"], box["y1"], box["x2"], box["y2"]]


def red_square_image(
    size: tuple[int, int],
    square: tuple[int, int, int, int],
    background: tuple[int, int, int] = GREY,
) -> Image.Image:
    image = Image.new("RGB", size, background)
    image.paste(RED, square)
    return image


# Probes and model listing ------------------------------------------------------


def test_probes(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}


def test_models_lists_detectors(server: Server) -> None:
    body = httpx.get(f"{server.url}/v1/models").json()

    assert body["default_model"] is None
    by_name = {model["name"]: model for model in body["models"]}
    assert set(by_name) == {COLOUR_DETECTOR, YOLO_MODEL}
    assert by_name[YOLO_MODEL]["task"] == "detection"
    assert by_name[YOLO_MODEL]["input_shape"] == [3, YOLO_INPUT_SIZE, YOLO_INPUT_SIZE]
    assert by_name[YOLO_MODEL]["num_labels"] == len(YOLO_LABELS)


# Parity with ultralytics ------------------------------------------------------


def odd_sized_photos() -> list[np.ndarray]:
    photos = calibration_photos()
    # A crop with odd sides and an extreme aspect ratio, to exercise the padding.
    return [*photos, np.ascontiguousarray(photos[1][37:178, 5:506])]


@pytest.mark.parametrize("index", range(len(odd_sized_photos())))
def test_matches_ultralytics_predict(server: Server, index: int) -> None:
    from ultralytics import YOLO

    photo = odd_sized_photos()[index]
    conf, iou, max_det = 0.25, 0.45, 300
    reference = YOLO(str(random_yolo_onnx()), task="detect").predict(
        photo[:, :, ::-1], imgsz=YOLO_INPUT_SIZE, conf=conf, iou=iou, max_det=max_det,
        verbose=False,
    )[0].boxes  # fmt: skip

    body = detect(server, png_bytes(photo), model=YOLO_MODEL, conf=conf, iou=iou, max_det=max_det)
    served = body["detections"]

    assert body["image"] == {"width": photo.shape[1], "height": photo.shape[0]}
    assert len(served) == len(reference) > 0
    expected_boxes = reference.xyxy.numpy().tolist()
    expected_classes = reference.cls.numpy().astype(int).tolist()
    expected_scores = reference.conf.numpy().tolist()
    for detection, box, class_id, score in zip(
        served, expected_boxes, expected_classes, expected_scores, strict=True
    ):
        assert box_iou(as_xyxy(detection), box) >= 0.95
        assert detection["class_id"] == class_id
        assert detection["label"] == YOLO_LABELS[class_id]
        assert detection["score"] == pytest.approx(score, abs=1e-4)


# Boxes land on the objects ----------------------------------------------------


def test_boxes_cover_red_square(server: Server) -> None:
    # 160x120 scales by 0.4 to 64x48, 8 px below the top of the 64x64 input.
    # The red square then covers input pixels 16 to 40 on both axes, which
    # are three by three whole cells of 8 px.
    image = red_square_image((160, 120), (40, 20, 100, 80))

    body = detect(server, png_bytes(image), model=COLOUR_DETECTOR)

    boxes = np.array([as_xyxy(item) for item in body["detections"]])
    assert {item["label"] for item in body["detections"]} == {"red"}
    assert len(boxes) == 9
    assert boxes[:, 0].min() == pytest.approx(40.0)
    assert boxes[:, 2].max() == pytest.approx(100.0)
    assert boxes[:, 1].min() == pytest.approx(20.0)
    assert boxes[:, 3].max() == pytest.approx(80.0)


def test_exif_rotated_boxes_follow_the_view(server: Server) -> None:
    # The user sees a 120x200 portrait with the red square in its top-left corner.
    view = red_square_image((120, 200), (0, 0, 50, 50))
    data = exif_rotated_jpeg(view)
    assert Image.open(io.BytesIO(data)).size == (200, 120)

    rotated = detect(server, data, model=COLOUR_DETECTOR)
    upright = detect(server, encode(view, "JPEG", quality=95), model=COLOUR_DETECTOR)

    assert rotated["image"] == {"width": 120, "height": 200}
    assert rotated["detections"]
    for item in rotated["detections"]:
        _, _, x2, y2 = as_xyxy(item)
        assert item["label"] == "red"
        assert x2 <= 60
        assert y2 <= 60
    assert [as_xyxy(item) for item in rotated["detections"]] == [
        as_xyxy(item) for item in upright["detections"]
    ]


# Parameters -------------------------------------------------------------------


def test_defaults_come_from_model_json(server: Server) -> None:
    data = png_bytes(calibration_photos()[0])

    implicit = detect(server, data, model=YOLO_MODEL)
    explicit = detect(
        server,
        data,
        model=YOLO_MODEL,
        conf=YOLO_DEFAULTS.conf_threshold,
        iou=YOLO_DEFAULTS.iou_threshold,
        max_det=YOLO_DEFAULTS.max_det,
    )

    assert implicit["detections"] == explicit["detections"]
    assert min(item["score"] for item in implicit["detections"]) > YOLO_DEFAULTS.conf_threshold
    assert len(implicit["detections"]) <= YOLO_DEFAULTS.max_det


def test_classes_filter_forms_agree(server: Server) -> None:
    data = png_bytes(calibration_photos()[1])
    url = f"{server.url}/v1/detect"
    headers = {"Content-Type": "image/png"}

    comma = httpx.post(url, params={"model": YOLO_MODEL, "classes": "0,2"}, content=data,
                       headers=headers, timeout=60.0)  # fmt: skip
    repeated = httpx.post(url, params=[("model", YOLO_MODEL), ("classes", "2"), ("classes", "0")],
                          content=data, headers=headers, timeout=60.0)  # fmt: skip

    assert comma.status_code == 200, comma.text
    assert comma.json()["detections"] == repeated.json()["detections"]
    assert {item["class_id"] for item in comma.json()["detections"]} <= {0, 2}
    assert comma.json()["detections"]


def test_max_det_and_agnostic_nms(server: Server) -> None:
    data = png_bytes(calibration_photos()[0])

    capped = detect(server, data, model=YOLO_MODEL, conf=0.1, max_det=3)
    per_class = detect(server, data, model=YOLO_MODEL, conf=0.1, max_det=MAX_DET_LIMIT)
    agnostic = detect(
        server, data, model=YOLO_MODEL, conf=0.1, max_det=MAX_DET_LIMIT, agnostic_nms="true"
    )

    assert len(capped["detections"]) == 3
    assert capped["detections"] == per_class["detections"][:3]
    assert len(agnostic["detections"]) < len(per_class["detections"])


INVALID_PARAMETERS = [
    ({"conf": "-0.1"}, "'conf' must be between 0 and 1"),
    ({"conf": "1.5"}, "'conf' must be between 0 and 1"),
    ({"conf": "nan"}, "'conf' must be between 0 and 1"),
    ({"iou": "2"}, "'iou' must be between 0 and 1"),
    ({"max_det": "0"}, f"'max_det' must be between 1 and {MAX_DET_LIMIT}"),
    ({"max_det": str(MAX_DET_LIMIT + 1)}, f"'max_det' must be between 1 and {MAX_DET_LIMIT}"),
    ({"classes": "3"}, "'classes' must be class ids from 0 to 2"),
    ({"classes": "red"}, "got a value that is not a number"),
    ({"classes": "1,,2"}, "got an empty value"),
    ({"classes": "-1"}, "got a value that is not a number"),
    ({"agnostic_nms": "maybe"}, "agnostic_nms"),
    ({"max_det": "ten"}, "max_det"),
]


@pytest.mark.parametrize(("params", "message"), INVALID_PARAMETERS)
def test_invalid_parameters(server: Server, params: dict[str, str], message: str) -> None:
    response = post(server, png_bytes(red_square_image((32, 32), (0, 0, 8, 8))),
                    model=YOLO_MODEL, **params)  # fmt: skip

    assert_error(response, 422, "invalid_parameter", message)


def test_model_parameter_needed_and_checked(server: Server) -> None:
    data = png_bytes(red_square_image((32, 32), (0, 0, 8, 8)))

    assert_error(post(server, data), 422, "invalid_parameter", "'model' is required")
    assert_error(post(server, data, model="missing"), 404, "model_not_found", "'missing'")


# Bad input --------------------------------------------------------------------

TOO_BIG = b"\xff\xd8\xff" + bytes(MAX_BODY_BYTES)

# (case, body, content type, status, code, message)
BAD_INPUTS: list[tuple[str, bytes, str | None, int, str, str]] = [
    ("empty", b"", "image/png", 400, "empty_body", "the request body is empty"),
    ("truncated jpeg", truncated_jpeg(), "image/jpeg", 400, "corrupt_image", "truncated"),
    ("truncated png", truncated_png(), "image/png", 400, "corrupt_image", "truncated"),
    ("not an image", random.Random(5).randbytes(4096), "image/png", 415,
     "unsupported_media_type", "the data is not a supported image"),
    ("too many pixels", png_header_only(20_000, 20_000), "image/png", 413, "payload_too_large",
     "more than the limit of 50000000 pixels"),
    ("body too large", TOO_BIG, "image/jpeg", 413, "payload_too_large",
     f"larger than the limit of {MAX_BODY_BYTES} bytes"),
    ("wrong content type", b"{}", "application/json", 415, "unsupported_media_type",
     "content type 'application/json' is not accepted"),
    ("missing content type", b"abc", None, 415, "unsupported_media_type",
     "content type '(missing)' is not accepted"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "message"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
@pytest.mark.parametrize("path", ["/v1/detect", "/v1/detect/render"])
def test_bad_input(
    server: Server,
    path: str,
    body: bytes,
    content_type: str | None,
    status: int,
    code: str,
    message: str,
) -> None:
    response = post(server, body, content_type, path=path, model=COLOUR_DETECTOR)

    assert_error(response, status, code, message)


def test_still_ready_after_bad_input(server: Server) -> None:
    for _, body, content_type, *_ in BAD_INPUTS:
        post(server, body, content_type, model=COLOUR_DETECTOR)

    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert "Traceback" not in server.log()


def test_multipart_upload(server: Server) -> None:
    image = red_square_image((160, 120), (40, 20, 100, 80))
    files = {"file": ("square.png", png_bytes(image), "image/png")}

    response = httpx.post(
        f"{server.url}/v1/detect", params={"model": COLOUR_DETECTOR}, files=files, timeout=60.0
    )

    assert response.status_code == 200, response.text
    assert len(response.json()["detections"]) == 9


# Rendering --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "headers", "image_format"),
    [
        ({}, {}, "JPEG"),
        ({"format": "png"}, {}, "PNG"),
        ({"format": "JPEG"}, {"Accept": "image/png"}, "JPEG"),
        ({}, {"Accept": "image/png"}, "PNG"),
        ({}, {"Accept": "image/png;q=0.5, image/jpeg"}, "JPEG"),
        ({}, {"Accept": "image/*"}, "JPEG"),
    ],
)
def test_render_returns_image_of_original_size(
    server: Server, params: dict[str, str], headers: dict[str, str], image_format: str
) -> None:
    view = red_square_image((120, 200), (0, 0, 50, 50))

    response = post(server, exif_rotated_jpeg(view), "image/jpeg", path="/v1/detect/render",
                    headers=headers, model=COLOUR_DETECTOR, **params)  # fmt: skip

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"image/{image_format.lower()}"
    rendered = Image.open(io.BytesIO(response.content))
    rendered.load()
    assert rendered.format == image_format
    assert rendered.size == (120, 200)


def test_render_rejects_unknown_formats(server: Server) -> None:
    data = png_bytes(red_square_image((32, 32), (0, 0, 8, 8)))

    bad_format = post(server, data, path="/v1/detect/render", model=COLOUR_DETECTOR, format="gif")
    bad_accept = post(server, data, path="/v1/detect/render", model=COLOUR_DETECTOR,
                      headers={"Accept": "image/webp"})  # fmt: skip

    assert_error(bad_format, 422, "invalid_parameter", "'format' must be 'jpeg' or 'png'")
    assert_error(bad_accept, 406, "not_acceptable", "allows neither image/jpeg nor image/png")


# Metrics ----------------------------------------------------------------------


def test_stage_metrics_move(server: Server) -> None:
    def stage_count() -> float:
        text = httpx.get(f"{server.url}/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "visionserve_stage_duration_seconds_count" and sample.labels == {
                    "service": "detector",
                    "model": COLOUR_DETECTOR,
                    "stage": "postprocess",
                }:
                    return sample.value
        return 0.0

    before = stage_count()
    detect(server, png_bytes(red_square_image((32, 32), (0, 0, 8, 8))), model=COLOUR_DETECTOR)

    assert stage_count() == before + 1
    assert not math.isnan(before)
