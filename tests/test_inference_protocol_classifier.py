"""The classifier's Open Inference Protocol routes, called with tritonclient and raw httpx.

A real uvicorn process serves the default models (`imagenet-efficientnet-lite0`,
`digits-cnn`) and the colour model in versions 1 and 2. Every result is
compared with what `/v1/classify` returns for the same image.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from scripts.demo import DIGITS_MODEL, IMAGENET_MODEL
from scripts.sample_images import SamplePhoto, imagenet_samples
from services.common.imaging import decode_image
from services.common.metadata import read_metadata
from services.common.preprocess import draft_request, preprocess
from tests.images import RED, solid_png, truncated_jpeg
from tests.inference_protocol_client import as_text, image_input, open_client, triton_error
from tests.onnx_models import COLOUR_MODEL, colour_classifier, colour_metadata, write_model_version
from tests.servers import Server, running_server

pytestmark = pytest.mark.slow

APP = "services.classifier.app:create_app"
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_BATCH_IMAGES = 4
MAX_TOP_K = 10
# Default of the classifier's max_pixels setting, used when preprocessing locally.
MAX_PIXELS = 50_000_000
PHOTOS = imagenet_samples()


@pytest.fixture(scope="module")
def server(default_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repository = tmp_path_factory.mktemp("models")
    shutil.copytree(default_repository, repository, dirs_exist_ok=True)
    for version in (1, 2):
        write_model_version(repository, colour_classifier(), colour_metadata(version=version))
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(repository),
        "VS_CLASSIFIER_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "VS_CLASSIFIER_MAX_BATCH_IMAGES": str(MAX_BATCH_IMAGES),
        "VS_CLASSIFIER_MAX_TOP_K": str(MAX_TOP_K),
        "VS_CLASSIFIER_INTRA_OP_THREADS": "1",
    }
    with running_server(APP, env, tmp_path_factory.mktemp("v2-classifier-logs")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    with open_client(server) as opened:
        yield opened


@pytest.fixture(scope="module")
def repository_root(server: Server) -> Path:
    return Path(server.env["VS_CLASSIFIER_MODEL_REPOSITORY"])


def v1_predictions(server: Server, image: bytes, model: str, top_k: int) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{server.url}/v1/classify",
        params={"model": model, "top_k": top_k},
        files={"file": ("image", image, "application/octet-stream")},
        timeout=60.0,
    )
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def local_tensor(repository: Path, model: str, image: bytes) -> np.ndarray:
    """Preprocess `image` as a client would from the model's model.json, shape (1, C, H, W)."""
    spec = read_metadata(repository / model / "1").preprocess
    decoded = decode_image(image, max_pixels=MAX_PIXELS, draft_size=draft_request(spec))
    return preprocess(decoded.image, spec)[np.newaxis]


def tensor_input(batch: np.ndarray, binary: bool) -> triton.InferInput:
    return triton.InferInput("input", list(batch.shape), "FP32").set_data_from_numpy(batch, binary)


def assert_matches_v1(probabilities: np.ndarray, predictions: list[dict[str, Any]]) -> None:
    for prediction in predictions:
        assert probabilities[prediction["class_id"]] == pytest.approx(
            prediction["probability"], abs=1e-6
        )
    top = np.argsort(-probabilities, kind="stable")[: len(predictions)]
    assert top.tolist() == [prediction["class_id"] for prediction in predictions]


def assert_protocol_error(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str)
    assert message in body["error"]


def post_infer(
    server: Server, body: bytes, headers: dict[str, str] | None = None, model: str = COLOUR_MODEL
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v2/models/{model}/infer", content=body, headers=headers or {}, timeout=60.0
    )


def test_server_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(IMAGENET_MODEL)
    assert not client.is_model_ready("no-such-model")

    metadata = client.get_server_metadata()

    assert metadata["name"] == "visionserve-classifier"
    assert set(metadata["extensions"]) == {"binary_tensor_data", "classification"}


def test_model_metadata(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata(IMAGENET_MODEL)

    assert metadata["name"] == IMAGENET_MODEL
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]},
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
    ]
    assert metadata["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 1000]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 1000]},
    ]


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda photo: photo.name.split()[0])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_image_input_matches_v1(
    client: triton.InferenceServerClient, server: Server, photo: SamplePhoto, binary: bool
) -> None:
    expected = v1_predictions(server, photo.jpeg, IMAGENET_MODEL, top_k=5)
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=binary),
        triton.InferRequestedOutput("logits", binary_data=binary, class_count=5),
    ]

    result = client.infer(IMAGENET_MODEL, [image_input([photo.jpeg], binary)], outputs=outputs)

    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (1, 1000)
    assert probabilities.dtype == np.float32
    assert_matches_v1(probabilities[0], expected)
    classes = as_text(result.as_numpy("logits")[0])
    assert [text.split(":", 2)[1:] for text in classes] == [
        [str(prediction["class_id"]), prediction["label"]] for prediction in expected
    ]


def test_classification_extension_labels(
    client: triton.InferenceServerClient, server: Server
) -> None:
    photo = PHOTOS[0]
    expected = v1_predictions(server, photo.jpeg, IMAGENET_MODEL, top_k=3)
    output = triton.InferRequestedOutput("probabilities", class_count=3)

    result = client.infer(IMAGENET_MODEL, [image_input([photo.jpeg])], outputs=[output])

    classes = result.as_numpy("probabilities")
    assert classes.shape == (1, 3)
    for text, prediction in zip(classes[0], expected, strict=True):
        value, class_id, label = text.decode().split(":", 2)
        assert float(value) == pytest.approx(prediction["probability"], abs=1e-6)
        assert int(class_id) == prediction["class_id"]
        assert label == prediction["label"]
    assert photo.check([prediction["label"] for prediction in expected])


def test_image_batch_matches_v1(client: triton.InferenceServerClient, server: Server) -> None:
    images = [photo.jpeg for photo in PHOTOS]

    result = client.infer(IMAGENET_MODEL, [image_input(images)])

    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (len(images), 1000)
    for row, image in zip(probabilities, images, strict=True):
        assert_matches_v1(row, v1_predictions(server, image, IMAGENET_MODEL, top_k=5))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tensor_input_matches_v1(
    client: triton.InferenceServerClient, server: Server, repository_root: Path, binary: bool
) -> None:
    photo = PHOTOS[2]
    batch = local_tensor(repository_root, IMAGENET_MODEL, photo.jpeg)
    expected = v1_predictions(server, photo.jpeg, IMAGENET_MODEL, top_k=5)

    result = client.infer(IMAGENET_MODEL, [tensor_input(batch, binary)])

    assert result.as_numpy("logits").shape == (1, 1000)
    assert_matches_v1(result.as_numpy("probabilities")[0], expected)


def test_grayscale_tensor_batch_matches_v1(
    client: triton.InferenceServerClient, server: Server, repository_root: Path
) -> None:
    digits = [solid_png((value, value, value), (16, 16)) for value in (0, 128, 255)]
    batch = np.concatenate([local_tensor(repository_root, DIGITS_MODEL, image) for image in digits])

    result = client.infer(DIGITS_MODEL, [tensor_input(batch, binary=False)])

    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (3, 10)
    for row, image in zip(probabilities, digits, strict=True):
        assert_matches_v1(row, v1_predictions(server, image, DIGITS_MODEL, top_k=10))


def test_live_version_route(client: triton.InferenceServerClient, server: Server) -> None:
    inputs = [image_input([solid_png(RED)])]

    result = client.infer(COLOUR_MODEL, inputs, model_version="2")

    assert result.get_response()["model_version"] == "2"
    assert client.is_model_ready(COLOUR_MODEL, "2")
    assert client.get_model_metadata(COLOUR_MODEL, "2")["versions"] == ["2"]
    labels = result.as_numpy("probabilities")[0]
    assert int(np.argmax(labels)) == 0  # red


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/versions/1", "version 1 of model colours is in the repository but not served"),
        ("/versions/1/ready", "the live version is 2"),
        ("/versions/7", "model colours has no such version; the live version is 2"),
        ("/versions/abc/ready", "no such version"),
    ],
    ids=["old-metadata", "old-ready", "unknown-metadata", "non-numeric-ready"],
)
def test_other_versions_not_found(server: Server, path: str, message: str) -> None:
    response = httpx.get(f"{server.url}/v2/models/{COLOUR_MODEL}{path}")

    assert_protocol_error(response, 404, message)


def test_old_version_infer_not_found(client: triton.InferenceServerClient) -> None:
    error = triton_error(
        lambda: client.infer(COLOUR_MODEL, [image_input([solid_png(RED)])], model_version="1")
    )

    assert error.status() == "404"
    assert "the live version is 2" in error.message()


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        (
            lambda: [
                triton.InferInput("input", [1, 3, 8, 8], "FP64").set_data_from_numpy(
                    np.zeros((1, 3, 8, 8))
                )
            ],
            None,
            "input 'input' must be FP32, got FP64",
        ),
        (
            lambda: [tensor_input(np.zeros((1, 3, 9, 8), np.float32), True)],
            None,
            "has shape [1, 3, 9, 8], but model colours takes [N, 3, 8, 8]",
        ),
        (
            lambda: [tensor_input(np.zeros((MAX_BATCH_IMAGES + 1, 3, 8, 8), np.float32), True)],
            None,
            f"more than the limit of {MAX_BATCH_IMAGES}",
        ),
        (
            lambda: [tensor_input(np.full((1, 3, 8, 8), np.nan, np.float32), True)],
            None,
            "contains NaN or infinite values",
        ),
        (
            lambda: [tensor_input(np.full((1, 3, 8, 8), 3e38, np.float32), True)],
            None,
            "returned NaN or infinite values for this input tensor",
        ),
        (
            lambda: [
                triton.InferInput("pixels", [1], "FP32").set_data_from_numpy(
                    np.zeros(1, np.float32)
                )
            ],
            None,
            "unknown input 'pixels'; model colours takes 'input' (FP32) or 'image' (BYTES)",
        ),
        (
            lambda: [
                image_input([solid_png(RED)]),
                tensor_input(np.zeros((1, 3, 8, 8), np.float32), True),
            ],
            None,
            "takes exactly one input",
        ),
        (
            lambda: [image_input([solid_png(RED)] * (MAX_BATCH_IMAGES + 1))],
            None,
            f"at most {MAX_BATCH_IMAGES} image(s) per request",
        ),
        (
            lambda: [image_input([solid_png(RED), truncated_jpeg()])],
            None,
            "element 1 of input 'image':",
        ),
        (
            lambda: [image_input([solid_png(RED), b""])],
            None,
            "element 1 of input 'image' is empty",
        ),
        (
            lambda: [image_input([solid_png(RED)])],
            lambda: [triton.InferRequestedOutput("boxes")],
            "unknown output 'boxes'; this request can return: logits, probabilities",
        ),
        (
            lambda: [image_input([solid_png(RED)])],
            lambda: [triton.InferRequestedOutput("probabilities", class_count=MAX_TOP_K)],
            "'classification' must be an integer from 1 to 3",
        ),
    ],
    ids=[
        "wrong-datatype",
        "wrong-shape",
        "tensor-batch-too-large",
        "nan",
        "overflowing-values",
        "unknown-input",
        "two-inputs",
        "too-many-images",
        "corrupt-image",
        "empty-image",
        "unknown-output",
        "classification-too-large",
    ],
)
def test_invalid_infer_rejected(
    client: triton.InferenceServerClient, inputs: Any, outputs: Any, message: str
) -> None:
    requested = outputs() if outputs else None

    error = triton_error(lambda: client.infer(COLOUR_MODEL, inputs(), outputs=requested))

    assert error.status() == "400", error.message()
    assert message in error.message()


def test_unknown_model_not_found(client: triton.InferenceServerClient) -> None:
    error = triton_error(lambda: client.infer("no-such-model", [image_input([solid_png(RED)])]))

    assert error.status() == "404"
    assert "model 'no-such-model' not found" in error.message()


def red_request(**extra: Any) -> dict[str, Any]:
    encoded = base64.b64encode(solid_png(RED)).decode()
    return {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [encoded]}],
        **extra,
    }


def test_raw_json_request(server: Server) -> None:
    response = post_infer(
        server,
        json.dumps(red_request(id="abc-1", outputs=[{"name": "probabilities"}])).encode(),
        {"Content-Type": "application/json"},
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"] == "abc-1"
    assert body["model_name"] == COLOUR_MODEL
    (output,) = body["outputs"]
    assert output["shape"] == [1, 3]
    assert output["data"][0] > 0.99


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"", {}, 400, "the request body is empty"),
        (b'{"inputs": [', {}, 400, "not a valid JSON object"),
        (b'{"inputs": []}', {}, 400, "invalid inference request: inputs"),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 3, 8, 8],
                            "datatype": "FP32",
                            "data": [0.5] * 10,
                        }
                    ]
                }
            ).encode(),
            {},
            400,
            "has 10 elements, but its shape [1, 3, 8, 8] needs 192",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 3, 8, 8],
                            "datatype": "FP32",
                            "parameters": {"binary_data_size": 768},
                        }
                    ]
                }
            ).encode(),
            {},
            400,
            "declares 768 bytes of binary data, but only 0 bytes follow",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "image",
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": ["not base64!"],
                        }
                    ]
                }
            ).encode(),
            {},
            400,
            "element 0 of input 'image' is not valid base64",
        ),
        (
            json.dumps(red_request(parameters={"priority": 1})).encode(),
            {},
            400,
            "unsupported request parameters: priority",
        ),
        (
            json.dumps(red_request()).encode(),
            {"Inference-Header-Content-Length": "x"},
            400,
            "Inference-Header-Content-Length",
        ),
        (
            json.dumps(red_request()).encode(),
            {"Content-Encoding": "gzip"},
            415,
            "compressed request bodies",
        ),
        (b" " * (MAX_BODY_BYTES + 1), {}, 413, f"limit of {MAX_BODY_BYTES} bytes"),
    ],
    ids=[
        "empty",
        "truncated-json",
        "no-inputs",
        "count-mismatch",
        "missing-binary-data",
        "invalid-base64",
        "unknown-parameter",
        "bad-header-length",
        "compressed",
        "too-large",
    ],
)
def test_malformed_body_rejected(
    server: Server, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    assert_protocol_error(post_infer(server, body, headers), status, message)


def test_unknown_v2_route_uses_protocol_error(server: Server) -> None:
    assert_protocol_error(httpx.get(f"{server.url}/v2/nothing/here"), 404, "Not Found")
    assert_protocol_error(
        httpx.get(f"{server.url}/v2/models/{COLOUR_MODEL}/infer"), 405, "Method Not Allowed"
    )


def test_v1_errors_keep_their_shape(server: Server) -> None:
    response = httpx.post(
        f"{server.url}/v1/classify",
        params={"model": COLOUR_MODEL},
        content=b"",
        headers={"Content-Type": "image/png"},
    )

    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "empty_body"
    assert "request_id" in body


def test_not_ready_service_returns_503(tmp_path: Path) -> None:
    # An empty repository fails to load, so the service stays up but never ready.
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()

    with running_server(APP, env, tmp_path, ready_path="/healthz") as failing:
        live = httpx.get(f"{failing.url}/v2/health/live")
        ready = httpx.get(f"{failing.url}/v2/health/ready")
        model_ready = httpx.get(f"{failing.url}/v2/models/{COLOUR_MODEL}/ready")
        metadata = httpx.get(f"{failing.url}/v2/models/{COLOUR_MODEL}")
        infer = post_infer(failing, json.dumps(red_request()).encode())

    assert live.status_code == 200
    for response in (ready, model_ready, metadata, infer):
        assert_protocol_error(response, 503, "models")
