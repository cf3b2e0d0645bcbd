"""Held-out handwritten digits that the exporter saved beside `digits-cnn`.

The exporter writes every test-split image as a PNG under `samples/` of the
model version, and `samples/index.csv` records the label and the prediction
that PyTorch made at export time. Sending those same files through the service
shows that serving reproduces the training evaluation.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from services.common.metadata import read_metadata
from services.common.repository import scan_versions


@dataclass(frozen=True)
class DigitSample:
    """One held-out digit: its PNG bytes, true label and the training-time prediction."""

    path: Path
    png: bytes
    label: str
    training_prediction: str


def newest_version_dir(repository: Path, model: str) -> Path:
    versions = scan_versions(repository).get(model)
    if not versions:
        raise FileNotFoundError(
            f"no version of {model} in {repository}; build it with "
            f"`python -m training.classification.build_defaults --repository {repository}`"
        )
    return repository / model / str(versions[-1])


def load_digit_samples(repository: Path, model: str) -> tuple[list[DigitSample], float]:
    """Return the saved test digits of the newest version and its reported test accuracy."""
    version_dir = newest_version_dir(repository, model)
    samples_dir = version_dir / "samples"
    with (samples_dir / "index.csv").open(newline="", encoding="utf-8") as index:
        samples = [
            DigitSample(
                path=samples_dir / row["file"],
                png=(samples_dir / row["file"]).read_bytes(),
                label=row["label"],
                training_prediction=row["predicted_label"],
            )
            for row in csv.DictReader(index)
        ]
    accuracy = float(read_metadata(version_dir).metrics["test_accuracy"])
    return samples, accuracy
