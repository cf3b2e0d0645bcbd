"""Evaluate a trained model on a split rebuilt from its checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from training.classification.checkpoint import TrainedModel
from training.classification.data import (
    DataSplits,
    build_dataset,
    data_options,
    split_data,
)
from training.classification.engine import Evaluation, evaluate
from training.classification.errors import TrainingError

logger = logging.getLogger(__name__)

# Splits whose preprocessed tensors fit in this many bytes are kept in memory.
EVALUATION_CACHE_BYTES = 256 * 1024 * 1024


def set_threads(threads: int | None) -> None:
    """Limit PyTorch's intra-op threads; None keeps PyTorch's default (one per core)."""
    if threads is None:
        return
    if threads < 1:
        raise TrainingError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def checkpoint_splits(trained: TrainedModel, *, data_root: Path | None = None) -> DataSplits:
    """Rebuild the splits a checkpoint was trained on and check the data fingerprint.

    Raises TrainingError when the fingerprint differs, because then the test
    split is no longer the data that training held out.
    """
    options = data_options(trained.args, trained.preprocess, data_root=data_root)
    splits = split_data(options)
    if splits.fingerprint != trained.data_fingerprint:
        raise TrainingError(
            f"the {options.dataset} data under {options.data_root} differs from the data the "
            f"checkpoint was trained on (fingerprint {splits.fingerprint}, checkpoint has "
            f"{trained.data_fingerprint}); restore that data or retrain"
        )
    return splits


def make_loader(
    dataset: Dataset[tuple[torch.Tensor, int]], batch_size: int, workers: int = 0
) -> DataLoader[tuple[torch.Tensor, int]]:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


def evaluate_split(
    trained: TrainedModel,
    split_name: str,
    *,
    data_root: Path | None = None,
    batch_size: int = 256,
    splits: DataSplits | None = None,
) -> Evaluation:
    """Evaluate `trained` on its "val" or "test" split, preprocessed with the shared function."""
    if splits is None:
        splits = checkpoint_splits(trained, data_root=data_root)
    split = splits.val if split_name == "val" else splits.test
    dataset = build_dataset(split, trained.preprocess, cache_max_bytes=EVALUATION_CACHE_BYTES)
    criterion = nn.CrossEntropyLoss()
    return evaluate(trained.model, criterion, make_loader(dataset, batch_size))
