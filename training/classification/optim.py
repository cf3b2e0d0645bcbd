"""Optimizers, learning-rate schedules and early stopping for `train.py`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import SGD, Adam, AdamW, Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR, StepLR

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULERS = ("none", "step", "cosine", "onecycle")
MONITORS = ("val_loss", "val_acc")


def build_optimizer(
    name: str,
    parameters: Iterable[torch.nn.Parameter],
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


def build_lr_scheduler(
    name: str,
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    step_size: int | None,
    gamma: float | None,
) -> tuple[LRScheduler | None, bool]:
    """Return the scheduler and whether it steps after every batch (else after every epoch).

    onecycle peaks at the optimizer's lr and spans all `epochs`, so a resumed
    run has to keep the epoch count it started with.
    """
    if name == "none":
        return None, False
    if name == "step":
        if step_size is None or gamma is None:
            raise ValueError("the step schedule needs a step size and a gamma")
        return StepLR(optimizer, step_size=step_size, gamma=gamma), False
    if name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=epochs), False
    if name == "onecycle":
        max_lr = optimizer.param_groups[0]["lr"]
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
