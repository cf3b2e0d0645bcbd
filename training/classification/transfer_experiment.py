"""Measure what pretrained weights, fine-tuning strategies and augmentation buy with little data.

    nice -n 10 python -m training.classification.transfer_experiment \\
        --output docs/transfer-learning.md

Trains every arm on scikit-learn's digits (`--dataset digits`) or on
scikit-image's face and non-face crops (`--dataset faces`), with about 10
training images per class, with and without augmentation, for each seed, through
`training.classification.train` (the same code and options as the command
line). Every arm gets the same number of epochs and optimizer steps. Writes
the Markdown page with a results table (mean and sample standard deviation
over the seeds) and a PNG of the learning curves next to it. `--quick` runs a
reduced version in seconds, for tests; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import platform
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.classification import train
from training.classification.data import DataOptions, split_data
from training.classification.optim import steps_per_epoch
from training.classification.transfer_datasets import DIGITS, TRANSFER_DATASETS, TransferDataset
from training.classification.transfer_report import (
    ArmResult,
    ExperimentSetup,
    RunRecord,
    write_page,
)
from training.help_format import DefaultsHelpFormatter

logger = logging.getLogger(__name__)

SEEDS = (0, 1, 2)
PRETRAINED_IMAGE_SIZE = 64
QUICK_PRETRAINED_IMAGE_SIZE = 32
EPOCHS = 20
# Two, because the warmup takes the first epoch.
QUICK_EPOCHS = 2
STAGED_HEAD_EPOCHS = 4
STAGED_OPTIONS = (
    f"--model efficientnet_lite0 --strategy staged --head-epochs {STAGED_HEAD_EPOCHS} "
    f"--unfreeze-every 1 --layer-lr-decay 0.7 --lr 1e-3"
)


@dataclass(frozen=True)
class Arm:
    name: str
    description: str
    options: tuple[str, ...]
    pretrained: bool = True


ARMS = (
    Arm(
        "scratch",
        # arm_description() fills in the data set's scratch image size.
        "small CNN from random weights, {scratch_image_size} px grayscale, lr 3e-3",
        ("--model", "cnn", "--lr", "3e-3"),
        pretrained=False,
    ),
    Arm(
        "linear_probe",
        "EfficientNet-Lite0, backbone frozen, new head trained, lr 1e-2",
        ("--model", "efficientnet_lite0", "--strategy", "linear_probe", "--lr", "1e-2"),
    ),
    Arm(
        "partial",
        "EfficientNet-Lite0, head and last 2 of 8 backbone groups trained, BatchNorm in "
        "eval mode, lr 1e-3",
        tuple(
            shlex.split(
                "--model efficientnet_lite0 --strategy partial --unfreeze-blocks 2 "
                "--batchnorm-eval --lr 1e-3"
            )
        ),
    ),
    Arm(
        "full",
        "EfficientNet-Lite0, every layer trained, BatchNorm in eval mode, lr 1e-3",
        tuple(shlex.split("--model efficientnet_lite0 --strategy full --batchnorm-eval --lr 1e-3")),
    ),
    Arm(
        "staged",
        f"EfficientNet-Lite0, head alone for {STAGED_HEAD_EPOCHS} epochs, then one more "
        f"backbone group per epoch, BatchNorm in eval mode; head lr 1e-3, each group below "
        f"0.7x the one above",
        tuple(shlex.split(f"{STAGED_OPTIONS} --batchnorm-eval")),
    ),
    Arm(
        "staged_batch_stats",
        "as staged, but each unfrozen group's BatchNorm layers switch to batch statistics "
        "(training mode)",
        tuple(shlex.split(STAGED_OPTIONS)),
    ),
)


def arm_description(arm: Arm, dataset: TransferDataset) -> str:
    return arm.description.format(scratch_image_size=dataset.scratch_image_size)


def shared_options(dataset: TransferDataset) -> tuple[str, ...]:
    """Return the training options of every arm on `dataset`.

    AdamW, one warmup epoch, then a per-batch cosine decay. Only the batch
    size depends on the data set.
    """
    return (
        "--optimizer", "adamw",
        "--weight-decay", "1e-4",
        "--label-smoothing", "0.1",
        "--batch-size", str(dataset.batch_size),
        "--lr-scheduler", "cosine",
        "--warmup-epochs", "1",
        "--monitor", "val_loss",
    )  # fmt: skip


def arm_argv(
    arm: Arm,
    *,
    dataset: TransferDataset,
    augment: bool,
    seed: int,
    output_dir: Path,
    quick: bool,
    epochs: int,
) -> list[str]:
    """Return the `train.py` options of one run."""
    image_size = dataset.scratch_image_size
    if arm.pretrained:
        image_size = QUICK_PRETRAINED_IMAGE_SIZE if quick else PRETRAINED_IMAGE_SIZE
    return [
        *(dataset.quick_data_options if quick else dataset.data_options),
        *shared_options(dataset),
        *arm.options,
        *(dataset.augmentation_options if augment else ()),
        "--image-size", str(image_size),
        "--epochs", str(epochs),
        "--seed", str(seed),
        "--threads", "1",
        "--no-progress",
        "--output-dir", str(output_dir),
    ]  # fmt: skip


def _read_log(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / train.LOG_FILENAME).open(encoding="utf-8") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def run_arm(
    arm: Arm,
    *,
    dataset: TransferDataset,
    augment: bool,
    seed: int,
    work_dir: Path,
    quick: bool,
    epochs: int,
) -> RunRecord:
    """Train one arm for one seed and return its test metrics and learning curve."""
    run_dir = work_dir / f"{arm.name}-{'augment' if augment else 'plain'}-seed{seed}"
    argv = arm_argv(
        arm,
        dataset=dataset,
        augment=augment,
        seed=seed,
        output_dir=run_dir,
        quick=quick,
        epochs=epochs,
    )
    result = train.main(train.get_args_parser().parse_args(argv))
    log = _read_log(run_dir)
    record = RunRecord(
        arm=arm.name,
        augment=augment,
        seed=seed,
        test_accuracy=result.test_accuracy,
        test_macro_f1=result.test_macro_f1,
        train_seconds=sum(row["seconds"] for row in log),
        val_accuracy=[row["val_acc"] for row in log],
        train_loss=[row["train_loss"] for row in log],
        trainable_parameters=result.trainable_parameters,
    )
    # An EfficientNet checkpoint takes about 60 MB, so only the metrics are kept.
    shutil.rmtree(run_dir)
    logger.info(
        "%s %s seed %d: test accuracy %.4f, macro F1 %.4f, %.1f s",
        arm.name,
        "with augmentation" if augment else "without augmentation",
        seed,
        record.test_accuracy,
        record.test_macro_f1,
        record.train_seconds,
    )
    return record


def describe_splits(dataset: TransferDataset, quick: bool, seed: int) -> tuple[str, int]:
    """Return a description of the split sizes for `seed`, and the training split size."""
    options = train.get_args_parser().parse_args(
        list(dataset.quick_data_options if quick else dataset.data_options)
    )
    splits = split_data(
        DataOptions(
            dataset=options.dataset,
            data_root=Path("."),
            seed=seed,
            val_fraction=options.val_fraction,
            test_fraction=options.test_fraction,
            max_samples=options.max_samples,
        )
    )
    per_class = np.bincount(splits.train.targets, minlength=len(splits.classes))
    spread = (
        f"{per_class.min()}"
        if per_class.min() == per_class.max()
        else f"{per_class.min()} to {per_class.max()}"
    )
    text = (
        f"{len(splits.train)} training images ({spread} per class), "
        f"{len(splits.val)} validation and {len(splits.test)} test images"
    )
    return text, len(splits.train)


def _command(args: argparse.Namespace) -> str:
    parts = ["--output", str(args.output)]
    if args.dataset != DIGITS.name:
        parts += ["--dataset", args.dataset]
    if args.quick:
        parts.append("--quick")
    if list(args.seeds) != list(SEEDS):
        parts += ["--seeds", *(str(seed) for seed in args.seeds)]
    if args.epochs != EPOCHS:
        parts += ["--epochs", str(args.epochs)]
    if list(args.arms) != [arm.name for arm in ARMS]:
        parts += ["--arms", *args.arms]
    return f"python -m training.classification.transfer_experiment {shlex.join(parts)}"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Compare training from scratch with fine-tuning strategies on about 10 "
        "images per class, with and without augmentation, and write a Markdown report.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--output", type=Path, required=True, help="Markdown file; the PNG goes next to it"
    )
    parser.add_argument(
        "--dataset",
        choices=list(TRANSFER_DATASETS),
        default=DIGITS.name,
        help="digits: scikit-learn's 8x8 handwritten digits, 10 classes; faces: scikit-image's "
        "25x25 face and non-face crops, 2 classes",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of every run")
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=[arm.name for arm in ARMS],
        default=[arm.name for arm in ARMS],
        help="arms to run",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"one seed, {QUICK_EPOCHS} epochs, at most 300 images, 32 px pretrained input: "
        "checks the pipeline in seconds, results are meaningless",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="parent folder of the run folders, each deleted after its metrics are read "
        "(default: a temporary folder)",
    )
    return parser


def main(args: argparse.Namespace) -> list[ArmResult]:
    started = time.perf_counter()
    seeds = [args.seeds[0]] if args.quick else args.seeds
    epochs = QUICK_EPOCHS if args.quick else args.epochs
    arms = [arm for arm in ARMS if arm.name in args.arms]
    dataset = TRANSFER_DATASETS[args.dataset]

    records = []
    with tempfile.TemporaryDirectory(dir=args.work_dir, prefix="transfer-") as work:
        for arm in arms:
            for augment in (False, True):
                for seed in seeds:
                    records.append(
                        run_arm(
                            arm,
                            dataset=dataset,
                            augment=augment,
                            seed=seed,
                            work_dir=Path(work),
                            quick=args.quick,
                            epochs=epochs,
                        )
                    )
    wall_seconds = time.perf_counter() - started

    split_text, train_size = describe_splits(dataset, args.quick, seeds[0])
    environment = (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, each run on 1 PyTorch thread, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )
    example = arm_argv(
        arms[-1],
        dataset=dataset,
        augment=True,
        seed=seeds[0],
        output_dir=Path("runs/example"),
        quick=args.quick,
        epochs=epochs,
    )

    setup = ExperimentSetup(
        command=_command(args),
        example_train_command="python -m training.classification.train " + shlex.join(example),
        dataset=dataset,
        arms=[(arm.name, arm_description(arm, dataset)) for arm in arms],
        split_sizes=split_text,
        data_options=" ".join(dataset.quick_data_options if args.quick else dataset.data_options),
        shared_options=" ".join(shared_options(dataset)),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch(train_size, dataset.batch_size, drop_last=False),
        seeds=seeds,
        pretrained_image_size=QUICK_PRETRAINED_IMAGE_SIZE if args.quick else PRETRAINED_IMAGE_SIZE,
        environment=environment,
        quick=args.quick,
    )
    results = write_page(args.output, records, setup, wall_seconds)
    logger.info("wrote %s in %.0f s", args.output, wall_seconds)
    return results


if __name__ == "__main__":
    from training.classification.cli import run

    run(get_args_parser(), main)
