"""Options of `train.py` for fine-tuning, augmentation and the extra optimisation steps.

Every option is stored in the run's args.json and checkpoints, so a run
records which strategy and augmentations produced it.
"""

from __future__ import annotations

import argparse
import logging
from typing import NoReturn

from training.classification.augment import AUTO_AUGMENTS, AugmentOptions
from training.classification.errors import InvalidArgumentsError
from training.classification.finetune import STRATEGIES, Strategy

logger = logging.getLogger(__name__)

DEFAULT_HEAD_EPOCHS = 1
DEFAULT_UNFREEZE_EVERY = 1


def add_transfer_arguments(parser: argparse.ArgumentParser) -> None:
    finetune = parser.add_argument_group("Fine-tuning of pretrained models")
    finetune.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="full",
        help="full trains everything, linear_probe only the new head, partial the head and "
        "the last --unfreeze-blocks backbone groups, and staged the head alone for "
        "--head-epochs, then one more backbone group every --unfreeze-every epochs",
    )
    finetune.add_argument(
        "--unfreeze-blocks",
        type=int,
        default=None,
        help="partial: backbone groups next to the head that train (required)",
    )
    finetune.add_argument(
        "--head-epochs",
        type=int,
        default=None,
        help=f"staged: epochs that train the head alone (default: {DEFAULT_HEAD_EPOCHS})",
    )
    finetune.add_argument(
        "--unfreeze-every",
        type=int,
        default=None,
        help=f"staged: epochs between two unfrozen backbone groups "
        f"(default: {DEFAULT_UNFREEZE_EVERY})",
    )
    finetune.add_argument(
        "--layer-lr-decay",
        type=float,
        default=1.0,
        help="discriminative learning rates: each layer group gets this multiple of the lr "
        "of the group above it, the head gets --lr",
    )
    finetune.add_argument(
        "--batchnorm-eval",
        action="store_true",
        help="keep every BatchNorm layer in eval mode, also where its scale and shift train, "
        "so it normalises with the pretrained running statistics. Unfreezing a layer then "
        "does not switch it to batch statistics in the middle of a run",
    )
    finetune.add_argument(
        "--decay-norm-and-bias",
        action="store_true",
        help="apply weight decay to biases and normalisation parameters too "
        "(by default they get none)",
    )

    augment = parser.add_argument_group(
        "Augmentation of training images (torchvision.transforms.v2; all off by default)"
    )
    augment.add_argument(
        "--crop-scale",
        type=float,
        default=None,
        help="RandomResizedCrop: smallest crop area as a share of the image, in (0, 1]",
    )
    augment.add_argument("--hflip", type=float, default=0.0, help="horizontal flip probability")
    augment.add_argument("--vflip", type=float, default=0.0, help="vertical flip probability")
    augment.add_argument(
        "--rotation", type=float, default=0.0, help="maximum random rotation in degrees"
    )
    augment.add_argument(
        "--scale-jitter",
        type=float,
        default=0.0,
        help="random zoom by a factor in [1 - s, 1 + s]",
    )
    augment.add_argument(
        "--color-jitter",
        type=float,
        default=0.0,
        help="random brightness, contrast and saturation factors in [1 - s, 1 + s]",
    )
    augment.add_argument("--auto-augment", choices=AUTO_AUGMENTS, default="none")
    augment.add_argument(
        "--mixup-alpha",
        type=float,
        default=0.0,
        help="alpha of MixUp's Beta(alpha, alpha) mixing weights, 0 turns MixUp off",
    )
    augment.add_argument(
        "--cutmix-alpha",
        type=float,
        default=0.0,
        help="alpha of CutMix's Beta(alpha, alpha) patch areas, 0 turns CutMix off",
    )

    extras = parser.add_argument_group("Optimisation extras")
    extras.add_argument(
        "--warmup-epochs",
        type=int,
        default=0,
        help="cosine and step: epochs of linear lr warmup, after which the schedule "
        "steps every batch",
    )
    extras.add_argument(
        "--max-grad-norm",
        type=float,
        default=None,
        help="clip the gradient norm to this value (default: no clipping)",
    )
    extras.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision: bfloat16 autocast on CPU, float16 with gradient scaling on CUDA",
    )
    extras.add_argument(
        "--ema-decay",
        type=float,
        default=None,
        help="keep an exponential moving average of the weights with this decay per step. "
        "Validation, best.pt and export then use the average (default: off)",
    )


def _reject(message: str) -> NoReturn:
    raise InvalidArgumentsError(message)


def _check_strategy_args(args: argparse.Namespace) -> None:
    if args.unfreeze_blocks is not None and args.strategy != "partial":
        _reject("--unfreeze-blocks applies to --strategy partial only")
    if args.strategy == "partial" and (args.unfreeze_blocks is None or args.unfreeze_blocks < 1):
        _reject("--strategy partial requires --unfreeze-blocks of at least 1")
    staged_options = (args.head_epochs, args.unfreeze_every)
    if args.strategy != "staged" and any(value is not None for value in staged_options):
        _reject("--head-epochs and --unfreeze-every apply to --strategy staged only")
    if args.strategy == "staged":
        if args.head_epochs is None:
            args.head_epochs = DEFAULT_HEAD_EPOCHS
        if args.unfreeze_every is None:
            args.unfreeze_every = DEFAULT_UNFREEZE_EVERY
        if args.head_epochs < 0 or args.unfreeze_every < 1:
            _reject("--head-epochs must not be negative and --unfreeze-every must be positive")
        if args.epochs <= args.head_epochs:
            # Allowed, because quick runs shorten --epochs only, but the run
            # then trains the head alone, like --strategy linear_probe.
            logger.warning(
                "--strategy staged with --epochs %d and --head-epochs %d never unfreezes a "
                "backbone group; raise --epochs above --head-epochs to fine-tune the backbone",
                args.epochs,
                args.head_epochs,
            )
    if not 0.0 < args.layer_lr_decay <= 1.0:
        _reject(f"--layer-lr-decay must be in (0, 1], got {args.layer_lr_decay}")


def _check_augment_args(args: argparse.Namespace) -> None:
    if args.crop_scale is not None and not 0.0 < args.crop_scale <= 1.0:
        _reject(f"--crop-scale must be in (0, 1], got {args.crop_scale}")
    for option in ("hflip", "vflip"):
        if not 0.0 <= getattr(args, option) <= 1.0:
            _reject(f"--{option} is a probability in [0, 1], got {getattr(args, option)}")
    if not 0.0 <= args.rotation <= 180.0:
        _reject(f"--rotation must be in [0, 180] degrees, got {args.rotation}")
    if not 0.0 <= args.scale_jitter < 1.0 or not 0.0 <= args.color_jitter < 1.0:
        _reject("--scale-jitter and --color-jitter must be in [0, 1)")
    if args.mixup_alpha < 0.0 or args.cutmix_alpha < 0.0:
        _reject("--mixup-alpha and --cutmix-alpha must not be negative")


def check_transfer_args(args: argparse.Namespace) -> None:
    """Validate the fine-tuning, augmentation and extra options, and fill the staged defaults."""
    _check_strategy_args(args)
    _check_augment_args(args)
    if args.warmup_epochs < 0:
        _reject(f"--warmup-epochs must not be negative, got {args.warmup_epochs}")
    if args.warmup_epochs > 0:
        if args.lr_scheduler not in ("cosine", "step"):
            _reject(
                f"--warmup-epochs applies to --lr-scheduler cosine and step, not to "
                f"{args.lr_scheduler} (onecycle has its own warmup)"
            )
        if args.warmup_epochs >= args.epochs:
            _reject(f"--warmup-epochs {args.warmup_epochs} must be below --epochs {args.epochs}")
    if args.max_grad_norm is not None and args.max_grad_norm <= 0.0:
        _reject(f"--max-grad-norm must be positive, got {args.max_grad_norm}")
    if args.ema_decay is not None and not 0.0 < args.ema_decay < 1.0:
        _reject(f"--ema-decay must be in (0, 1), got {args.ema_decay}")


def strategy_from_args(args: argparse.Namespace) -> Strategy:
    return Strategy(
        name=args.strategy,
        unfreeze_blocks=args.unfreeze_blocks,
        head_epochs=args.head_epochs if args.head_epochs is not None else DEFAULT_HEAD_EPOCHS,
        unfreeze_every=(
            args.unfreeze_every if args.unfreeze_every is not None else DEFAULT_UNFREEZE_EVERY
        ),
    )


def augment_options(args: argparse.Namespace) -> AugmentOptions:
    return AugmentOptions.from_args(vars(args))
