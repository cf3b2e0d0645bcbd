"""One training epoch and one evaluation pass, shared by training, reports and export."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader
from tqdm import tqdm


@dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float


@dataclass(frozen=True)
class Evaluation:
    """Mean loss, top-1 accuracy and the raw logits (N, classes) with targets (N,)."""

    loss: float
    accuracy: float
    logits: torch.Tensor
    targets: torch.Tensor


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: Optimizer,
    loader: DataLoader[tuple[torch.Tensor, int]],
    *,
    epoch: int,
    batch_scheduler: LRScheduler | None = None,
    progress: bool = True,
) -> EpochStats:
    """Train for one pass over `loader`.

    `batch_scheduler` steps after every batch (OneCycleLR). Per-epoch
    schedulers are stepped by the caller.
    """
    model.train()
    total_loss = 0.0
    correct = 0
    seen = 0
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress)
    for inputs, targets in bar:
        logits = model(inputs)
        loss = criterion(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()

        batch_size = targets.shape[0]
        total_loss += loss.item() * batch_size
        correct += int((logits.argmax(dim=1) == targets).sum())
        seen += batch_size
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    if seen == 0:
        raise ValueError("the training loader returned no batches")
    return EpochStats(loss=total_loss / seen, accuracy=correct / seen)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, int]],
    *,
    progress: bool = False,
    description: str = "eval",
) -> Evaluation:
    """Run `model` in eval mode over `loader` and keep every logit."""
    model.eval()
    all_logits: list[torch.Tensor] = []
    all_targets: list[torch.Tensor] = []
    for inputs, targets in tqdm(
        loader, desc=description, unit="batch", leave=False, disable=not progress
    ):
        all_logits.append(model(inputs))
        all_targets.append(targets)
    if not all_logits:
        raise ValueError("the evaluation loader returned no batches")
    logits = torch.cat(all_logits)
    target_tensor = torch.cat(all_targets)
    loss = float(criterion(logits, target_tensor))
    accuracy = float((logits.argmax(dim=1) == target_tensor).float().mean())
    return Evaluation(loss=loss, accuracy=accuracy, logits=logits, targets=target_tensor)
