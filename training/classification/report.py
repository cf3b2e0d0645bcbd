"""Evaluation report of a classifier: metrics in `report.json`, confusion matrix and ROC PNGs.

    python -m training.classification.report --checkpoint runs/digits-cnn/best.pt \\
        --output-dir runs/digits-cnn/report
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import (
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

REPORT_FILENAME = "report.json"
CONFUSION_MATRIX_FILENAME = "confusion_matrix.png"
ROC_CURVES_FILENAME = "roc_curves.png"
REPORT_FILES = (REPORT_FILENAME, CONFUSION_MATRIX_FILENAME, ROC_CURVES_FILENAME)
# Beyond these class counts the per-class annotations and curves are unreadable,
# so the plots fall back to a plain heat map and the macro-average curve.
MAX_ANNOTATED_CLASSES = 20
MAX_TICK_LABELS = 50

logger = logging.getLogger(__name__)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    probabilities: np.ndarray = exponentials / exponentials.sum(axis=1, keepdims=True)
    return probabilities


def _roc_auc_per_class(probabilities: np.ndarray, targets: np.ndarray) -> list[float | None]:
    # One-vs-rest ROC AUC is undefined for a class that has no positive or no
    # negative sample in the split; such classes get None.
    scores: list[float | None] = []
    for class_index in range(probabilities.shape[1]):
        positives = targets == class_index
        if positives.all() or not positives.any():
            scores.append(None)
        else:
            scores.append(float(roc_auc_score(positives, probabilities[:, class_index])))
    return scores


def _mean_or_none(values: list[float | None]) -> float | None:
    defined = [value for value in values if value is not None]
    return float(np.mean(defined)) if defined else None


def compute_report(logits: np.ndarray, targets: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Compute accuracy, per-class and averaged precision/recall/F1/support and ROC AUC.

    `logits` has shape (N, classes) and `targets` contains class indices (N,).
    Macro averages weight classes equally and weighted averages weight them by
    support. `macro_avg.roc_auc` averages the classes whose AUC is defined.
    """
    class_indices = list(range(len(labels)))
    predictions = logits.argmax(axis=1)
    probabilities = softmax(logits.astype(np.float64))
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predictions, labels=class_indices, zero_division=0
    )
    roc_auc = _roc_auc_per_class(probabilities, targets)
    per_class = {
        label: {
            "precision": float(precision[index]),
            "recall": float(recall[index]),
            "f1": float(f1[index]),
            "support": int(support[index]),
            "roc_auc": roc_auc[index],
        }
        for index, label in enumerate(labels)
    }
    averages: dict[str, dict[str, Any]] = {}
    for average in ("macro", "weighted"):
        avg_precision, avg_recall, avg_f1, _ = precision_recall_fscore_support(
            targets, predictions, labels=class_indices, average=average, zero_division=0
        )
        averages[average] = {
            "precision": float(avg_precision),
            "recall": float(avg_recall),
            "f1": float(avg_f1),
            "support": len(targets),
        }
    averages["macro"]["roc_auc"] = _mean_or_none(roc_auc)
    matrix = confusion_matrix(targets, predictions, labels=class_indices)
    return {
        "num_samples": len(targets),
        "accuracy": float((predictions == targets).mean()),
        "per_class": per_class,
        "macro_avg": averages["macro"],
        "weighted_avg": averages["weighted"],
        "confusion_matrix": {
            "labels": labels,
            "rows": "true class",
            "columns": "predicted class",
            "matrix": matrix.tolist(),
        },
    }


def plot_confusion_matrix(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    size = min(4.0 + 0.4 * len(labels), 30.0)
    figure = Figure(figsize=(size, size))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Confusion matrix")
    if len(labels) <= MAX_TICK_LABELS:
        positions = range(len(labels))
        axes.set_xticks(positions, labels, rotation=90)
        axes.set_yticks(positions, labels)
    if len(labels) <= MAX_ANNOTATED_CLASSES:
        threshold = matrix.max() / 2.0
        for row in range(matrix.shape[0]):
            for column in range(matrix.shape[1]):
                value = int(matrix[row, column])
                color = "white" if value > threshold else "black"
                axes.text(column, row, str(value), ha="center", va="center", color=color)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_roc_curves(
    probabilities: np.ndarray, targets: np.ndarray, labels: list[str], path: Path
) -> None:
    figure = Figure(figsize=(7.0, 6.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    grid = np.linspace(0.0, 1.0, 201)
    interpolated: list[np.ndarray] = []
    for class_index, label in enumerate(labels):
        positives = targets == class_index
        if positives.all() or not positives.any():
            continue
        false_positive_rate, true_positive_rate, _ = roc_curve(
            positives, probabilities[:, class_index]
        )
        interpolated.append(np.interp(grid, false_positive_rate, true_positive_rate))
        if len(labels) <= MAX_ANNOTATED_CLASSES:
            area = roc_auc_score(positives, probabilities[:, class_index])
            axes.plot(false_positive_rate, true_positive_rate, lw=1, label=f"{label} ({area:.3f})")
    if interpolated:
        macro_curve = np.mean(interpolated, axis=0)
        macro_area = float(np.trapezoid(macro_curve, grid))
        axes.plot(grid, macro_curve, "k-", lw=2, label=f"macro average ({macro_area:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", lw=1)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("One-vs-rest ROC curves (AUC)")
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_report(
    logits: np.ndarray,
    targets: np.ndarray,
    labels: list[str],
    output_dir: Path,
    *,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute the report, write `report.json` and both PNGs into `output_dir`, return the report.

    `extra` entries (split name, checkpoint path, ...) are stored at the top level.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    report = {**(extra or {}), **compute_report(logits, targets, labels)}
    report["files"] = {
        "confusion_matrix": CONFUSION_MATRIX_FILENAME,
        "roc_curves": ROC_CURVES_FILENAME,
    }
    matrix = np.asarray(report["confusion_matrix"]["matrix"])
    plot_confusion_matrix(matrix, labels, output_dir / CONFUSION_MATRIX_FILENAME)
    plot_roc_curves(
        softmax(logits.astype(np.float64)), targets, labels, output_dir / ROC_CURVES_FILENAME
    )
    # json.dumps writes NaN for float("nan"), which is not valid JSON.
    text = json.dumps(report, indent=2, allow_nan=False)
    (output_dir / REPORT_FILENAME).write_text(text + "\n", encoding="utf-8")
    logger.info(
        "report: accuracy %.4f, macro F1 %.4f on %d samples, written to %s",
        report["accuracy"],
        report["macro_avg"]["f1"],
        report["num_samples"],
        output_dir,
    )
    return report


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evaluate a training checkpoint on one split and write the report.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="best.pt or last.pt")
    parser.add_argument(
        "--output-dir", type=Path, required=True, help="folder for report.json and the PNGs"
    )
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="data set folder if it moved since training (default: the one in the checkpoint)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")
    return parser


def main(args: argparse.Namespace) -> dict[str, Any]:
    from training.classification.checkpoint import load_checkpoint, model_from_checkpoint
    from training.classification.evaluation import evaluate_split, set_threads

    set_threads(args.threads)
    trained = model_from_checkpoint(load_checkpoint(args.checkpoint))
    evaluation = evaluate_split(
        trained, args.split, data_root=args.data_root, batch_size=args.batch_size
    )
    return write_report(
        evaluation.logits.numpy(),
        evaluation.targets.numpy(),
        trained.labels,
        args.output_dir,
        extra={"split": args.split, "checkpoint": str(args.checkpoint), "epoch": trained.epoch},
    )


if __name__ == "__main__":
    from training.classification.cli import run

    run(get_args_parser(), main)
