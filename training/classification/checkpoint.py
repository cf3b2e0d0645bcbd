"""Training checkpoints: everything needed to resume a run or to export its model.

A checkpoint is a dict saved with `torch.save` that `torch.load(weights_only=True)`
can read: tensors, numbers, strings, lists and dicts only.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from services.common.metadata import PreprocessSpec
from training.classification.errors import DataNotFoundError, TrainingError
from training.classification.models import build_architecture

FORMAT_VERSION = 1


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write `checkpoint` to `path` through a temporary file, so a crash leaves no partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    os.close(descriptor)
    try:
        torch.save({"format_version": FORMAT_VERSION, **checkpoint}, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`."""
    if not path.is_file():
        raise DataNotFoundError(f"checkpoint {path} not found")
    checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    version = checkpoint.get("format_version")
    if version != FORMAT_VERSION:
        raise TrainingError(
            f"{path} has checkpoint format {version!r}; this code reads format {FORMAT_VERSION}"
        )
    return checkpoint


@dataclass(frozen=True)
class TrainedModel:
    """A model in eval mode with the labels and preprocessing it was trained with."""

    model: nn.Module
    model_name: str
    labels: list[str]
    preprocess: PreprocessSpec
    args: dict[str, Any]
    data_fingerprint: str
    epoch: int


def model_from_checkpoint(checkpoint: dict[str, Any]) -> TrainedModel:
    """Rebuild the model of a checkpoint and load its weights."""
    args = checkpoint["args"]
    spec = PreprocessSpec.model_validate(checkpoint["preprocess"])
    labels = list(checkpoint["labels"])
    model = build_architecture(
        args["model"],
        num_classes=len(labels),
        in_channels=spec.channels,
        image_size=spec.height,
        dropout=args["dropout"],
    )
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return TrainedModel(
        model=model,
        model_name=args["model"],
        labels=labels,
        preprocess=spec,
        args=args,
        data_fingerprint=checkpoint["data_fingerprint"],
        epoch=int(checkpoint["epoch"]),
    )
