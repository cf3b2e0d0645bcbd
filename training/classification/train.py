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
from torch.utils.data import DataLoader, Dataset

from services.common.metadata import PreprocessSpec
from training.classification.augment import (
    AugmentedDataset,
    MixingCollate,
    build_sample_transform,
)
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
from training.classification.models import check_weights_source
from training.classification.preprocessing import build_preprocess_spec
from training.classification.report import write_report
from training.classification.run_state import (
    RunState,
    build_run_state,
    checkpoint_payload,
    json_args,
    restore_run_state,
)
from training.classification.train_args import get_args_parser, merge_resumed_args, resolve_args
from training.classification.transfer_args import augment_options

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
    # Parameters that trained in the last epoch. Strategies freeze the others.
    trainable_parameters: int


def _make_loader(
    dataset: Dataset[tuple[torch.Tensor, int]],
    args: argparse.Namespace,
    *,
    train: bool,
    generator: torch.Generator | None = None,
    collate_fn: MixingCollate | None = None,
) -> Loader:
    # Batches of in-memory tensors are slices, so worker processes would only add start-up time.
    in_memory = isinstance(dataset, InMemoryDataset) or (
        isinstance(dataset, AugmentedDataset) and dataset.cached is not None
    )
    workers = 0 if in_memory else args.workers
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
        collate_fn=collate_fn,
    )


def _train_dataset(
    splits: DataSplits, spec: PreprocessSpec, args: argparse.Namespace, cache_bytes: int
) -> Dataset[tuple[torch.Tensor, int]]:
    options = augment_options(args)
    if not options.per_sample:
        return build_dataset(
            splits.train, spec, cache_max_bytes=cache_bytes, progress=args.progress
        )
    logger.info("augmenting training images: %s", options)
    return AugmentedDataset(
        splits.train,
        spec,
        build_sample_transform(options, spec),
        # The uint8 images take a quarter of the float32 tensors' memory.
        cache_max_bytes=cache_bytes,
        progress=args.progress,
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
        if name != "train"
    }
    datasets["train"] = _train_dataset(splits, spec, args, cache_bytes)
    options = augment_options(args)
    collate = MixingCollate(options, len(splits.classes)) if options.mixes_batches else None
    # A dedicated generator makes the shuffling order part of the checkpoint.
    generator = torch.Generator().manual_seed(args.seed)
    train_loader = _make_loader(
        datasets["train"], args, train=True, generator=generator, collate_fn=collate
    )
    val_loader = _make_loader(datasets["val"], args, train=False)
    test_loader = _make_loader(datasets["test"], args, train=False)
    return splits, train_loader, val_loader, test_loader


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # Makes any operation without a deterministic implementation raise instead
    # of silently giving different results between runs.
    torch.use_deterministic_algorithms(True)


def _append_log_row(path: Path, row: dict[str, float | int]) -> None:
    new_file = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        if new_file:
            writer.writeheader()
        writer.writerow(row)


def _prepare_run(args: argparse.Namespace) -> dict[str, Any] | None:
    """Resolve the options, merging those of --resume, and return the resumed checkpoint."""
    checkpoint = None
    if args.resume is not None:
        checkpoint = load_checkpoint(args.resume)
        merge_resumed_args(args, checkpoint["args"])
    resolve_args(args)
    if checkpoint is None:
        # Checked before the data set loads, which can take minutes.
        check_weights_source(args.model, args.weights, args.download_weights)
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

    state = build_run_state(args, splits, spec, train_loader, resuming=checkpoint is not None)
    # Created only now, so a run that fails while loading data or weights leaves no folder.
    output_dir: Path = args.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "args.json").write_text(json.dumps(json_args(args), indent=2) + "\n")
    start_epoch = 1
    if checkpoint is not None:
        start_epoch = restore_run_state(state, checkpoint)
        logger.info("resuming %s at epoch %d of %d", args.resume, start_epoch, args.epochs)
        if start_epoch > args.epochs:
            logger.warning("the checkpoint already finished %d epochs", args.epochs)

    last_epoch = start_epoch - 1
    # A resumed run that already finished its epochs reports the last epoch's count.
    trainable = state.schedule.start_epoch(min(start_epoch, args.epochs))
    for epoch in range(start_epoch, args.epochs + 1):
        epoch_started = time.perf_counter()
        trainable = state.schedule.start_epoch(epoch)
        # The head's group is last and gets the undiscounted lr.
        lr = state.optimizer.param_groups[-1]["lr"]
        train_stats = train_one_epoch(
            state.model,
            state.criterion,
            state.optimizer,
            train_loader,
            epoch=epoch,
            batch_scheduler=state.lr_scheduler if state.lr_per_batch else None,
            progress=args.progress,
            options=state.step_options,
        )
        if state.lr_scheduler is not None and not state.lr_per_batch:
            state.lr_scheduler.step()
        val = evaluate(state.evaluated_model, state.criterion, val_loader)
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
        monitored = val.loss if args.monitor == "val_loss" else val.accuracy
        improved = state.stopping.update(epoch, monitored)
        payload = checkpoint_payload(
            state, epoch=epoch, args=args, splits=splits, spec=spec, metrics=metrics
        )
        save_checkpoint(output_dir / "last.pt", payload)
        if improved:
            save_checkpoint(output_dir / "best.pt", payload)
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
        if state.stopping.should_stop:
            logger.info("early stop: %s did not improve for %d epochs", args.monitor, args.patience)
            break

    return _finish(args, state, test_loader, splits, last_epoch, started, trainable)


def _finish(
    args: argparse.Namespace,
    state: RunState,
    test_loader: Loader,
    splits: DataSplits,
    last_epoch: int,
    started: float,
    trainable_parameters: int,
) -> TrainingResult:
    """Evaluate best.pt (or last.pt when no epoch of this folder improved) on the test split."""
    output_dir: Path = args.output_dir
    best = output_dir / "best.pt"
    if not best.exists():
        logger.warning("%s has no best.pt; reporting on last.pt", output_dir)
        best = output_dir / "last.pt"
    best_state = load_checkpoint(best)
    state.model.load_state_dict(best_state["model"])
    test = evaluate(state.model, state.criterion, test_loader)
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
        trainable_parameters=trainable_parameters,
    )


if __name__ == "__main__":
    from training.classification.cli import run

    run(get_args_parser(), main)
