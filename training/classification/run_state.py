"""State of a training run: built from the options, saved in and restored from checkpoints."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from services.common.metadata import PreprocessSpec
from training.classification.data import DataSplits
from training.classification.engine import StepOptions
from training.classification.errors import TrainingError
from training.classification.finetune import StrategySchedule, optimizer_parameter_groups
from training.classification.models import build_architecture, build_model
from training.classification.optim import (
    EarlyStopping,
    build_lr_scheduler,
    build_optimizer,
    steps_per_epoch,
)
from training.classification.transfer_args import strategy_from_args

logger = logging.getLogger(__name__)


@dataclass
class RunState:
    """Model, loss, optimizer, lr schedule, early stopping and the shuffling generator.

    `schedule` sets the trainable layer groups of each epoch. With EMA on,
    `step_options.ema` is the averaged copy that validation, best.pt and
    export use.
    """

    model: nn.Module
    criterion: nn.Module
    optimizer: Optimizer
    lr_scheduler: LRScheduler | None
    lr_per_batch: bool
    stopping: EarlyStopping
    generator: torch.Generator
    schedule: StrategySchedule
    step_options: StepOptions

    @property
    def evaluated_model(self) -> nn.Module:
        """Return the model that validation scores and checkpoints publish."""
        ema = self.step_options.ema
        return ema.module if ema is not None else self.model


def json_args(args: argparse.Namespace) -> dict[str, Any]:
    """Return the options as JSON-compatible values (paths as strings)."""
    return {
        key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
    }


def build_run_state(
    args: argparse.Namespace,
    splits: DataSplits,
    spec: PreprocessSpec,
    train_loader: DataLoader[tuple[torch.Tensor, int]],
    *,
    resuming: bool,
) -> RunState:
    """Create the model and its optimizer, scheduler and early stopping from the options."""
    architecture = {
        "num_classes": len(splits.classes),
        "in_channels": spec.channels,
        "image_size": spec.height,
        "dropout": args.dropout,
    }
    if resuming:
        # The checkpoint replaces every weight, so pretrained weights are not loaded again.
        model = build_architecture(args.model, **architecture)
    else:
        model = build_model(
            args.model,
            **architecture,
            weights=args.weights,
            download_weights=args.download_weights,
        )
    schedule = StrategySchedule(model, strategy_from_args(args), args.model)
    parameter_groups = optimizer_parameter_groups(
        schedule.groups,
        lr=args.lr,
        weight_decay=args.weight_decay,
        layer_lr_decay=args.layer_lr_decay,
        decay_norm_and_bias=args.decay_norm_and_bias,
    )
    optimizer = build_optimizer(
        args.optimizer,
        parameter_groups,
        lr=args.lr,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
    )
    ema_decay = args.ema_decay
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        if ema_decay is not None
        else None
    )
    step_options = StepOptions(
        max_grad_norm=args.max_grad_norm,
        amp=args.amp,
        ema=ema,
        batchnorm_eval=args.batchnorm_eval,
    )
    lr_scheduler, per_batch = build_lr_scheduler(
        args.lr_scheduler,
        optimizer,
        epochs=args.epochs,
        steps_per_epoch=steps_per_epoch(
            len(splits.train), args.batch_size, bool(train_loader.drop_last)
        ),
        step_size=args.lr_step_size,
        gamma=args.lr_gamma,
        warmup_epochs=args.warmup_epochs,
    )
    if train_loader.generator is None:
        raise RuntimeError("the training loader has no generator")
    return RunState(
        model=model,
        criterion=nn.CrossEntropyLoss(label_smoothing=args.label_smoothing),
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        lr_per_batch=per_batch,
        stopping=EarlyStopping(args.monitor, args.patience, args.min_delta),
        generator=train_loader.generator,
        schedule=schedule,
        step_options=step_options,
    )


def checkpoint_payload(
    state: RunState,
    *,
    epoch: int,
    args: argparse.Namespace,
    splits: DataSplits,
    spec: PreprocessSpec,
    metrics: dict[str, float],
) -> dict[str, Any]:
    """Return everything that resuming or exporting needs after `epoch`."""
    scheduler = state.lr_scheduler
    ema = state.step_options.ema
    extra: dict[str, Any] = {}
    if ema is not None:
        # "model" contains the averaged weights that export and reports load.
        # Resuming also needs the weights the optimizer works on.
        extra = {"training_model": state.model.state_dict(), "ema_updates": int(ema.n_averaged)}
    return {
        **extra,
        "model": state.evaluated_model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch,
        "args": json_args(args),
        "labels": splits.classes,
        "preprocess": spec.model_dump(mode="json"),
        "data_fingerprint": splits.fingerprint,
        "early_stopping": state.stopping.state_dict(),
        "metrics": metrics,
        # Restoring both generators makes a resumed run repeat the dropout masks
        # and the shuffling order of an uninterrupted one.
        "rng": {"torch": torch.get_rng_state(), "train_loader": state.generator.get_state()},
    }


def restore_run_state(state: RunState, checkpoint: dict[str, Any]) -> int:
    """Load a checkpoint into `state` and return the epoch to continue with."""
    ema = state.step_options.ema
    if ema is not None:
        state.model.load_state_dict(checkpoint["training_model"])
        ema.module.load_state_dict(checkpoint["model"])
        ema.n_averaged.fill_(checkpoint["ema_updates"])
    else:
        state.model.load_state_dict(checkpoint["model"])
    try:
        state.optimizer.load_state_dict(checkpoint["optimizer"])
    except ValueError as error:
        # Checkpoints written before biases and norm parameters got their own
        # parameter groups have one group per model.
        raise TrainingError(
            f"the optimizer state of the checkpoint does not match this run's parameter "
            f"groups ({error}); it was written by an older version, so start a new run"
        ) from error
    if state.lr_scheduler is not None:
        state.lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    state.stopping.load_state_dict(checkpoint["early_stopping"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    state.generator.set_state(checkpoint["rng"]["train_loader"])
    return int(checkpoint["epoch"]) + 1
