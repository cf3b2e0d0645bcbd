"""Train an image classifier, keeping checkpoints, a CSV log and a test report in one run folder.

    python -m training.classification.train --dataset digits --model cnn --output-dir runs/digits

Run folder contents: args.json, log.csv (one row per epoch), last.pt, best.pt
(best epoch by --monitor on the validation split) and report/ (test split
metrics of best.pt, written when training ends).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, Dataset

from services.common.metadata import PreprocessSpec
from training.classification.checkpoint import load_checkpoint, save_checkpoint
from training.classification.data import (
    SPLIT_NAMES,
    DataSplits,
    InMemoryDataset,
    build_dataset,
    data_options,
    split_data,
)
from training.classification.engine import evaluate, train_one_epoch
from training.classification.errors import InvalidArgumentsError
from training.classification.evaluation import set_threads
from training.classification.models import build_model
from training.classification.optim import (
    EarlyStopping,
    build_lr_scheduler,
    build_optimizer,
    steps_per_epoch,
)
from training.classification.preprocessing import build_preprocess_spec
from training.classification.report import write_report
from training.classification.train_args import get_args_parser, merge_resumed_args, resolve_args

logger = logging.getLogger(__name__)

LOG_FILENAME = "log.csv"
LOG_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
Loader = DataLoader[tuple[torch.Tensor, int]]


@dataclass(frozen=True)
class TrainingResult:
    output_dir: Path
    best_checkpoint: Path
    last_epoch: int
    test_accuracy: float
    test_macro_f1: float
    seconds: float


def _make_loader(
    dataset: Dataset[tuple[torch.Tensor, int]],
    args: argparse.Namespace,
    *,
    train: bool,
    generator: torch.Generator | None = None,
) -> Loader:
    # Batches of in-memory tensors are slices; worker processes would only add start-up time.
    workers = 0 if isinstance(dataset, InMemoryDataset) else args.workers
    # BatchNorm raises on a training batch of one sample, so a last batch of
    # exactly one sample is dropped.
    drop_last = train and len(dataset) % args.batch_size == 1  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=train,
        num_workers=workers,
        generator=generator,
        drop_last=drop_last,
    )


def load_data(
    args: argparse.Namespace, spec: PreprocessSpec
) -> tuple[DataSplits, Loader, Loader, Loader]:
    """Split the data set and return the splits with train, val and test loaders."""
    splits = split_data(data_options(vars(args), spec))
    cache_bytes = args.cache_max_mb * 1024 * 1024
    datasets = {
        name: build_dataset(
            getattr(splits, name), spec, cache_max_bytes=cache_bytes, progress=args.progress
        )
        for name in SPLIT_NAMES
    }
    # A dedicated generator makes the shuffling order part of the checkpoint.
    generator = torch.Generator().manual_seed(args.seed)
    train_loader = _make_loader(datasets["train"], args, train=True, generator=generator)
    val_loader = _make_loader(datasets["val"], args, train=False)
    test_loader = _make_loader(datasets["test"], args, train=False)
    return splits, train_loader, val_loader, test_loader


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # CPU kernels are deterministic for a fixed thread count; this makes any
    # nondeterministic kernel raise instead of silently differing between runs.
    torch.use_deterministic_algorithms(True)


def _json_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
    }


def _append_log_row(path: Path, row: dict[str, float | int]) -> None:
    new_file = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        if new_file:
            writer.writeheader()
        writer.writerow(row)


def _checkpoint_state(
    *,
    model: nn.Module,
    optimizer: Optimizer,
    lr_scheduler: LRScheduler | None,
    epoch: int,
    args: argparse.Namespace,
    splits: DataSplits,
    spec: PreprocessSpec,
    stopping: EarlyStopping,
    generator: torch.Generator,
    metrics: dict[str, float],
) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
        "epoch": epoch,
        "args": _json_args(args),
        "labels": splits.classes,
        "preprocess": spec.model_dump(mode="json"),
        "data_fingerprint": splits.fingerprint,
        "early_stopping": stopping.state_dict(),
        "metrics": metrics,
        "rng": {"torch": torch.get_rng_state(), "train_loader": generator.get_state()},
    }


def _prepare_run(args: argparse.Namespace) -> dict[str, Any] | None:
    """Resolve the options, merging those of --resume, and return the resumed checkpoint."""
    checkpoint = None
    if args.resume is not None:
        checkpoint = load_checkpoint(args.resume)
        merge_resumed_args(args, checkpoint["args"])
    resolve_args(args)
    if checkpoint is None and (args.output_dir / "last.pt").exists():
        raise InvalidArgumentsError(
            f"{args.output_dir} already contains a run (last.pt); pass "
            f"--resume {args.output_dir}/last.pt to continue it, or choose another --output-dir"
        )
    return checkpoint


def main(args: argparse.Namespace) -> TrainingResult:
    started = time.perf_counter()
    checkpoint = _prepare_run(args)
    set_threads(args.threads)
    _seed_everything(args.seed)
    output_dir: Path = args.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "args.json").write_text(json.dumps(_json_args(args), indent=2) + "\n")

    spec = build_preprocess_spec(
        model=args.model,
        dataset=args.dataset,
        image_size=args.image_size,
        color_mode=args.color_mode,
        resize=args.resize,
        crop_fraction=args.crop_fraction,
        interpolation=args.interpolation,
    )
    splits, train_loader, val_loader, test_loader = load_data(args, spec)
    if checkpoint is not None and checkpoint["data_fingerprint"] != splits.fingerprint:
        raise InvalidArgumentsError(
            f"the data differs from the data of {args.resume} (fingerprint {splits.fingerprint}, "
            f"checkpoint has {checkpoint['data_fingerprint']}); resume needs the same data"
        )

    model = build_model(
        args.model,
        num_classes=len(splits.classes),
        in_channels=spec.channels,
        image_size=spec.height,
        dropout=args.dropout,
        weights=args.weights,
        download_weights=args.download_weights,
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
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
    stopping = EarlyStopping(args.monitor, args.patience, args.min_delta)
    generator = train_loader.generator
    if generator is None:
        raise RuntimeError("the training loader has no generator")

    start_epoch = 1
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if lr_scheduler is not None:
            lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        stopping.load_state_dict(checkpoint["early_stopping"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        generator.set_state(checkpoint["rng"]["train_loader"])
        start_epoch = int(checkpoint["epoch"]) + 1
        logger.info("resuming %s at epoch %d of %d", args.resume, start_epoch, args.epochs)
        if start_epoch > args.epochs:
            logger.warning("the checkpoint already finished %d epochs", args.epochs)

    last_epoch = start_epoch - 1
    for epoch in range(start_epoch, args.epochs + 1):
        epoch_started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_stats = train_one_epoch(
            model,
            criterion,
            optimizer,
            train_loader,
            epoch=epoch,
            batch_scheduler=lr_scheduler if per_batch else None,
            progress=args.progress,
        )
        if lr_scheduler is not None and not per_batch:
            lr_scheduler.step()
        val = evaluate(model, criterion, val_loader)
        metrics = {
            "epoch": epoch,
            "train_loss": train_stats.loss,
            "train_acc": train_stats.accuracy,
            "val_loss": val.loss,
            "val_acc": val.accuracy,
            "lr": lr,
            "seconds": round(time.perf_counter() - epoch_started, 3),
        }
        _append_log_row(output_dir / LOG_FILENAME, metrics)
        improved = stopping.update(epoch, val.loss if args.monitor == "val_loss" else val.accuracy)
        state = _checkpoint_state(
            model=model,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            epoch=epoch,
            args=args,
            splits=splits,
            spec=spec,
            stopping=stopping,
            generator=generator,
            metrics=metrics,
        )
        save_checkpoint(output_dir / "last.pt", state)
        if improved:
            save_checkpoint(output_dir / "best.pt", state)
        logger.info(
            "epoch %d/%d: train loss %.4f acc %.4f, val loss %.4f acc %.4f, lr %.2e, %.1f s%s",
            epoch,
            args.epochs,
            train_stats.loss,
            train_stats.accuracy,
            val.loss,
            val.accuracy,
            lr,
            metrics["seconds"],
            " (best)" if improved else "",
        )
        last_epoch = epoch
        if stopping.should_stop:
            logger.info("early stop: %s did not improve for %d epochs", args.monitor, args.patience)
            break

    return _finish(args, model, criterion, test_loader, splits, last_epoch, started)


def _finish(
    args: argparse.Namespace,
    model: nn.Module,
    criterion: nn.Module,
    test_loader: Loader,
    splits: DataSplits,
    last_epoch: int,
    started: float,
) -> TrainingResult:
    """Evaluate best.pt (or last.pt when no epoch of this folder improved) on the test split."""
    output_dir: Path = args.output_dir
    best = output_dir / "best.pt"
    if not best.exists():
        logger.warning("%s has no best.pt; reporting on last.pt", output_dir)
        best = output_dir / "last.pt"
    best_state = load_checkpoint(best)
    model.load_state_dict(best_state["model"])
    test = evaluate(model, criterion, test_loader)
    report = write_report(
        test.logits.numpy(),
        test.targets.numpy(),
        splits.classes,
        output_dir / "report",
        extra={"split": "test", "checkpoint": best.name, "epoch": best_state["epoch"]},
    )
    seconds = time.perf_counter() - started
    logger.info(
        "test accuracy %.4f (epoch %d of %s), run took %.1f s",
        test.accuracy,
        best_state["epoch"],
        best.name,
        seconds,
    )
    return TrainingResult(
        output_dir=output_dir,
        best_checkpoint=best,
        last_epoch=last_epoch,
        test_accuracy=test.accuracy,
        test_macro_f1=report["macro_avg"]["f1"],
        seconds=seconds,
    )


if __name__ == "__main__":
    from training.classification.cli import run

    run(get_args_parser(), main)
