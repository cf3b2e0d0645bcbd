"""Tests of the model repository against real ONNX files and onnxruntime sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.common.errors import ModelNotFound
from services.common.metadata import METADATA_FILENAME, MODEL_FILENAME
from services.common.repository import (
    ModelLoadError,
    ModelRepository,
    available_threads,
    scan_versions,
    session_options,
)
from tests.onnx_models import (
    COLOUR_LABELS,
    COLOUR_MODEL,
    build_colour_repository,
    colour_classifier,
    colour_metadata,
    write_model_version,
)


def load(root: Path, **options: object) -> ModelRepository:
    repository = ModelRepository(root, task="classification", **options)  # type: ignore[arg-type]
    repository.load()
    return repository


def test_serves_newest_version(tmp_path: Path) -> None:
    build_colour_repository(tmp_path, versions=(1, 2, 10))

    model = load(tmp_path).get(COLOUR_MODEL)

    assert model.version == 10
    assert model.available_versions == (1, 2, 10)
    assert model.input_shape == (3, 8, 8)


def test_pinned_version_is_served(tmp_path: Path) -> None:
    build_colour_repository(tmp_path, versions=(1, 2))

    model = load(tmp_path, pinned_versions={COLOUR_MODEL: 1}).get(COLOUR_MODEL)

    assert model.version == 1


def test_loaded_model_runs(tmp_path: Path) -> None:
    model = load(build_colour_repository(tmp_path)).get(COLOUR_MODEL)
    batch = np.full((1, 3, 8, 8), -1.0, dtype=np.float32)
    batch[0, 2] = 1.0

    logits = model.run(batch)

    assert logits.shape == (1, 3)
    assert COLOUR_LABELS[int(logits.argmax())] == "blue"


def test_unknown_model_lists_available_names(tmp_path: Path) -> None:
    repository = load(build_colour_repository(tmp_path))

    with pytest.raises(ModelNotFound) as caught:
        repository.get("resnet50")

    assert caught.value.status_code == 404
    assert caught.value.message == f"model 'resnet50' not found; available models: {COLOUR_MODEL}"


def test_unknown_model_name_is_not_echoed_when_invalid(tmp_path: Path) -> None:
    repository = load(build_colour_repository(tmp_path))

    with pytest.raises(ModelNotFound) as caught:
        repository.get("<script>")

    assert "<script>" not in caught.value.message


def test_detection_models_are_skipped(tmp_path: Path) -> None:
    build_colour_repository(tmp_path)
    write_model_version(tmp_path, colour_classifier(), colour_metadata("boxes", task="detection"))

    assert load(tmp_path).names == [COLOUR_MODEL]


def test_stray_folders_are_skipped(tmp_path: Path) -> None:
    build_colour_repository(tmp_path)
    (tmp_path / COLOUR_MODEL / "latest").mkdir()
    (tmp_path / COLOUR_MODEL / "01").mkdir()
    (tmp_path / "empty-model").mkdir()
    (tmp_path / ".cache").mkdir()
    (tmp_path / "README.md").write_text("models\n")

    assert scan_versions(tmp_path) == {COLOUR_MODEL: [1]}


def test_thread_counts_default_to_affinity() -> None:
    options = session_options()

    assert options.intra_op_num_threads == available_threads()
    assert options.inter_op_num_threads == available_threads()
    assert session_options(intra_op_threads=3).intra_op_num_threads == 3


# Load errors: each case builds a broken repository and names the expected message.


def missing_json(root: Path) -> None:
    (build_colour_repository(root) / COLOUR_MODEL / "1" / METADATA_FILENAME).unlink()


def invalid_json(root: Path) -> None:
    path = build_colour_repository(root) / COLOUR_MODEL / "1" / METADATA_FILENAME
    path.write_text("{not json")


def schema_violation(root: Path) -> None:
    path = build_colour_repository(root) / COLOUR_MODEL / "1" / METADATA_FILENAME
    document = json.loads(path.read_text())
    document["labels"] = []
    path.write_text(json.dumps(document))


def name_mismatch(root: Path) -> None:
    write_model_version(root, colour_classifier(), colour_metadata("other"), folder=COLOUR_MODEL)


def version_mismatch(root: Path) -> None:
    version_dir = write_model_version(root, colour_classifier(), colour_metadata(version=2))
    version_dir.rename(version_dir.parent / "3")


def missing_onnx(root: Path) -> None:
    (build_colour_repository(root) / COLOUR_MODEL / "1" / MODEL_FILENAME).unlink()


def corrupt_onnx(root: Path) -> None:
    (build_colour_repository(root) / COLOUR_MODEL / "1" / MODEL_FILENAME).write_bytes(b"junk")


def wrong_input_size(root: Path) -> None:
    write_model_version(root, colour_classifier(input_size=16), colour_metadata())


def wrong_input_name(root: Path) -> None:
    write_model_version(root, colour_classifier(input_name="pixels"), colour_metadata())


def fixed_batch_of_four(root: Path) -> None:
    write_model_version(root, colour_classifier(batch_dim=4), colour_metadata())


def wrong_output_name(root: Path) -> None:
    write_model_version(root, colour_classifier(output_name="scores"), colour_metadata())


def too_few_labels(root: Path) -> None:
    write_model_version(root, colour_classifier(num_classes=4), colour_metadata())


def letterbox_classifier(root: Path) -> None:
    metadata = colour_metadata()
    spec = metadata.preprocess.model_copy(update={"resize": "letterbox"})
    write_model_version(root, colour_classifier(), metadata.model_copy(update={"preprocess": spec}))


def missing_pinned_model(root: Path) -> None:
    build_colour_repository(root)


def no_models(root: Path) -> None:
    write_model_version(root, colour_classifier(), colour_metadata("boxes", task="detection"))


LOAD_ERRORS = [
    (missing_json, {}, "model.json is missing"),
    (invalid_json, {}, "model.json is invalid"),
    (schema_violation, {}, "model.json is invalid: labels: List should have at least 1"),
    (name_mismatch, {}, "names the model 'other', but its folder is 'colours'"),
    (version_mismatch, {}, "declares version 2, but its folder is 3"),
    (missing_onnx, {}, "model.onnx is missing"),
    (corrupt_onnx, {}, "onnxruntime cannot load"),
    (wrong_input_size, {}, "has H=16, but the preprocess spec in model.json gives H=8"),
    (wrong_input_name, {}, "no input named 'input'.*its inputs are: pixels"),
    (fixed_batch_of_four, {}, "batch dimension is fixed at 4"),
    (wrong_output_name, {}, "no output named 'logits'.*its outputs are: scores"),
    (too_few_labels, {}, r"shape \(1, 4\) for one image, expected \(1, 3\)"),
    (letterbox_classifier, {}, "preprocess.resize is 'letterbox', which is for detection"),
    (missing_pinned_model, {"pinned_versions": {"resnet": 1}}, "pinned model 'resnet' not found"),
    (missing_pinned_model, {"pinned_versions": {COLOUR_MODEL: 7}}, "available versions: 1"),
    (no_models, {}, "no classification models found"),
]


@pytest.mark.parametrize(
    ("build", "options", "message"),
    LOAD_ERRORS,
    ids=[f"{build.__name__}-{index}" for index, (build, _, _) in enumerate(LOAD_ERRORS)],
)
def test_load_error(tmp_path: Path, build, options: dict, message: str) -> None:
    build(tmp_path)
    repository = ModelRepository(tmp_path, task="classification", **options)

    with pytest.raises(ModelLoadError, match=message):
        repository.load()

    assert repository.names == []


def test_missing_repository_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is not a directory"):
        load(tmp_path / "nowhere")
