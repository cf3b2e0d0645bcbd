"""A fine-tuned EfficientNet-Lite0 exports unchanged and the classifier serves its own labels.

Fine-tunes on a small image folder with custom class names (partial strategy,
augmentation, warmup, EMA, bfloat16 autocast), exports through `training.classification.export`
and queries a real uvicorn classifier process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from services.common.imaging import decode_image
from services.common.metadata import read_metadata
from services.common.preprocess import draft_request, preprocess
from tests.servers import Server, running_server
from training.classification import export, train
from training.classification.checkpoint import load_checkpoint, model_from_checkpoint

pytestmark = pytest.mark.slow

APP = "services.classifier.app:create_app"
MODEL_NAME = "tiles-efficientnet"
# Class names a user would pick; the served labels must be exactly these folder names.
LABELS = ["crimson-tile", "teal-tile"]
TILE_COLOURS = {"crimson-tile": (200, 20, 60), "teal-tile": (0, 128, 128)}
IMAGES_PER_CLASS = 12
MAX_PIXELS = 50_000_000


def write_tiles(root: Path) -> list[Path]:
    """Write noisy solid-colour JPEGs of different sizes, one folder per label."""
    rng = np.random.default_rng(0)
    paths = []
    for label, colour in TILE_COLOURS.items():
        (root / label).mkdir(parents=True)
        for number in range(IMAGES_PER_CLASS):
            noise = rng.integers(-40, 40, size=(40 + number, 48, 3))
            pixels = np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)
            path = root / label / f"{number}.jpg"
            Image.fromarray(pixels).save(path, quality=90)
            paths.append(path)
    return paths


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    """Return (checkpoint, repository, image paths) of a two-epoch fine-tune and its export."""
    root = tmp_path_factory.mktemp("tiles")
    images = write_tiles(root)
    run_dir = tmp_path_factory.mktemp("run")
    argv = [
        "--dataset", "imagefolder", "--data-root", str(root),
        "--model", "efficientnet_lite0", "--image-size", "32",
        "--strategy", "partial", "--unfreeze-blocks", "1",
        "--crop-scale", "0.8", "--hflip", "0.5", "--color-jitter", "0.1",
        "--lr", "1e-3", "--lr-scheduler", "cosine", "--warmup-epochs", "1",
        "--ema-decay", "0.9", "--max-grad-norm", "1.0", "--amp",
        "--val-fraction", "0.25", "--test-fraction", "0.25",
        "--batch-size", "8", "--epochs", "2", "--threads", "1", "--no-progress",
        "--output-dir", str(run_dir),
    ]  # fmt: skip
    result = train.main(train.get_args_parser().parse_args(argv))
    repository = tmp_path_factory.mktemp("models")
    export_argv = [
        "--checkpoint", str(result.best_checkpoint), "--repository", str(repository),
        "--name", MODEL_NAME, "--threads", "1",
    ]  # fmt: skip
    export.main(export.get_args_parser().parse_args(export_argv))
    return result.best_checkpoint, repository, images


@pytest.fixture(scope="module")
def classifier(
    fine_tuned: tuple[Path, Path, list[Path]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    _, repository, _ = fine_tuned
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(repository),
        "VS_CLASSIFIER_INTRA_OP_THREADS": "1",
    }
    with running_server(APP, env, tmp_path_factory.mktemp("classifier-logs")) as server:
        yield server


def test_export_records_custom_labels(fine_tuned: tuple[Path, Path, list[Path]]) -> None:
    checkpoint, repository, _ = fine_tuned

    metadata = read_metadata(repository / MODEL_NAME / "1")

    assert metadata.labels == LABELS
    assert metadata.preprocess.height == 32
    stored_args = load_checkpoint(checkpoint)["args"]
    assert stored_args["strategy"] == "partial"
    assert stored_args["crop_scale"] == 0.8
    assert stored_args["ema_decay"] == 0.9


def test_classifier_serves_fine_tuned_labels(
    classifier: Server, fine_tuned: tuple[Path, Path, list[Path]]
) -> None:
    checkpoint, _, images = fine_tuned
    trained = model_from_checkpoint(load_checkpoint(checkpoint))

    for path in (images[0], images[-1]):
        data = path.read_bytes()
        response = httpx.post(
            f"{classifier.url}/v1/classify",
            params={"model": MODEL_NAME, "top_k": 2},
            files={"file": (path.name, data, "image/jpeg")},
            timeout=30.0,
        )

        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert sorted(prediction["label"] for prediction in predictions) == LABELS
        decoded = decode_image(
            data, max_pixels=MAX_PIXELS, draft_size=draft_request(trained.preprocess)
        )
        inputs = torch.from_numpy(preprocess(decoded.image, trained.preprocess))[None]
        with torch.inference_mode():
            probabilities = torch.softmax(trained.model(inputs), dim=1)[0]
        expected = LABELS[int(probabilities.argmax())]
        assert predictions[0]["label"] == expected, path.name
        assert predictions[0]["probability"] == pytest.approx(float(probabilities.max()), abs=1e-3)


def test_classifier_lists_fine_tuned_model(classifier: Server) -> None:
    response = httpx.get(f"{classifier.url}/v1/models", timeout=10.0)

    assert response.status_code == 200
    models = {model["name"]: model for model in response.json()["models"]}
    assert models[MODEL_NAME]["num_labels"] == len(LABELS)
    assert models[MODEL_NAME]["input_shape"] == [3, 32, 32]
