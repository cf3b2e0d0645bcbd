"""Read an ultralytics detection data set (data.yaml, images/, labels/) and fingerprint it.

Works for any data set in the standard layout: digits-scenes, COCO128 or a
Roboflow export. Split entries in data.yaml must be image folders; split
entries that are .txt lists of images are not supported here.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from training.classification.errors import DataNotFoundError, TrainingError

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataSet:
    """A parsed data.yaml: its file, root folder, class names and split image folders."""

    yaml_path: Path
    root: Path
    names: list[str]
    splits: dict[str, Path]

    def images(self, split: str) -> list[Path]:
        """Return the image files of `split`, sorted by name."""
        if split not in self.splits:
            raise TrainingError(
                f"{self.yaml_path} has no {split!r} split; it has {sorted(self.splits)}"
            )
        folder = self.splits[split]
        return sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)


def label_path(image_path: Path) -> Path:
    """Return the label file of an image: the last `images` folder becomes `labels`.

    This is the rule ultralytics applies (`img2label_paths`).
    """
    parts = list(image_path.with_suffix(".txt").parts)
    for position in range(len(parts) - 1, -1, -1):
        if parts[position] == "images":
            parts[position] = "labels"
            return Path(*parts)
    raise TrainingError(f"{image_path} is not inside an 'images' folder")


def read_labels(image_path: Path) -> np.ndarray:
    """Return the boxes of one image as float64 (N, 5): class, cx, cy, w, h (normalised).

    A missing label file means no objects, as in ultralytics.
    """
    path = label_path(image_path)
    if not path.exists():
        return np.zeros((0, 5), dtype=np.float64)
    rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if any(len(row) != 5 for row in rows):
        raise TrainingError(
            f"{path}: expected 5 values per line (class cx cy w h); segments are not supported"
        )
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def _names(raw: object, yaml_path: Path) -> list[str]:
    if isinstance(raw, dict):
        keys = sorted(int(key) for key in raw)
        if keys != list(range(len(keys))):
            raise TrainingError(f"{yaml_path}: class ids in 'names' must be 0..N-1, got {keys}")
        return [str(raw[key]) for key in keys]
    if isinstance(raw, list):
        return [str(name) for name in raw]
    raise TrainingError(f"{yaml_path}: 'names' must be a list or a mapping of id to name")


def load_data_yaml(yaml_path: Path) -> DataSet:
    """Parse data.yaml; relative split folders resolve against `path`, else the yaml's folder."""
    if not yaml_path.is_file():
        raise DataNotFoundError(
            f"data set file {yaml_path} not found; build one with "
            f"`python -m training.detection.dataset --output DIR`"
        )
    content = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    if not isinstance(content, dict) or "names" not in content:
        raise TrainingError(f"{yaml_path} is not an ultralytics data.yaml (no 'names' key)")
    # ultralytics resolves a relative `path` against its datasets_dir setting.
    # Relative to the yaml is the only portable reading here.
    root = (yaml_path.parent / (content.get("path") or "")).resolve()
    splits = {}
    for split in SPLITS:
        entry = content.get(split)
        if entry is None:
            continue
        if not isinstance(entry, str):
            raise TrainingError(f"{yaml_path}: split {split!r} must be one folder, got {entry!r}")
        folder = Path(entry) if Path(entry).is_absolute() else root / entry
        if not folder.is_dir():
            raise DataNotFoundError(f"{yaml_path}: {split} image folder {folder} not found")
        splits[split] = folder
    return DataSet(
        yaml_path=yaml_path, root=root, names=_names(content["names"], yaml_path), splits=splits
    )


def fingerprint(data: DataSet) -> str:
    """Return sha256 over every split's image and label files (relative paths and bytes)."""
    digest = hashlib.sha256()
    for split in sorted(data.splits):
        for image in data.images(split):
            for path in (image, label_path(image)):
                if not path.exists():
                    continue
                relative = Path(os.path.relpath(path, data.root)).as_posix()
                digest.update(f"{split}/{relative}\0".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"sha256:{digest.hexdigest()}"
