"""Model repository layout `<repository>/<name>/<version>/`, with atomically written versions.

A version folder contains model.onnx, model.json, the evaluation report and
optionally `samples/`. It is assembled in a hidden staging folder beside the
versions and renamed into place in one step, so readers never see a partial
version and a failed export leaves nothing behind.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from training.classification.errors import InvalidArgumentsError, TrainingError

logger = logging.getLogger(__name__)

SAMPLES_DIRNAME = "samples"
SAMPLES_INDEX = "index.csv"
STAGING_PREFIX = ".staging-"
_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def check_model_name(name: str) -> None:
    # Same rule as ModelMetadata.name, checked before any work is done.
    if not _NAME_PATTERN.match(name) or len(name) > 64:
        raise InvalidArgumentsError(
            f"invalid model name {name!r}: use at most 64 lowercase letters, digits, '.', '_' "
            f"or '-', starting with a letter or digit"
        )


def existing_versions(repository: Path, name: str) -> list[int]:
    """Return the integer version folders of model `name`, in ascending order."""
    model_dir = repository / name
    if not model_dir.is_dir():
        return []
    return sorted(
        int(entry.name) for entry in model_dir.iterdir() if entry.is_dir() and entry.name.isdigit()
    )


def next_version(repository: Path, name: str) -> int:
    versions = existing_versions(repository, name)
    return versions[-1] + 1 if versions else 1


@contextmanager
def staged_version(repository: Path, name: str, version: int) -> Iterator[Path]:
    """Yield an empty staging folder, then rename it to `<repository>/<name>/<version>`.

    The staging folder is removed when the block raises, and the rename never
    replaces an existing version.
    """
    if version < 1:
        raise InvalidArgumentsError(f"--version must be at least 1, got {version}")
    final = repository / name / str(version)
    if final.exists():
        raise InvalidArgumentsError(
            f"{final} already exists; pass another --version or remove that folder"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-", dir=final.parent))
    try:
        yield staging
        staging.chmod(0o755)
        if final.exists():
            raise TrainingError(f"{final} appeared while exporting; kept the existing folder")
        # rename(2) is atomic within one file system and fails on a non-empty target.
        os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("wrote model version %s", final)


@dataclass(frozen=True)
class SampleRecord:
    """One held-out image written to `samples/` with what the PyTorch model predicted for it."""

    image: Image.Image
    source_index: int
    label: str
    predicted_label: str
    predicted_probability: float


def write_samples(version_dir: Path, records: list[SampleRecord]) -> Path:
    """Write each image as a lossless PNG under `samples/<label>/` and list them in index.csv.

    index.csv columns: file (relative to samples/), source_index (position in
    the data set), label, predicted_label and predicted_probability of the
    exported model in PyTorch. Sending a file to the service should give the
    same prediction, because PNG keeps every pixel that training preprocessed.
    """
    samples_dir = version_dir / SAMPLES_DIRNAME
    samples_dir.mkdir()
    rows = []
    for position, record in enumerate(records):
        label_dir = samples_dir / _safe_folder_name(record.label)
        label_dir.mkdir(exist_ok=True)
        path = label_dir / f"{position:05d}.png"
        record.image.save(path, format="PNG")
        rows.append(
            {
                "file": path.relative_to(samples_dir).as_posix(),
                "source_index": record.source_index,
                "label": record.label,
                "predicted_label": record.predicted_label,
                "predicted_probability": f"{record.predicted_probability:.6f}",
            }
        )
    index = samples_dir / SAMPLES_INDEX
    with index.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
    return index


def _safe_folder_name(label: str) -> str:
    # Labels such as "airplane" are used as they are; anything that is not a
    # plain file name character becomes "_".
    return re.sub(r"[^A-Za-z0-9._-]", "_", label) or "_"
