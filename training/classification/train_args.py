"""Command-line options of `train.py`, their validation and the merge with a resumed checkpoint."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any, NoReturn

from training.classification.errors import InvalidArgumentsError
from training.classification.models import (
    MODEL_NAMES,
    TORCHVISION_MODELS,
    model_name_argument,
    takes_weights_file,
)
from training.classification.optim import LR_SCHEDULERS, MONITORS, OPTIMIZERS
from training.classification.sources import DATASETS
from training.classification.timm_models import TIMM_PREFIX
from training.classification.transfer_args import add_transfer_arguments, check_transfer_args
from training.help_format import DefaultsHelpFormatter

logger = logging.getLogger(__name__)

DEFAULT_TEST_FRACTION = 0.15
DEFAULT_MOMENTUM = 0.9
DEFAULT_LR_GAMMA = 0.1
MAX_DEFAULT_WORKERS = 4
TORCHVISION_DATASETS = ("mnist", "cifar10")
# A resumed run may change these. Every other option defines the data, the
# model or the optimizer, so it is taken from the checkpoint.
RESUMABLE_OPTIONS = frozenset(
    {
        "epochs",
        "patience",
        "min_delta",
        "output_dir",
        "resume",
        "threads",
        "workers",
        "progress",
        "data_root",
        "download",
        "cache_max_mb",
    }
)
# Resumable options that the checkpoint's value fills when the command line
# leaves them at their default, so `--resume last.pt` alone continues the run.
RESTORED_WHEN_DEFAULT = ("data_root", "epochs")


def _model_argument(value: str) -> str:
    try:
        return model_name_argument(value)
    except InvalidArgumentsError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train an image classifier on digits, faces, MNIST, CIFAR-10 or an image "
        "folder.",
        formatter_class=DefaultsHelpFormatter,
    )
    data = parser.add_argument_group("Data set")
    data.add_argument("--dataset", choices=DATASETS, default="digits")
    data.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="mnist/cifar10: folder with the torchvision files (default: data); imagefolder: "
        "folder with one subfolder of images per class (required); digits and faces: not used",
    )
    data.add_argument(
        "--download", action="store_true", help="download mnist or cifar10 into --data-root"
    )
    data.add_argument(
        "--val-fraction", type=float, default=0.15, help="share of all samples for validation"
    )
    data.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help=f"share of all samples held out for testing, digits, faces and imagefolder only "
        f"(default: {DEFAULT_TEST_FRACTION}); mnist and cifar10 use their official test set",
    )
    data.add_argument(
        "--max-samples",
        type=int,
        default=None,
        help="keep a stratified random subset of this many samples of each source, "
        "for quick experiments",
    )
    data.add_argument(
        "--max-image-pixels",
        type=int,
        default=50_000_000,
        help="imagefolder: reject images with more pixels than this (width x height)",
    )
    data.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data loader processes for splits too large to keep preprocessed in memory "
        f"(default: the CPU count, at most {MAX_DEFAULT_WORKERS})",
    )
    data.add_argument(
        "--cache-max-mb",
        type=int,
        default=256,
        help="keep a split preprocessed in memory when its tensors take at most this many MiB",
    )

    model = parser.add_argument_group("Model")
    weights_models = f"{'/'.join(TORCHVISION_MODELS)}/{TIMM_PREFIX}<name>"
    model.add_argument(
        "--model",
        type=_model_argument,
        default="cnn",
        help=f"one of {', '.join(MODEL_NAMES)}, or {TIMM_PREFIX}<name> for a timm model "
        f"such as {TIMM_PREFIX}resnet18.a1_in1k",
    )
    weights = model.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights",
        type=Path,
        default=None,
        help=f"{weights_models}: ImageNet state dict file (torchvision or timm)",
    )
    weights.add_argument(
        "--download-weights",
        action="store_true",
        help=f"{weights_models}: download the ImageNet weights (torchvision's or timm's)",
    )
    model.add_argument(
        "--dropout",
        type=float,
        default=0.2,
        help="dropout probability before the classifier (mlp, cnn, efficientnet_lite0)",
    )

    preprocessing = parser.add_argument_group("Preprocessing")
    preprocessing.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="model input height and width in pixels (default: 224 for pretrained models, "
        "16 for digits, 25 for faces, else the data set's image size)",
    )
    preprocessing.add_argument(
        "--color-mode",
        choices=("RGB", "L"),
        default=None,
        help="input channels (default: L for digits, faces and mnist with mlp or cnn, else RGB)",
    )
    preprocessing.add_argument(
        "--resize",
        choices=("stretch", "shorter_side_center_crop"),
        default=None,
        help="default: shorter_side_center_crop for imagefolder, else stretch",
    )
    preprocessing.add_argument(
        "--crop-fraction",
        type=float,
        default=None,
        help="shorter_side_center_crop: crop size / resized shorter side (default: 0.875)",
    )
    preprocessing.add_argument(
        "--interpolation", choices=("nearest", "bilinear", "bicubic", "lanczos"), default="bilinear"
    )

    optimization = parser.add_argument_group("Optimizer")
    optimization.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    optimization.add_argument("--lr", type=float, default=3e-3, help="(peak) learning rate")
    optimization.add_argument(
        "--momentum",
        type=float,
        default=None,
        help=f"sgd only (default: {DEFAULT_MOMENTUM})",
    )
    optimization.add_argument("--weight-decay", type=float, default=1e-4, help="L2 penalty")
    optimization.add_argument(
        "--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing"
    )
    optimization.add_argument("--batch-size", type=int, default=64, help="images per batch")
    optimization.add_argument("--epochs", type=int, default=10, help="total epochs of the run")

    schedule = parser.add_argument_group("Learning-rate schedule")
    schedule.add_argument("--lr-scheduler", choices=LR_SCHEDULERS, default="onecycle")
    schedule.add_argument(
        "--lr-step-size", type=int, default=None, help="step: epochs between lr decays (required)"
    )
    schedule.add_argument(
        "--lr-gamma",
        type=float,
        default=None,
        help=f"step: lr multiplier at each decay (default: {DEFAULT_LR_GAMMA})",
    )

    stopping = parser.add_argument_group("Checkpoint selection and early stopping")
    stopping.add_argument(
        "--monitor",
        choices=MONITORS,
        default="val_loss",
        help="validation metric that selects best.pt and drives --patience",
    )
    stopping.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop after this many epochs without improvement of --monitor (default: never)",
    )
    stopping.add_argument(
        "--min-delta",
        type=float,
        default=0.0,
        help="smallest change of --monitor that counts as an improvement",
    )

    add_transfer_arguments(parser)

    run = parser.add_argument_group("Run")
    run.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="run folder (default: runs/<dataset>-<model>, or the folder of --resume)",
    )
    run.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="checkpoint to continue from at its next epoch; options that define the data, "
        "model or optimizer come from the checkpoint",
    )
    run.add_argument("--seed", type=int, default=0, help="seed for splits, weights and shuffling")
    run.add_argument(
        "--threads", type=int, default=None, help="CPU threads for PyTorch (default: all cores)"
    )
    run.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bar"
    )
    return parser


def _reject(message: str) -> NoReturn:
    raise InvalidArgumentsError(message)


def _check_data_args(args: argparse.Namespace) -> None:
    if not 0.0 < args.val_fraction < 1.0:
        _reject(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    if args.dataset in ("digits", "faces") and args.data_root is not None:
        _reject(
            f"--data-root does not apply to {args.dataset}, which ships with "
            f"{'scikit-learn' if args.dataset == 'digits' else 'scikit-image'}"
        )
    if args.dataset == "imagefolder" and args.data_root is None:
        _reject("--dataset imagefolder requires --data-root")
    if args.download and args.dataset not in TORCHVISION_DATASETS:
        _reject(f"--download applies to mnist and cifar10 only, not to {args.dataset}")
    if args.dataset in TORCHVISION_DATASETS:
        if args.test_fraction is not None:
            _reject(f"--test-fraction does not apply to {args.dataset}: it has a test set")
    elif args.test_fraction is not None:
        if not 0.0 < args.test_fraction < 1.0:
            _reject(f"--test-fraction must be between 0 and 1, got {args.test_fraction}")
        if args.val_fraction + args.test_fraction >= 1.0:
            _reject("--val-fraction plus --test-fraction must leave samples for training")
    if args.max_samples is not None and args.max_samples < 1:
        _reject(f"--max-samples must be positive, got {args.max_samples}")
    if args.max_image_pixels < 1:
        _reject(f"--max-image-pixels must be positive, got {args.max_image_pixels}")
    if (args.workers is not None and args.workers < 0) or args.cache_max_mb < 0:
        _reject("--workers and --cache-max-mb must not be negative")


def _check_training_args(args: argparse.Namespace) -> None:
    if args.epochs < 1 or args.batch_size < 1:
        _reject(f"--epochs and --batch-size must be positive, got {args.epochs}, {args.batch_size}")
    if args.lr <= 0.0:
        _reject(f"--lr must be positive, got {args.lr}")
    if args.weight_decay < 0.0:
        _reject(f"--weight-decay must not be negative, got {args.weight_decay}")
    if not 0.0 <= args.dropout < 1.0 or not 0.0 <= args.label_smoothing < 1.0:
        _reject("--dropout and --label-smoothing must be in [0, 1)")

    if args.momentum is not None:
        if args.optimizer != "sgd":
            _reject(f"--momentum applies to --optimizer sgd only, not to {args.optimizer}")
        if not 0.0 <= args.momentum < 1.0:
            _reject(f"--momentum must be in [0, 1), got {args.momentum}")
    if args.lr_scheduler == "step":
        if args.lr_step_size is None or args.lr_step_size < 1:
            _reject("--lr-scheduler step requires --lr-step-size of at least 1 epoch")
        if args.lr_gamma is not None and not 0.0 < args.lr_gamma <= 1.0:
            _reject(f"--lr-gamma must be in (0, 1], got {args.lr_gamma}")
    elif args.lr_step_size is not None or args.lr_gamma is not None:
        _reject("--lr-step-size and --lr-gamma apply to --lr-scheduler step only")

    if args.patience is not None and args.patience < 1:
        _reject(f"--patience must be at least 1 epoch, got {args.patience}")
    if args.min_delta < 0.0:
        _reject(f"--min-delta must not be negative, got {args.min_delta}")

    uses_weights = args.weights is not None or args.download_weights
    if uses_weights and not takes_weights_file(args.model):
        _reject(
            f"--weights and --download-weights apply to {', '.join(TORCHVISION_MODELS)} and "
            f"{TIMM_PREFIX}<name>, not {args.model}"
        )
    if args.image_size is not None and args.image_size < 1:
        _reject(f"--image-size must be positive, got {args.image_size}")
    if args.threads is not None and args.threads < 1:
        _reject(f"--threads must be at least 1, got {args.threads}")


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Validate `args` and fill the defaults that depend on other options. Mutates `args`."""
    _check_data_args(args)
    _check_training_args(args)
    check_transfer_args(args)
    if args.dataset in TORCHVISION_DATASETS and args.data_root is None:
        args.data_root = Path("data")
    if args.dataset not in TORCHVISION_DATASETS and args.test_fraction is None:
        args.test_fraction = DEFAULT_TEST_FRACTION
    if args.workers is None:
        args.workers = min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1)
    if args.optimizer == "sgd" and args.momentum is None:
        args.momentum = DEFAULT_MOMENTUM
    if args.lr_scheduler == "step" and args.lr_gamma is None:
        args.lr_gamma = DEFAULT_LR_GAMMA
    if args.output_dir is None:
        args.output_dir = (
            args.resume.parent if args.resume else Path("runs") / f"{args.dataset}-{args.model}"
        )
    return args


def merge_resumed_args(
    args: argparse.Namespace, checkpoint_args: dict[str, Any]
) -> argparse.Namespace:
    """Take the data, model and optimizer options of a resumed run from its checkpoint.

    Raises InvalidArgumentsError when the command line sets one of them to a
    value that differs from both the default and the checkpoint.
    """
    defaults = vars(get_args_parser().parse_args([]))
    restored = []
    for key in RESTORED_WHEN_DEFAULT:
        stored = checkpoint_args.get(key)
        if stored is not None and getattr(args, key) == defaults[key]:
            setattr(args, key, Path(stored) if key == "data_root" else stored)
            restored.append(key)
    for key, stored in checkpoint_args.items():
        if key in RESUMABLE_OPTIONS or key not in defaults:
            continue
        requested = getattr(args, key)
        requested_text = str(requested) if isinstance(requested, Path) else requested
        if requested_text == stored:
            continue
        if requested != defaults[key]:
            option = "--" + key.replace("_", "-")
            _reject(
                f"{option} {requested} differs from the resumed checkpoint ({stored}); "
                f"a resumed run keeps the data, model and optimizer options"
            )
        setattr(args, key, Path(stored) if isinstance(defaults[key], Path) else stored)
        restored.append(key)
    spans_run = args.lr_scheduler == "onecycle" or args.warmup_epochs > 0
    if spans_run and args.epochs != checkpoint_args["epochs"]:
        schedule = "onecycle" if args.lr_scheduler == "onecycle" else "warmup"
        _reject(
            f"--epochs {args.epochs} differs from the checkpoint's {checkpoint_args['epochs']}; "
            f"the {schedule} schedule spans the epoch count it started with, so leave --epochs "
            f"out or pass --epochs {checkpoint_args['epochs']}"
        )
    if restored:
        logger.info("options restored from the checkpoint: %s", ", ".join(sorted(restored)))
    return args
