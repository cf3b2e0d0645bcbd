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
from torch.utils.data import DataLoader

from services.common.metadata import PreprocessSpec
from training.classification.data import DataSplits
from training.classification.models import build_architecture, build_model
from training.classification.optim import (
    EarlyStopping,
    build_lr_scheduler,
    build_optimizer,
    steps_per_epoch,
)

logger = logging.getLogger(__name__)


@dataclass
class RunState:
    """Model, loss, optimizer, lr schedule, early stopping and the shuffling generator."""

    model: nn.Module
    criterion: nn.Module
    optimizer: Optimizer
    lr_scheduler: LRScheduler | None
    lr_per_batch: bool
    stopping: EarlyStopping
    generator: torch.Generator


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
    optimizer = build_optimizer(
        args.optimizer,
        model.parameters(),
        lr=args.lr,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
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
    return {
        "model": state.model.state_dict(),
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
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    if state.lr_scheduler is not None:
        state.lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    state.stopping.load_state_dict(checkpoint["early_stopping"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    state.generator.set_state(checkpoint["rng"]["train_loader"])
    return int(checkpoint["epoch"]) + 1
