"""ONNX export into a model repository: contents, parity, clean-up on failure, pretrained model."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from services.common.imaging import decode_image
from services.common.metadata import MODEL_FILENAME, read_metadata
from services.common.model_checks import check_output_shape, check_signature
from services.common.preprocess import draft_request, preprocess
from services.common.reference_profile import read_reference
from tests.reference_checks import (
    check_classifications,
    check_input_features,
    model_service_env,
    post_each,
)
from tests.servers import running_server
from training.classification import export, onnx_export, train
from training.classification.checkpoint import load_checkpoint, model_from_checkpoint
from training.classification.cli import run
from training.classification.efficientnet import (
    efficientnet_lite0_imagenet,
    map_lukemelas_to_timm,
    packaged_weights_path,
)
from training.classification.errors import InvalidArgumentsError, ParityError, TrainingError
from training.classification.evaluation import checkpoint_splits
from training.classification.report import REPORT_FILES
from training.classification.repository import SAMPLES_DIRNAME, SAMPLES_INDEX, next_version

MAX_PIXELS = 50_000_000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return best.pt of a one-epoch CNN run on 400 digits (8x8 input)."""
    run_dir = tmp_path_factory.mktemp("run")
    argv = [
        "--dataset", "digits", "--model", "cnn", "--image-size", "8",
        "--max-samples", "400", "--epochs", "1", "--threads", "1", "--no-progress",
        "--output-dir", str(run_dir),
    ]  # fmt: skip
    return train.main(train.get_args_parser().parse_args(argv)).best_checkpoint


def export_args(checkpoint: Path, repository: Path, *extra: str) -> list[str]:
    return [
        "--checkpoint", str(checkpoint), "--repository", str(repository),
        "--threads", "1", *extra,
    ]  # fmt: skip


def run_export(checkpoint: Path, repository: Path, *extra: str) -> export.ExportResult:
    argv = export_args(checkpoint, repository, *extra)
    return export.main(export.get_args_parser().parse_args(argv))


def model_entries(repository: Path, name: str) -> list[str]:
    folder = repository / name
    return sorted(entry.name for entry in folder.iterdir()) if folder.exists() else []


def test_export_writes_version_folder(checkpoint: Path, tmp_path: Path) -> None:
    result = run_export(checkpoint, tmp_path, "--samples", "12")

    version_dir = tmp_path / "digits-cnn" / "1"
    assert result.version_dir == version_dir
    for name in (MODEL_FILENAME, "model.json", *REPORT_FILES):
        assert (version_dir / name).is_file(), name
    metadata = read_metadata(version_dir)
    assert metadata.name == "digits-cnn"
    assert metadata.version == 1
    assert metadata.task == "classification"
    assert metadata.labels == [str(digit) for digit in range(10)]
    assert metadata.preprocess.height == 8
    assert metadata.preprocess.color_mode == "L"
    assert metadata.training_data_fingerprint is not None
    assert metadata.training_data_fingerprint.startswith("sha256:")
    assert metadata.exported_at is not None
    assert datetime.fromisoformat(metadata.exported_at).utcoffset() is not None
    assert {"torch", "onnx", "onnxruntime", "timm", "opset"} <= set(metadata.exporter)
    assert int(metadata.exporter["opset"]) >= 17
    metrics = metadata.metrics
    assert {"test_accuracy", "test_macro_f1", "test_macro_roc_auc"} <= set(metrics)
    assert metrics["test_samples"] == 60
    assert metrics["parity_num_samples"] == 60
    assert metrics["parity_top1_agreement"] == 1.0
    assert metrics["parity_max_abs_diff"] <= metrics["parity_atol"]
    assert not [entry for entry in model_entries(tmp_path, "digits-cnn") if entry.startswith(".")]


def test_exported_graph_fits_service_contract(checkpoint: Path, tmp_path: Path) -> None:
    result = run_export(checkpoint, tmp_path)
    model_path = result.version_dir / MODEL_FILENAME

    onnx.checker.check_model(str(model_path))
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    assert check_signature(session, result.metadata) is None
    for batch_size in (1, 3, 7):
        inputs = np.zeros((batch_size, 1, 8, 8), dtype=np.float32)
        (logits,) = session.run(["logits"], {"input": inputs})
        assert logits.shape == (batch_size, 10)
        if batch_size == 1:
            assert check_output_shape(logits.shape, result.metadata) is None


def test_next_version_follows_newest(tmp_path: Path) -> None:
    assert next_version(tmp_path, "digits-cnn") == 1
    for name in ("1", "2", "7", ".staging-8-abc", "notes"):
        (tmp_path / "digits-cnn" / name).mkdir(parents=True)

    assert next_version(tmp_path, "digits-cnn") == 8


def test_export_uses_pinned_version(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "digits-cnn" / "3").mkdir(parents=True)

    pinned = run_export(checkpoint, tmp_path, "--version", "2")

    assert pinned.metadata.version == 2
    assert model_entries(tmp_path, "digits-cnn") == ["2", "3"]


def test_export_rejects_existing_version(checkpoint: Path, tmp_path: Path) -> None:
    run_export(checkpoint, tmp_path, "--version", "1")

    with pytest.raises(InvalidArgumentsError, match="already exists"):
        run_export(checkpoint, tmp_path, "--version", "1")


def test_samples_predict_same_through_service_functions(checkpoint: Path, tmp_path: Path) -> None:
    # Each sample PNG, decoded and preprocessed as the classifier service does
    # and run by ONNX Runtime, must get the prediction that export recorded.
    result = run_export(checkpoint, tmp_path, "--samples", "1000")
    samples_dir = result.version_dir / SAMPLES_DIRNAME
    spec = result.metadata.preprocess
    session = onnxruntime.InferenceSession(
        str(result.version_dir / MODEL_FILENAME), providers=["CPUExecutionProvider"]
    )
    with (samples_dir / SAMPLES_INDEX).open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))

    assert len(rows) == 60
    correct = 0
    for row in rows:
        data = (samples_dir / row["file"]).read_bytes()
        decoded = decode_image(data, max_pixels=MAX_PIXELS, draft_size=draft_request(spec))
        (logits,) = session.run(["logits"], {"input": preprocess(decoded.image, spec)[None]})
        predicted = result.metadata.labels[int(logits.argmax())]
        assert predicted == row["predicted_label"], row["file"]
        correct += predicted == row["label"]
    assert correct / len(rows) == pytest.approx(result.metadata.metrics["test_accuracy"])


def test_parity_failure_leaves_no_version(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run_onnx = onnx_export.run_onnx

    def perturbed(session: onnxruntime.InferenceSession, inputs: np.ndarray) -> np.ndarray:
        logits = real_run_onnx(session, inputs)
        logits[:, 0] += 0.01
        return logits

    monkeypatch.setattr(onnx_export, "run_onnx", perturbed)

    with pytest.raises(ParityError, match=r"max abs logit difference 0\.01"):
        run_export(checkpoint, tmp_path, "--samples", "5")

    assert model_entries(tmp_path, "digits-cnn") == []


def test_parity_top1_mismatch_fails_within_tolerance(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Swapping the two top logits keeps each difference small but flips top-1.
    real_run_onnx = onnx_export.run_onnx

    def swapped(session: onnxruntime.InferenceSession, inputs: np.ndarray) -> np.ndarray:
        logits = real_run_onnx(session, inputs)
        order = np.argsort(logits, axis=1)
        rows = np.arange(len(logits))
        top, second = order[:, -1], order[:, -2]
        logits[rows, top], logits[rows, second] = logits[rows, second], logits[rows, top]
        return logits

    monkeypatch.setattr(onnx_export, "run_onnx", swapped)

    with pytest.raises(ParityError, match=r"top-1 agreement 0\.00%"):
        run_export(checkpoint, tmp_path, "--parity-atol", "1000")

    assert model_entries(tmp_path, "digits-cnn") == []


def test_export_cli_exits_nonzero_on_parity_failure(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_export(model: torch.nn.Module, spec: object, path: Path, *, opset: int) -> None:
        # A graph that ignores its input: valid ONNX, wrong logits.
        constant = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        real_export(constant, spec, path, opset=opset)  # type: ignore[arg-type]

    real_export = onnx_export.export_onnx
    monkeypatch.setattr(export, "export_onnx", broken_export)

    with pytest.raises(SystemExit) as exited:
        run(export.get_args_parser(), export.main, export_args(checkpoint, tmp_path))

    assert exited.value.code == 1
    assert model_entries(tmp_path, "digits-cnn") == []


def test_export_rejects_changed_data(checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    state["args"]["seed"] = 5
    changed = tmp_path / "changed.pt"
    torch.save(state, changed)

    with pytest.raises(TrainingError, match="differs from the data the checkpoint was trained on"):
        run_export(changed, tmp_path / "models")

    assert not (tmp_path / "models").exists()


def test_efficientnet_mapping_matches_all_keys() -> None:
    model = efficientnet_lite0_imagenet()
    source = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    mapped = map_lukemelas_to_timm(source, model.state_dict())
    expected_keys = {key for key in model.state_dict() if not key.endswith("num_batches_tracked")}

    assert set(mapped) == expected_keys
    assert len(mapped) == 247
    assert torch.equal(model.state_dict()["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(model.state_dict()["classifier.bias"], source["_fc.bias"])


def test_efficientnet_mapping_rejects_shape_mismatch() -> None:
    model = efficientnet_lite0_imagenet()
    source = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    source["_fc.weight"] = torch.zeros(10, 1280)

    with pytest.raises(TrainingError, match=r"_fc.weight has shape \(10, 1280\)"):
        map_lukemelas_to_timm(source, model.state_dict())


@pytest.mark.slow
def test_pretrained_export_passes_parity(tmp_path: Path) -> None:
    from training.classification.pretrained import (
        MODEL_NAME,
        SKIMAGE_PHOTOS,
        build_imagenet_efficientnet,
    )

    torch.set_num_threads(2)
    result = build_imagenet_efficientnet(tmp_path)

    metadata = read_metadata(result.version_dir)
    assert metadata.name == MODEL_NAME
    assert len(metadata.labels) == 1000
    assert metadata.preprocess.height == 224
    assert metadata.preprocess.mean == (0.5, 0.5, 0.5)
    assert metadata.metrics["parity_top1_agreement"] == 1.0
    assert metadata.metrics["parity_max_abs_diff"] <= metadata.metrics["parity_atol"]
    assert metadata.metrics["photo_top1"]["coffee.png"] == "espresso"
    assert metadata.metrics["photo_top1"]["chelsea.png"] in {"tiger cat", "Egyptian cat", "tabby"}
    assert (result.version_dir / SAMPLES_DIRNAME / "chelsea.png").is_file()
    # reference.json profiles the shipped photos, whose top-1 labels the parity check recorded.
    profile = read_reference(result.version_dir)
    shipped_top1 = [metadata.metrics["photo_top1"][name] for name in SKIMAGE_PHOTOS]
    assert profile.image_count == len(SKIMAGE_PHOTOS)
    assert "scikit-image" in profile.source
    assert profile.label_frequencies == pytest.approx(
        {label: shipped_top1.count(label) / len(shipped_top1) for label in set(shipped_top1)}
    )
    assert all(0.0 < value <= 1.0 for value in profile.features["confidence"])


@pytest.mark.slow
def test_export_reference_matches_service(checkpoint: Path, tmp_path: Path) -> None:
    # reference.json profiles the validation split. The classifier, serving the
    # exported version, must return the same top-1 probability for each image.
    result = run_export(checkpoint, tmp_path / "models")
    profile = read_reference(result.version_dir)
    trained = model_from_checkpoint(load_checkpoint(checkpoint))
    validation = checkpoint_splits(trained).val
    files = list(export.validation_images(validation, "digits").files)
    spec = result.metadata.preprocess
    decoded = [
        decode_image(data, max_pixels=MAX_PIXELS, draft_size=draft_request(spec)) for data in files
    ]
    env = model_service_env("classifier", tmp_path / "models")
    with running_server("services.classifier.app:create_app", env, tmp_path) as server:
        bodies = post_each(server.url, "/v1/classify", files)

    assert profile.model == "digits-cnn"
    assert profile.version == 1
    assert profile.task == "classification"
    assert profile.source.startswith("validation split of digits")
    assert profile.image_count == len(validation.indices)
    check_input_features(profile, decoded)
    check_classifications(profile, bodies)
