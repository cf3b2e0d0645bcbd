"""One training epoch and one evaluation pass, shared by training, reports and export."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.classification.finetune import set_train_mode

# Autocast types: CPUs run bfloat16 matrix kernels, CUDA GPUs float16.
# NOTE: train.py has no device option and trains on the CPU, so the CUDA
# branch (float16 with GradScaler) has never run.
AMP_DTYPES = {"cpu": torch.bfloat16, "cuda": torch.float16}


@dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float


@dataclass(frozen=True)
class StepOptions:
    """Per-step extras of a training epoch; the defaults add none of them."""

    # Clip the gradient norm of the trainable parameters to this value.
    max_grad_norm: float | None = None
    # Run forward and loss under autocast (AMP_DTYPES) on the model's device.
    amp: bool = False
    # Update this exponential moving average of the weights after every step.
    ema: AveragedModel | None = None
    # Keep every BatchNorm layer in eval mode (see finetune.set_train_mode).
    batchnorm_eval: bool = False


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
    options: StepOptions | None = None,
) -> EpochStats:
    """Train for one pass over `loader`.

    `batch_scheduler` steps after every batch (OneCycleLR, warmup schedules).
    Per-epoch schedulers are stepped by the caller. Targets are class indices
    (N,) or, after MixUp or CutMix, class probabilities (N, classes); the
    accuracy of the latter counts the most probable class as the target.
    """
    options = options or StepOptions()
    set_train_mode(model, batchnorm_eval=options.batchnorm_eval)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    device_type = trainable[0].device.type if trainable else "cpu"
    # GradScaler keeps small float16 gradients from flushing to zero. bfloat16
    # has float32's exponent range, so it needs no scaling.
    scaler = torch.amp.GradScaler(device_type, enabled=options.amp and device_type == "cuda")
    total_loss = 0.0
    correct = 0
    seen = 0
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress)
    for inputs, targets in bar:
        with _autocast(device_type, options.amp):
            logits = model(inputs)
            loss = criterion(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if options.max_grad_norm is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(trainable, options.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        if batch_scheduler is not None:
            batch_scheduler.step()
        if options.ema is not None:
            options.ema.update_parameters(model)

        batch_size = targets.shape[0]
        hard_targets = targets.argmax(dim=1) if targets.ndim == 2 else targets
        total_loss += loss.item() * batch_size
        correct += int((logits.argmax(dim=1) == hard_targets).sum())
        seen += batch_size
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    if seen == 0:
        raise ValueError("the training loader returned no batches")
    return EpochStats(loss=total_loss / seen, accuracy=correct / seen)


def _autocast(device_type: str, enabled: bool) -> AbstractContextManager[object]:
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type, dtype=AMP_DTYPES.get(device_type, torch.bfloat16))


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
