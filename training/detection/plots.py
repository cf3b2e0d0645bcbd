"""Precision-recall curve PNG of a detection evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from training.detection.metrics import DetectionMetrics

PR_CURVE_FILE = "pr_curve.png"
# Past about 20 classes the legend would cover the curves.
MAX_LEGEND_ENTRIES = 20


def plot_pr_curves(metrics: DetectionMetrics, names: Sequence[str], path: Path, title: str) -> Path:
    """Plot each class's precision envelope at IoU 0.5 over recall, and their mean in bold."""
    figure = Figure(figsize=(7, 6), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    present = np.flatnonzero(metrics.ground_truth_counts)
    for class_id in present:
        axes.plot(
            metrics.recall_grid,
            metrics.precision_at_iou50[class_id],
            linewidth=1,
            label=f"{names[int(class_id)]} AP50 {metrics.ap50[class_id]:.3f}",
        )
    if present.size:
        axes.plot(
            metrics.recall_grid,
            metrics.precision_at_iou50[present].mean(axis=0),
            color="black",
            linewidth=3,
            label=f"all classes mAP50 {metrics.map50:.3f}",
        )
    axes.set_xlabel("Recall")
    axes.set_ylabel("Precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_title(title)
    if len(present) <= MAX_LEGEND_ENTRIES:
        axes.legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    return path
