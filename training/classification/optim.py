"""Optimizers, learning-rate schedules and early stopping for `train.py`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial
from typing import Any

import torch
from torch.optim import SGD, Adam, AdamW, Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LRScheduler,
    OneCycleLR,
    StepLR,
)

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULERS = ("none", "step", "cosine", "onecycle")
MONITORS = ("val_loss", "val_acc")


def build_optimizer(
    name: str,
    parameters: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    *,
    lr: float,
    weight_decay: float,
    momentum: float | None,
) -> Optimizer:
    if name == "sgd":
        return SGD(parameters, lr=lr, momentum=momentum or 0.0, weight_decay=weight_decay)
    if name == "adam":
        return Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(parameters, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def warmup_lr_factor(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int,
    decay: str,
    step_size_steps: int | None = None,
    gamma: float | None = None,
) -> float:
    """Return the lr multiplier before optimizer step `step` (from 0) of a warmup schedule.

    The multiplier rises linearly over `warmup_steps` to 1 at the end of the
    warmup, then follows a cosine from 1 down to 0 at `total_steps`
    ("cosine"), or is multiplied by `gamma` every `step_size_steps` ("step").
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    after = step - warmup_steps
    if decay == "cosine":
        progress = min(1.0, after / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if decay == "step":
        if step_size_steps is None or gamma is None:
            raise ValueError("the step schedule needs a step size and a gamma")
        return float(gamma ** (after // step_size_steps))
    raise ValueError(f"warmup applies to the cosine and step schedules, not to {decay!r}")


def build_lr_scheduler(
    name: str,
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    step_size: int | None,
    gamma: float | None,
    warmup_epochs: int = 0,
) -> tuple[LRScheduler | None, bool]:
    """Return the scheduler and whether it steps after every batch (else after every epoch).

    onecycle peaks at each parameter group's lr and spans all `epochs`, so a
    resumed run has to keep the epoch count it started with. With
    `warmup_epochs`, cosine and step become per-batch schedules that start
    with a linear warmup (`warmup_lr_factor`).
    """
    if name == "none":
        return None, False
    if warmup_epochs > 0:
        factor = partial(
            warmup_lr_factor,
            total_steps=epochs * steps_per_epoch,
            warmup_steps=warmup_epochs * steps_per_epoch,
            decay=name,
            step_size_steps=step_size * steps_per_epoch if step_size is not None else None,
            gamma=gamma,
        )
        return LambdaLR(optimizer, factor), True
    if name == "step":
        if step_size is None or gamma is None:
            raise ValueError("the step schedule needs a step size and a gamma")
        return StepLR(optimizer, step_size=step_size, gamma=gamma), False
    if name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=epochs), False
    if name == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return OneCycleLR(optimizer, max_lr=max_lr, total_steps=epochs * steps_per_epoch), True
    raise ValueError(f"unknown lr scheduler {name!r}; choose one of {', '.join(LR_SCHEDULERS)}")


def steps_per_epoch(num_samples: int, batch_size: int, drop_last: bool) -> int:
    full, remainder = divmod(num_samples, batch_size)
    return full if drop_last or remainder == 0 else full + 1


class EarlyStopping:
    """Tracks the best value of a validation metric and the epochs since it last improved.

    An epoch improves when val_loss drops by more than `min_delta`, or val_acc
    rises by more than `min_delta`. With `patience` None the run never stops early.
    """

    def __init__(self, monitor: str, patience: int | None, min_delta: float = 0.0) -> None:
        if monitor not in MONITORS:
            raise ValueError(f"unknown monitor {monitor!r}; choose one of {', '.join(MONITORS)}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.epochs_without_improvement = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record the metric of `epoch` and return whether it is a new best."""
        if self.best is None:
            improved = True
        elif self.monitor == "val_loss":
            improved = value < self.best - self.min_delta
        else:
            improved = value > self.best + self.min_delta
        if improved:
            self.best = value
            self.best_epoch = epoch
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.epochs_without_improvement >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["monitor"] != self.monitor:
            raise ValueError(f"checkpoint monitored {state['monitor']}, this run {self.monitor}")
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
