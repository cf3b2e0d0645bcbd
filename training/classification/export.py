"""Export a training checkpoint to the model repository as ONNX, after a parity check.

    python -m training.classification.export --checkpoint runs/digits-cnn/best.pt \\
        --repository models --name digits-cnn

Writes `<repository>/<name>/<version>/` with model.onnx, model.json, report.json,
reference.json (from the validation split), confusion_matrix.png, roc_curves.png
and, with --samples, held-out test images.
The export fails with exit status 1 and writes nothing when ONNX Runtime and
PyTorch disagree on the test split.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from services.common.metadata import MODEL_FILENAME, ModelMetadata, PreprocessSpec, write_metadata
from training.classification.checkpoint import TrainedModel, load_checkpoint, model_from_checkpoint
from training.classification.data import Split, build_dataset
from training.classification.engine import evaluate
from training.classification.errors import InvalidArgumentsError
from training.classification.evaluation import (
    EVALUATION_CACHE_BYTES,
    checkpoint_splits,
    make_loader,
    set_threads,
)
from training.classification.onnx_export import (
    DEFAULT_OPSET,
    DEFAULT_PARITY_ATOL,
    compare_with_onnx,
    export_onnx,
    exporter_versions,
    require_parity,
)
from training.classification.report import compute_report, softmax, write_report
from training.classification.repository import (
    SAMPLES_DIRNAME,
    SAMPLES_INDEX,
    SampleRecord,
    check_model_name,
    next_version,
    staged_version,
    write_samples,
)
from training.help_format import DefaultsHelpFormatter
from training.reference import ReferenceImages, png_bytes, write_reference_profile

logger = logging.getLogger(__name__)

MIN_OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    version_dir: Path
    metadata: ModelMetadata


def export_version(
    model: nn.Module,
    *,
    spec: PreprocessSpec,
    labels: list[str],
    repository: Path,
    name: str,
    version: int | None,
    parity_batches: Iterable[torch.Tensor],
    metrics: dict[str, Any],
    fingerprint: str | None,
    extra_metadata: dict[str, Any] | None = None,
    write_files: Callable[[Path], None] | None = None,
    reference: ReferenceImages | None = None,
    opset: int = DEFAULT_OPSET,
    atol: float = DEFAULT_PARITY_ATOL,
) -> ExportResult:
    """Export `model`, check parity on `parity_batches`, and publish one model version.

    `write_files` adds files (report, samples) to the staging folder before
    the rename. `reference` contains the images for reference.json, and without
    it the version has none. Any exception, ParityError included, leaves no version behind.
    """
    check_model_name(name)
    if opset < MIN_OPSET:
        raise InvalidArgumentsError(f"--opset must be at least {MIN_OPSET}, got {opset}")
    if version is None:
        version = next_version(repository, name)
    with staged_version(repository, name, version) as staging:
        onnx_path = staging / MODEL_FILENAME
        export_onnx(model, spec, onnx_path, opset=opset)
        parity = compare_with_onnx(model, onnx_path, parity_batches, atol=atol)
        require_parity(parity)
        if write_files is not None:
            write_files(staging)
        metadata = ModelMetadata(
            name=name,
            version=version,
            task="classification",
            labels=labels,
            preprocess=spec,
            metrics={**metrics, **parity.as_metrics()},
            training_data_fingerprint=fingerprint,
            exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
            exporter=exporter_versions(opset),
            **(extra_metadata or {}),
        )
        write_metadata(staging, metadata)
        if reference is not None:
            write_reference_profile(staging, metadata, reference)
    return ExportResult(version_dir=repository / name / str(version), metadata=metadata)


def sample_records(
    split: Split,
    labels: list[str],
    logits: np.ndarray,
    limit: int,
) -> list[SampleRecord]:
    """Return the first `limit` samples of `split` with the model's top-1 prediction."""
    probabilities = softmax(logits.astype(np.float64))
    records = []
    for position, index in enumerate(split.indices[:limit]):
        predicted = int(probabilities[position].argmax())
        records.append(
            SampleRecord(
                image=split.source.load_image(int(index)),
                source_index=int(index),
                label=labels[int(split.source.targets[index])],
                predicted_label=labels[predicted],
                predicted_probability=float(probabilities[position, predicted]),
            )
        )
    return records


def validation_images(split: Split, dataset: str) -> ReferenceImages:
    """Return the images of the validation split as PNG files, for reference.json."""
    files = (png_bytes(split.source.load_image(int(index))) for index in split.indices)
    return ReferenceImages(
        files=files,
        source=f"validation split of {dataset} ({len(split.indices)} images), encoded as PNG",
    )


def default_name(trained: TrainedModel) -> str:
    # A `timm:<name>` model gets `<dataset>-timm-<name>`, because ':' is not valid in a model name.
    return f"{trained.args['dataset']}-{trained.model_name}".lower().replace(":", "-")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a checkpoint to <repository>/<name>/<version>/ after a parity check.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="best.pt or last.pt")
    parser.add_argument("--repository", type=Path, default=Path("models"), help="model repository")
    parser.add_argument(
        "--name", default=None, help="model name (default: <dataset>-<model>, e.g. digits-cnn)"
    )
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        help="version number; None means one more than the newest existing version",
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    parser.add_argument(
        "--parity-atol",
        type=float,
        default=DEFAULT_PARITY_ATOL,
        help="max allowed abs difference between ONNX Runtime and PyTorch logits",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=0,
        help=f"write up to this many test images as PNG to {SAMPLES_DIRNAME}/ with "
        f"{SAMPLES_INDEX}, for sending them to the service",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="data set folder if it moved since training (default: the one in the checkpoint)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per parity batch")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")
    return parser


def main(args: argparse.Namespace) -> ExportResult:
    if args.parity_atol <= 0.0:
        raise InvalidArgumentsError(f"--parity-atol must be positive, got {args.parity_atol}")
    if args.samples < 0 or args.batch_size < 1:
        raise InvalidArgumentsError("--samples must not be negative and --batch-size positive")
    set_threads(args.threads)
    trained = model_from_checkpoint(load_checkpoint(args.checkpoint))
    name = args.name or default_name(trained)
    check_model_name(name)

    splits = checkpoint_splits(trained, data_root=args.data_root)
    test_set = build_dataset(
        splits.test, trained.preprocess, cache_max_bytes=EVALUATION_CACHE_BYTES
    )
    loader = make_loader(test_set, args.batch_size)
    test = evaluate(trained.model, torch.nn.CrossEntropyLoss(), loader)
    logits = test.logits.numpy()
    targets = test.targets.numpy()

    def write_files(staging: Path) -> None:
        write_report(
            logits,
            targets,
            trained.labels,
            staging,
            extra={"split": "test", "checkpoint": str(args.checkpoint), "epoch": trained.epoch},
        )
        if args.samples > 0:
            write_samples(
                staging, sample_records(splits.test, trained.labels, logits, args.samples)
            )

    report = compute_report(logits, targets, trained.labels)
    metrics = {
        "test_accuracy": report["accuracy"],
        "test_macro_f1": report["macro_avg"]["f1"],
        "test_weighted_f1": report["weighted_avg"]["f1"],
        "test_macro_roc_auc": report["macro_avg"]["roc_auc"],
        "test_samples": report["num_samples"],
    }
    result = export_version(
        trained.model,
        spec=trained.preprocess,
        labels=trained.labels,
        repository=args.repository,
        name=name,
        version=args.version,
        parity_batches=(inputs for inputs, _ in loader),
        metrics=metrics,
        fingerprint=trained.data_fingerprint,
        extra_metadata={
            "architecture": trained.model_name,
            "dataset": trained.args["dataset"],
            "checkpoint_epoch": trained.epoch,
            "report": "report.json",
        },
        write_files=write_files,
        reference=validation_images(splits.val, trained.args["dataset"]),
        opset=args.opset,
        atol=args.parity_atol,
    )
    print(
        f"{result.version_dir}: test accuracy {report['accuracy']:.4f}, "
        f"macro F1 {report['macro_avg']['f1']:.4f}, parity max abs logit difference "
        f"{result.metadata.metrics['parity_max_abs_diff']:.3g}"
    )
    return result


if __name__ == "__main__":
    from training.classification.cli import run

    run(get_args_parser(), main)
