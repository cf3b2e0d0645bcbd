"""The detector's Open Inference Protocol routes, called with tritonclient and raw httpx.

A real uvicorn process serves the colour detector and the random YOLOv8n of
`tests.detection_models`. Detections are compared with `/v1/detect` on the
same photos.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image

from services.common.letterbox import letterbox_tensor
from services.common.metadata import DetectionSpec
from services.detector.postprocess import postprocess
from tests.detection_models import (
    COLOUR_DETECTOR,
    YOLO_INPUT_SIZE,
    YOLO_LABELS,
    YOLO_MODEL,
    build_colour_detector_repository,
    build_yolo_repository,
    calibration_photos,
    letterbox_spec,
)
from tests.images import RED, encode, solid_png
from tests.inference_protocol_client import as_text, image_input, open_client, triton_error
from tests.servers import Server, running_server

pytestmark = pytest.mark.slow

APP = "services.detector.app:create_app"
# JSON text of one 3 x 320 x 320 float tensor is about 6 MiB.
MAX_BODY_BYTES = 12 * 1024 * 1024
MAX_DET_LIMIT = 500
YOLO_DEFAULTS = DetectionSpec(conf_threshold=0.3, iou_threshold=0.5, max_det=40)
# Anchors of a YOLOv8 head at strides 8, 16 and 32 on a 320 x 320 input.
YOLO_ANCHORS = 40 * 40 + 20 * 20 + 10 * 10
DETECTION_OUTPUTS = ["boxes", "scores", "class_ids", "labels"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repository = tmp_path_factory.mktemp("models")
    build_colour_detector_repository(repository)
    build_yolo_repository(repository, detection=YOLO_DEFAULTS)
    env = {
        "VS_DETECTOR_MODEL_REPOSITORY": str(repository),
        "VS_DETECTOR_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "VS_DETECTOR_MAX_DET_LIMIT": str(MAX_DET_LIMIT),
        "VS_DETECTOR_INTRA_OP_THREADS": "1",
    }
    with running_server(APP, env, tmp_path_factory.mktemp("v2-detector-logs")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    with open_client(server) as opened:
        yield opened


def photo_png(index: int) -> bytes:
    return encode(Image.fromarray(calibration_photos()[index]), "PNG")


def v1_detections(server: Server, image: bytes, **params: Any) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{server.url}/v1/detect",
        params={"model": YOLO_MODEL, **params},
        content=image,
        headers={"Content-Type": "image/png"},
        timeout=60.0,
    )
    assert response.status_code == 200, response.text
    detections: list[dict[str, Any]] = response.json()["detections"]
    return detections


def assert_same_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    labels: list[str],
    expected: list[dict[str, Any]],
) -> None:
    assert len(expected) > 0
    assert boxes.shape == (len(expected), 4)
    for index, detection in enumerate(expected):
        box = detection["box"]
        expected_box = [box["x1"], box["y1"], box["x2"], box["y2"]]
        np.testing.assert_allclose(boxes[index], expected_box, atol=1e-3)
        assert scores[index] == pytest.approx(detection["score"], abs=1e-6)
        assert class_ids[index] == detection["class_id"]
        assert labels[index] == detection["label"]


def test_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(YOLO_MODEL, "1")

    metadata = client.get_server_metadata()

    assert metadata["name"] == "visionserve-detector"
    assert metadata["extensions"] == ["binary_tensor_data"]


def test_model_metadata(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata(YOLO_MODEL)

    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [
        {"name": "images", "datatype": "FP32", "shape": [-1, 3, YOLO_INPUT_SIZE, YOLO_INPUT_SIZE]},
        {"name": "image", "datatype": "BYTES", "shape": [1]},
    ]
    assert metadata["outputs"] == [
        {"name": "output0", "datatype": "FP32", "shape": [-1, 4 + len(YOLO_LABELS), YOLO_ANCHORS]},
        {"name": "boxes", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "scores", "datatype": "FP32", "shape": [-1]},
        {"name": "class_ids", "datatype": "INT64", "shape": [-1]},
        {"name": "labels", "datatype": "BYTES", "shape": [-1]},
    ]


@pytest.mark.parametrize("index", range(len(calibration_photos())))
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_image_input_matches_v1(
    client: triton.InferenceServerClient, server: Server, index: int, binary: bool
) -> None:
    image = photo_png(index)
    expected = v1_detections(server, image)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in DETECTION_OUTPUTS]

    result = client.infer(YOLO_MODEL, [image_input([image], binary)], outputs=outputs)

    assert result.as_numpy("boxes").dtype == np.float32
    assert result.as_numpy("class_ids").dtype == np.int64
    assert len(expected) <= YOLO_DEFAULTS.max_det
    assert_same_detections(
        result.as_numpy("boxes"),
        result.as_numpy("scores"),
        result.as_numpy("class_ids"),
        as_text(result.as_numpy("labels")),
        expected,
    )


def test_request_parameters_match_v1_query(
    client: triton.InferenceServerClient, server: Server
) -> None:
    image = photo_png(1)
    parameters = {"conf": 0.2, "iou": 0.6, "max_det": 7}
    expected = v1_detections(server, image, **parameters)

    result = client.infer(YOLO_MODEL, [image_input([image])], parameters=parameters)

    assert len(expected) == 7
    assert_same_detections(
        result.as_numpy("boxes"),
        result.as_numpy("scores"),
        result.as_numpy("class_ids"),
        as_text(result.as_numpy("labels")),
        expected,
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tensor_input_returns_raw_output(
    client: triton.InferenceServerClient, server: Server, binary: bool
) -> None:
    photo = calibration_photos()[2]
    image = encode(Image.fromarray(photo), "PNG")
    tensor, transform = letterbox_tensor(Image.fromarray(photo), letterbox_spec(YOLO_INPUT_SIZE))
    batch = tensor[np.newaxis]
    inputs = [
        triton.InferInput("images", list(batch.shape), "FP32").set_data_from_numpy(batch, binary)
    ]
    outputs = [triton.InferRequestedOutput("output0", binary_data=binary)]

    result = client.infer(YOLO_MODEL, inputs, outputs=outputs)

    raw = result.as_numpy("output0")
    assert raw.shape == (1, 4 + len(YOLO_LABELS), YOLO_ANCHORS)
    found = postprocess(
        raw[0],
        conf_threshold=YOLO_DEFAULTS.conf_threshold,
        iou_threshold=YOLO_DEFAULTS.iou_threshold,
        max_det=YOLO_DEFAULTS.max_det,
    )
    labels = [YOLO_LABELS[class_id] for class_id in found.class_ids]
    assert_same_detections(
        transform.to_original(found.boxes),
        found.scores,
        found.class_ids,
        labels,
        v1_detections(server, image),
    )


def test_tensor_batch_runs_each_image(client: triton.InferenceServerClient) -> None:
    batch = np.zeros((2, 3, 64, 64), dtype=np.float32)
    batch[1, 0] = 1.0  # the second image is all red

    result = client.infer(
        COLOUR_DETECTOR,
        [triton.InferInput("images", [2, 3, 64, 64], "FP32").set_data_from_numpy(batch)],
    )

    raw = result.as_numpy("output0")
    assert raw.shape == (2, 7, 64)
    assert np.all(raw[0, 4:] < 0.01)
    assert np.all(raw[1, 4] > 0.99)


def test_no_detections_gives_empty_outputs(client: triton.InferenceServerClient) -> None:
    grey = encode(Image.new("RGB", (40, 30), (114, 114, 114)), "PNG")

    result = client.infer(COLOUR_DETECTOR, [image_input([grey])])

    assert result.as_numpy("boxes").shape == (0, 4)
    assert result.as_numpy("scores").shape == (0,)
    assert result.as_numpy("labels").shape == (0,)


def test_red_square_labelled(client: triton.InferenceServerClient) -> None:
    result = client.infer(COLOUR_DETECTOR, [image_input([solid_png(RED, (64, 64))])])

    assert set(as_text(result.as_numpy("labels"))) == {"red"}
    assert len(result.as_numpy("boxes")) == 64


@pytest.mark.parametrize(
    ("inputs", "parameters", "outputs", "message"),
    [
        (
            lambda: [image_input([solid_png(RED)] * 2)],
            None,
            None,
            "at most 1 image(s) per request",
        ),
        (
            lambda: [image_input([solid_png(RED)])],
            {"conf": 1.5},
            None,
            "request parameter 'conf' must be between 0 and 1",
        ),
        (
            lambda: [image_input([solid_png(RED)])],
            {"iou": -0.1},
            None,
            "request parameter 'iou' must be between 0 and 1",
        ),
        (
            lambda: [image_input([solid_png(RED)])],
            {"conf": "high"},
            None,
            "request parameter 'conf' must be a number",
        ),
        (
            lambda: [image_input([solid_png(RED)])],
            {"max_det": MAX_DET_LIMIT + 1},
            None,
            f"request parameter 'max_det' must be between 1 and {MAX_DET_LIMIT}",
        ),
        (
            lambda: [image_input([solid_png(RED)])],
            {"max_det": 2.5},
            None,
            "'max_det' must be an integer",
        ),
        (
            lambda: [image_input([solid_png(RED)])],
            {"classes": "1"},
            None,
            "unsupported request parameters: classes",
        ),
        (
            lambda: [
                triton.InferInput("images", [1, 3, 64, 64], "FP32").set_data_from_numpy(
                    np.zeros((1, 3, 64, 64), np.float32)
                )
            ],
            {"conf": 0.5},
            None,
            "apply to the 'image' input only",
        ),
        (
            lambda: [image_input([solid_png(RED)])],
            None,
            lambda: [triton.InferRequestedOutput("output0")],
            "unknown output 'output0'; this request can return: boxes, scores, class_ids, labels",
        ),
        (
            lambda: [image_input([solid_png(RED)])],
            None,
            lambda: [triton.InferRequestedOutput("scores", class_count=1)],
            "does not support the classification extension",
        ),
        (
            lambda: [
                triton.InferInput("images", [1, 3, 32, 32], "FP32").set_data_from_numpy(
                    np.zeros((1, 3, 32, 32), np.float32)
                )
            ],
            None,
            None,
            "but model colour-boxes takes [N, 3, 64, 64]",
        ),
    ],
    ids=[
        "two-images",
        "conf-range",
        "iou-range",
        "conf-type",
        "max-det-range",
        "max-det-type",
        "unknown-parameter",
        "parameters-with-tensor",
        "raw-output-for-image",
        "classification",
        "wrong-shape",
    ],
)
def test_invalid_infer_rejected(
    client: triton.InferenceServerClient, inputs: Any, parameters: Any, outputs: Any, message: str
) -> None:
    requested = outputs() if outputs else None

    error = triton_error(
        lambda: client.infer(COLOUR_DETECTOR, inputs(), outputs=requested, parameters=parameters)
    )

    assert error.status() == "400", error.message()
    assert message in error.message()


def test_oversized_image_rejected(client: triton.InferenceServerClient) -> None:
    error = triton_error(
        lambda: client.infer(
            COLOUR_DETECTOR, [image_input([np.random.default_rng(0).bytes(MAX_BODY_BYTES)])]
        )
    )

    assert error.status() == "413"
    assert f"limit of {MAX_BODY_BYTES} bytes" in error.message()


def test_not_an_image_rejected(server: Server) -> None:
    body = {
        "inputs": [
            {
                "name": "image",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(b"plain text, not an image").decode()],
            }
        ]
    }

    response = httpx.post(
        f"{server.url}/v2/models/{COLOUR_DETECTOR}/infer", content=json.dumps(body)
    )

    assert response.status_code == 415, response.text
    assert set(response.json()) == {"error"}
    assert "element 0 of input 'image'" in response.json()["error"]
