"""Training on tiny digits subsets: run files, resume, argument checks, data splits and report."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from services.common.imaging import decode_image
from services.common.preprocess import draft_request, preprocess
from training.classification import train
from training.classification.checkpoint import load_checkpoint
from training.classification.data import (
    DataOptions,
    build_dataset,
    digits_test_split,
    split_data,
)
from training.classification.errors import DataNotFoundError, InvalidArgumentsError
from training.classification.models import build_model
from training.classification.optim import EarlyStopping
from training.classification.preprocessing import build_preprocess_spec
from training.classification.report import REPORT_FILES, compute_report, write_report
from training.classification.sources import load_faces_source

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A stratified subset small enough that one epoch of the MLP takes well under a second.
TINY_RUN = (
    "--dataset", "digits",
    "--model", "mlp",
    "--image-size", "8",
    "--max-samples", "300",
    "--batch-size", "32",
    "--threads", "1",
    "--no-progress",
)  # fmt: skip


def train_args(output_dir: Path, *extra: str) -> argparse.Namespace:
    return train.get_args_parser().parse_args([*TINY_RUN, "--output-dir", str(output_dir), *extra])


def read_log(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / train.LOG_FILENAME).open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_one_epoch_writes_run_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train.main(train_args(run_dir, "--epochs", "1"))

    rows = read_log(run_dir)
    assert len(rows) == 1
    assert tuple(rows[0]) == train.LOG_COLUMNS
    assert rows[0]["epoch"] == "1"
    assert float(rows[0]["seconds"]) > 0.0
    assert 0.0 <= float(rows[0]["val_acc"]) <= 1.0

    saved_args = json.loads((run_dir / "args.json").read_text())
    assert saved_args["model"] == "mlp"
    assert saved_args["epochs"] == 1
    assert saved_args["output_dir"] == str(run_dir)

    for name in ("last.pt", "best.pt"):
        checkpoint = load_checkpoint(run_dir / name)
        assert checkpoint["epoch"] == 1
        assert checkpoint["labels"] == [str(digit) for digit in range(10)]
        assert checkpoint["preprocess"]["height"] == 8
        assert checkpoint["data_fingerprint"].startswith("sha256:")
        assert {"model", "optimizer", "lr_scheduler", "args", "rng"} <= set(checkpoint)
    for name in REPORT_FILES:
        assert (run_dir / "report" / name).is_file()
    assert result.last_epoch == 1
    assert 0.0 <= result.test_accuracy <= 1.0


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    # Step decay halves the lr after every epoch, so a scheduler that was not
    # restored would train epoch 2 with the wrong lr and end with other weights.
    schedule = ("--lr-scheduler", "step", "--lr-step-size", "1", "--lr-gamma", "0.5")
    straight_dir = tmp_path / "straight"
    train.main(train_args(straight_dir, "--epochs", "2", *schedule))
    resumed_dir = tmp_path / "resumed"
    train.main(train_args(resumed_dir, "--epochs", "1", *schedule))

    resumed = train.main(
        train_args(
            resumed_dir, "--epochs", "2", "--resume", str(resumed_dir / "last.pt"), *schedule
        )
    )

    assert [row["epoch"] for row in read_log(resumed_dir)] == ["1", "2"]
    assert resumed.last_epoch == 2
    straight_state = load_checkpoint(straight_dir / "last.pt")
    resumed_state = load_checkpoint(resumed_dir / "last.pt")
    assert resumed_state["epoch"] == 2
    assert resumed_state["lr_scheduler"]["last_epoch"] == 2
    steps = [state["step"] for state in resumed_state["optimizer"]["state"].values()]
    expected_steps = [state["step"] for state in straight_state["optimizer"]["state"].values()]
    assert steps == expected_steps
    for key, tensor in straight_state["model"].items():
        assert torch.equal(tensor, resumed_state["model"][key]), key
    assert [row["lr"] for row in read_log(resumed_dir)] == [
        row["lr"] for row in read_log(straight_dir)
    ]


def test_resume_rejects_changed_optimizer(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train.main(train_args(run_dir, "--epochs", "1"))
    resume = ("--resume", str(run_dir / "last.pt"))

    with pytest.raises(InvalidArgumentsError, match="--optimizer sgd differs from the resumed"):
        train.main(train_args(run_dir, "--epochs", "1", "--optimizer", "sgd", *resume))


def test_resume_onecycle_keeps_epoch_count(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train.main(train_args(run_dir, "--epochs", "1", "--lr-scheduler", "onecycle"))
    resume = ("--resume", str(run_dir / "last.pt"))

    with pytest.raises(InvalidArgumentsError, match="onecycle schedule spans the epoch count"):
        train.main(train_args(run_dir, "--epochs", "2", *resume))


def test_resume_restores_data_root_and_epochs(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_image_folder(root)
    run_dir = tmp_path / "run"
    first_run = (
        "--dataset", "imagefolder", "--data-root", str(root), "--model", "mlp",
        "--image-size", "8", "--lr-scheduler", "cosine", "--epochs", "1",
        "--threads", "1", "--no-progress", "--output-dir", str(run_dir),
    )  # fmt: skip
    train.main(train.get_args_parser().parse_args(first_run))
    resume = ("--resume", str(run_dir / "last.pt"), "--no-progress")

    # Neither --dataset nor --data-root is repeated: both come from the checkpoint.
    train.main(train.get_args_parser().parse_args([*resume, "--epochs", "2"]))
    assert [row["epoch"] for row in read_log(run_dir)] == ["1", "2"]

    # Without --epochs the checkpoint's count applies, so the finished run stays finished.
    train.main(train.get_args_parser().parse_args(list(resume)))
    assert [row["epoch"] for row in read_log(run_dir)] == ["1", "2"]


def test_existing_run_folder_rejected(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train.main(train_args(run_dir, "--epochs", "1"))

    with pytest.raises(InvalidArgumentsError, match="already contains a run"):
        train.main(train_args(run_dir, "--epochs", "1"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--optimizer", "adam", "--momentum", "0.9"), "--momentum applies to --optimizer sgd"),
        (("--lr-step-size", "3"), "apply to --lr-scheduler step only"),
        (("--lr-scheduler", "step"), "requires --lr-step-size"),
        (("--data-root", "somewhere"), "--data-root does not apply to digits"),
        (("--dataset", "faces", "--data-root", "x"), "--data-root does not apply to faces"),
        (("--download",), "--download applies to mnist and cifar10 only"),
        (("--val-fraction", "0.6", "--test-fraction", "0.5"), "must leave samples for training"),
        (("--weights", "resnet.pth"), "timm:<name>, not mlp"),
        (("--patience", "0"), "--patience must be at least 1"),
        (("--epochs", "0"), "must be positive"),
        (("--crop-fraction", "0.5"), "--crop-fraction applies only to"),
        (("--strategy", "partial"), "requires --unfreeze-blocks"),
        (("--unfreeze-blocks", "2"), "applies to --strategy partial only"),
        (("--head-epochs", "2"), "apply to --strategy staged only"),
        (("--layer-lr-decay", "0"), "--layer-lr-decay must be in"),
        (("--crop-scale", "0"), "--crop-scale must be in"),
        (("--hflip", "1.5"), "--hflip is a probability"),
        (("--mixup-alpha", "-1"), "must not be negative"),
        (("--ema-decay", "1"), "--ema-decay must be in"),
        (("--max-grad-norm", "0"), "--max-grad-norm must be positive"),
    ],
)
def test_invalid_arguments_rejected(tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    with pytest.raises(InvalidArgumentsError, match=message):
        train.main(train_args(tmp_path / "run", *extra))


def test_imagefolder_requires_data_root(tmp_path: Path) -> None:
    args = train_args(tmp_path / "run")
    args.dataset = "imagefolder"

    with pytest.raises(InvalidArgumentsError, match="requires --data-root"):
        train.main(args)


def test_missing_mnist_names_path_and_flag(tmp_path: Path) -> None:
    options = DataOptions(dataset="mnist", data_root=tmp_path / "no-mnist")

    with pytest.raises(DataNotFoundError) as raised:
        split_data(options)

    assert str(tmp_path / "no-mnist") in str(raised.value)
    assert "--download" in str(raised.value)


def test_resnet18_without_weights_explains_options() -> None:
    with pytest.raises(DataNotFoundError) as raised:
        build_model("resnet18", num_classes=10, in_channels=3, image_size=224)

    assert "--weights PATH" in str(raised.value)
    assert "--download-weights" in str(raised.value)


def test_train_resnet18_without_weights_fails_early(tmp_path: Path) -> None:
    args = train_args(tmp_path / "run", "--image-size", "32")
    args.model = "resnet18"

    with pytest.raises(DataNotFoundError, match="--download-weights"):
        train.main(args)

    assert not (tmp_path / "run").exists()


def test_efficientnet_gets_new_head() -> None:
    model = build_model("efficientnet_lite0", num_classes=10, in_channels=3, image_size=32)
    imagenet = build_model("efficientnet_lite0", num_classes=1000, in_channels=3, image_size=224)
    weights = model.state_dict()
    imagenet_weights = imagenet.state_dict()

    assert weights["classifier.weight"].shape == (10, 1280)
    assert imagenet_weights["classifier.weight"].shape == (1000, 1280)
    assert torch.equal(weights["conv_stem.weight"], imagenet_weights["conv_stem.weight"])


def test_resnet18_missing_weights_file_named(tmp_path: Path) -> None:
    missing = tmp_path / "resnet18.pth"

    with pytest.raises(DataNotFoundError, match=str(missing)):
        build_model("resnet18", num_classes=10, in_channels=3, image_size=224, weights=missing)


def test_digits_split_deterministic_and_stratified() -> None:
    first = split_data(DataOptions(dataset="digits", data_root=Path(".")))
    again = split_data(DataOptions(dataset="digits", data_root=Path(".")))
    other_seed = split_data(DataOptions(dataset="digits", data_root=Path("."), seed=1))

    assert first.fingerprint == again.fingerprint
    assert first.fingerprint != other_seed.fingerprint
    for name in ("train", "val", "test"):
        assert np.array_equal(getattr(first, name).indices, getattr(again, name).indices)
    all_indices = np.concatenate([first.train.indices, first.val.indices, first.test.indices])
    assert len(all_indices) == 1797
    assert len(np.unique(all_indices)) == 1797
    assert len(first.test) == 270
    test_counts = np.bincount(first.test.targets, minlength=10)
    assert test_counts.min() >= 26
    assert test_counts.max() <= 28


def test_faces_source_counts_and_labels() -> None:
    source = load_faces_source()

    assert len(source) == 200
    assert source.images.shape == (200, 25, 25)
    assert source.images.dtype == np.uint8
    assert source.classes == ["face", "non-face"]
    assert np.array_equal(source.targets[:100], np.zeros(100))
    assert np.array_equal(source.targets[100:], np.ones(100))
    # Scaled from lfw_subset()'s [0, 1] floats, so the full uint8 range is used.
    assert source.images.max() == 255
    assert source.load_image(0).mode == "RGB"
    assert source.load_image(0).size == (25, 25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faces_experiment_split_sizes(seed: int) -> None:
    options = DataOptions(
        dataset="faces", data_root=Path("."), seed=seed, val_fraction=0.0999, test_fraction=0.8
    )
    splits = split_data(options)

    assert splits.classes == ["face", "non-face"]
    assert np.bincount(splits.train.targets).tolist() == [10, 10]
    assert np.bincount(splits.val.targets).tolist() == [10, 10]
    assert np.bincount(splits.test.targets).tolist() == [80, 80]
    all_indices = np.concatenate([splits.train.indices, splits.val.indices, splits.test.indices])
    assert len(np.unique(all_indices)) == 200


def test_faces_trains_with_grayscale_default(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = train.get_args_parser().parse_args(
        [
            "--dataset", "faces",
            "--model", "cnn",
            "--epochs", "1",
            "--batch-size", "16",
            "--threads", "1",
            "--no-progress",
            "--output-dir", str(run_dir),
        ]
    )  # fmt: skip

    result = train.main(args)

    checkpoint = load_checkpoint(run_dir / "best.pt")
    assert checkpoint["labels"] == ["face", "non-face"]
    assert checkpoint["preprocess"]["height"] == 25
    assert checkpoint["preprocess"]["color_mode"] == "L"
    assert 0.0 <= result.test_accuracy <= 1.0


def test_digits_test_split_function_matches_training() -> None:
    held_out = digits_test_split(seed=0)
    splits = split_data(DataOptions(dataset="digits", data_root=Path(".")))

    assert np.array_equal(held_out.indices, splits.test.indices)
    assert np.array_equal(held_out.labels, splits.test.targets)
    assert held_out.images.shape == (270, 8, 8)
    assert held_out.images.dtype == np.uint8


def test_digit_png_gives_training_tensor() -> None:
    # A held-out digit saved as PNG, decoded and preprocessed by the service
    # functions, must give the tensor that training and evaluation used.
    spec = build_preprocess_spec(model="cnn", dataset="digits")
    splits = split_data(DataOptions(dataset="digits", data_root=Path(".")))
    dataset = build_dataset(splits.test, spec, cache_max_bytes=10**9)
    held_out = digits_test_split(seed=0)

    for position in (0, 1, 137, 269):
        buffer = io.BytesIO()
        Image.fromarray(held_out.images[position]).save(buffer, format="PNG")
        decoded = decode_image(
            buffer.getvalue(), max_pixels=50_000_000, draft_size=draft_request(spec)
        )
        served = preprocess(decoded.image, spec)
        trained, target = dataset[position]
        assert np.array_equal(served, trained.numpy())
        assert target == held_out.labels[position]


def write_image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for label, channel in (("red", 0), ("blue", 2)):
        (root / label).mkdir(parents=True)
        for number in range(10):
            pixels = rng.integers(0, 60, size=(20 + number, 30, 3), dtype=np.uint8)
            pixels[..., channel] = 200
            image = Image.fromarray(pixels)
            if number % 2:
                image.save(root / label / f"{number}.jpg", quality=90)
            else:
                image.save(root / label / f"{number}.png")


def test_imagefolder_uses_shared_decoder(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_image_folder(root)
    spec = build_preprocess_spec(model="cnn", dataset="imagefolder", image_size=16)
    options = DataOptions(
        dataset="imagefolder",
        data_root=root,
        val_fraction=0.2,
        test_fraction=0.2,
        draft_size=draft_request(spec),
    )
    splits = split_data(options)
    dataset = build_dataset(splits.test, spec, cache_max_bytes=10**9)

    assert splits.classes == ["blue", "red"]
    assert len(splits.test) == 4
    for position, index in enumerate(splits.test.indices):
        path = splits.test.source.paths[int(index)]  # type: ignore[attr-defined]
        decoded = decode_image(
            path.read_bytes(), max_pixels=50_000_000, draft_size=draft_request(spec)
        )
        assert np.array_equal(dataset[position][0].numpy(), preprocess(decoded.image, spec))


def test_imagefolder_fingerprint_tracks_file_bytes(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_image_folder(root)
    options = DataOptions(
        dataset="imagefolder", data_root=root, val_fraction=0.2, test_fraction=0.2
    )
    before = split_data(options).fingerprint

    Image.new("RGB", (30, 30), (0, 0, 255)).save(root / "blue" / "0.png")

    assert split_data(options).fingerprint != before


def test_early_stopping_counts_epochs_without_improvement() -> None:
    stopping = EarlyStopping("val_loss", patience=2, min_delta=0.01)

    assert stopping.update(1, 1.0)
    assert stopping.update(2, 0.5)
    assert not stopping.update(3, 0.495)
    assert not stopping.should_stop
    assert not stopping.update(4, 0.6)
    assert stopping.should_stop
    assert stopping.best == 0.5
    assert stopping.best_epoch == 2


def test_early_stopping_on_accuracy_rises() -> None:
    stopping = EarlyStopping("val_acc", patience=1)

    assert stopping.update(1, 0.5)
    assert stopping.update(2, 0.7)
    assert not stopping.update(3, 0.6)
    assert stopping.should_stop


def test_report_keys_and_values(tmp_path: Path) -> None:
    labels = ["cat", "dog", "bird"]
    targets = np.array([0, 0, 1, 1, 1, 0])
    # No "bird" in the targets, so its ROC AUC is undefined.
    logits = np.array(
        [
            [3.0, 0.0, 0.0],
            [0.0, 2.0, 0.0],
            [0.0, 3.0, 0.0],
            [1.0, 2.0, 0.0],
            [0.0, 0.0, 4.0],
            [2.0, 1.0, 0.0],
        ]
    )

    report = write_report(logits, targets, labels, tmp_path, extra={"split": "test"})

    assert set(report) == {
        "split",
        "num_samples",
        "accuracy",
        "per_class",
        "macro_avg",
        "weighted_avg",
        "confusion_matrix",
        "files",
    }
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert set(report["per_class"]) == set(labels)
    assert set(report["per_class"]["cat"]) == {"precision", "recall", "f1", "support", "roc_auc"}
    assert report["per_class"]["cat"]["precision"] == 1.0
    assert report["per_class"]["cat"]["recall"] == pytest.approx(2 / 3)
    assert report["per_class"]["dog"]["support"] == 3
    assert report["per_class"]["bird"]["roc_auc"] is None
    assert report["macro_avg"]["roc_auc"] == pytest.approx(
        np.mean([report["per_class"]["cat"]["roc_auc"], report["per_class"]["dog"]["roc_auc"]])
    )
    assert set(report["weighted_avg"]) == {"precision", "recall", "f1", "support"}
    assert report["confusion_matrix"]["matrix"] == [[2, 1, 0], [0, 2, 1], [0, 0, 0]]
    assert json.loads((tmp_path / "report.json").read_text()) == report


def test_report_pngs_are_valid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = [f"class {index}" for index in range(30)]
    targets = np.arange(300) % 30
    logits = rng.normal(size=(300, 30))

    report = write_report(logits, targets, labels, tmp_path)

    for name in report["files"].values():
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(tmp_path / name) as image:
            image.verify()


def test_report_accuracy_matches_predictions() -> None:
    logits = np.eye(4)[[0, 1, 2, 3, 0]]
    report = compute_report(logits, np.array([0, 1, 2, 3, 1]), ["a", "b", "c", "d"])

    assert report["accuracy"] == pytest.approx(0.8)
    assert report["num_samples"] == 5
