"""Deterministic train/val/test splits, the training data fingerprint and tensor data sets."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset
from tqdm import tqdm

from services.common.metadata import PreprocessSpec
from services.common.preprocess import draft_request, preprocess
from training.classification.errors import TrainingError
from training.classification.sources import (
    ImageFolderSource,
    ImageSource,
    load_digits_source,
    load_faces_source,
    load_torchvision_source,
)

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """The samples `indices` (sorted) of `source` that form one split."""

    source: ImageSource
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> np.ndarray:
        return self.source.targets[self.indices]


@dataclass(frozen=True)
class DataSplits:
    train: Split
    val: Split
    test: Split
    classes: list[str]
    fingerprint: str


@dataclass(frozen=True)
class DataOptions:
    """Everything that decides which samples land in which split."""

    dataset: str
    data_root: Path
    seed: int = 0
    val_fraction: float = 0.15
    # Ignored by mnist and cifar10, which have an official test set.
    test_fraction: float | None = 0.15
    max_samples: int | None = None
    download: bool = False
    max_image_pixels: int = 50_000_000
    draft_size: tuple[int, int] | None = None


def data_options(
    args: Mapping[str, Any], spec: PreprocessSpec, *, data_root: Path | None = None
) -> DataOptions:
    """Build DataOptions from training arguments (an argparse namespace as a dict).

    `data_root` replaces the stored folder, for data that moved since training.
    """
    return DataOptions(
        dataset=args["dataset"],
        data_root=Path(data_root or args["data_root"] or "."),
        seed=args["seed"],
        val_fraction=args["val_fraction"],
        test_fraction=args["test_fraction"],
        max_samples=args["max_samples"],
        download=args.get("download", False),
        max_image_pixels=args["max_image_pixels"],
        # The classifier service decodes JPEGs with this draft size too, so
        # training gets the same pixels as serving.
        draft_size=draft_request(spec),
    )


def _stratified_subset(
    indices: np.ndarray, targets: np.ndarray, size: int | None, seed: int
) -> np.ndarray:
    if size is None or size >= len(indices):
        return indices
    chosen, _ = train_test_split(indices, train_size=size, stratify=targets, random_state=seed)
    return np.sort(chosen)


def _split_off(
    indices: np.ndarray, targets: np.ndarray, fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split `indices` into (rest, part) with `part` a stratified `fraction` of them."""
    try:
        rest, part = train_test_split(
            indices, test_size=fraction, stratify=targets, random_state=seed
        )
    except ValueError as error:
        raise TrainingError(
            f"cannot carve a stratified {what} split of {fraction:.0%} from {len(indices)} "
            f"samples: {error}. Use more samples per class or another fraction"
        ) from error
    return np.sort(rest), np.sort(part)


def fingerprint_splits(dataset: str, splits: dict[str, Split]) -> str:
    """Hash the data set name, and for each split its sample ids, contents and labels.

    Any change of a sample, a label, the seed or the split fractions changes
    the result. Returns "sha256:<hex>".
    """
    digest = hashlib.sha256(f"dataset={dataset}\n".encode())
    for name, split in splits.items():
        digest.update(f"split={name} source={split.source.name} n={len(split)}\n".encode())
        for index in split.indices:
            sample = split.source.sample_digest(int(index))
            label = int(split.source.targets[index])
            digest.update(f"{int(index)}:{label}:{len(sample)}:".encode())
            digest.update(sample)
    return "sha256:" + digest.hexdigest()


def split_data(options: DataOptions) -> DataSplits:
    """Load the data set and split it deterministically for `options.seed`.

    digits, faces and imagefolder are split three ways. mnist and cifar10 keep their
    official test set and carve the validation split from the training set.
    """
    seed = options.seed
    if options.dataset in ("digits", "faces", "imagefolder"):
        source: ImageSource
        if options.dataset == "digits":
            source = load_digits_source()
        elif options.dataset == "faces":
            source = load_faces_source()
        else:
            source = ImageFolderSource(
                options.data_root,
                max_pixels=options.max_image_pixels,
                draft_size=options.draft_size,
            )
        test_fraction = options.test_fraction
        if test_fraction is None:
            raise TrainingError(f"{options.dataset} needs a test fraction; set --test-fraction")
        everything = np.arange(len(source))
        everything = _stratified_subset(everything, source.targets, options.max_samples, seed)
        rest, test = _split_off(everything, source.targets[everything], test_fraction, seed, "test")
        # The validation fraction is of the whole data set, not of what remains.
        val_share = options.val_fraction / (1.0 - test_fraction)
        train, val = _split_off(rest, source.targets[rest], val_share, seed, "validation")
        splits = {
            "train": Split(source, train),
            "val": Split(source, val),
            "test": Split(source, test),
        }
    elif options.dataset in ("mnist", "cifar10"):
        root = options.data_root
        train_source = load_torchvision_source(
            options.dataset, root, train=True, download=options.download
        )
        test_source = load_torchvision_source(
            options.dataset, root, train=False, download=options.download
        )
        train_all = _stratified_subset(
            np.arange(len(train_source)), train_source.targets, options.max_samples, seed
        )
        test = _stratified_subset(
            np.arange(len(test_source)), test_source.targets, options.max_samples, seed
        )
        train, val = _split_off(
            train_all, train_source.targets[train_all], options.val_fraction, seed, "validation"
        )
        splits = {
            "train": Split(train_source, train),
            "val": Split(train_source, val),
            "test": Split(test_source, test),
        }
        source = train_source
    else:
        raise TrainingError(f"unknown data set {options.dataset!r}")

    fingerprint = fingerprint_splits(options.dataset, splits)
    logger.info(
        "data set %s: %d train, %d val, %d test samples, %d classes, fingerprint %s",
        options.dataset,
        len(splits["train"]),
        len(splits["val"]),
        len(splits["test"]),
        len(source.classes),
        fingerprint,
    )
    return DataSplits(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        classes=list(source.classes),
        fingerprint=fingerprint,
    )


class PreprocessedDataset(Dataset[tuple[torch.Tensor, int]]):
    """Loads and preprocesses each sample on access with the shared `preprocess`."""

    def __init__(self, split: Split, spec: PreprocessSpec) -> None:
        self.split = split
        self.spec = spec

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        index = int(self.split.indices[position])
        image = self.split.source.load_image(index)
        tensor = torch.from_numpy(preprocess(image, self.spec))
        return tensor, int(self.split.source.targets[index])


class InMemoryDataset(Dataset[tuple[torch.Tensor, int]]):
    """Preprocessed inputs of shape (N, C, H, W) and their targets."""

    def __init__(self, inputs: torch.Tensor, targets: np.ndarray) -> None:
        self.inputs = inputs
        self.targets = [int(target) for target in targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        return self.inputs[position], self.targets[position]


def tensor_bytes(split: Split, spec: PreprocessSpec) -> int:
    """Return the memory that the preprocessed float32 tensors of `split` take, in bytes."""
    return len(split) * spec.channels * spec.height * spec.width * 4


def build_dataset(
    split: Split, spec: PreprocessSpec, *, cache_max_bytes: int, progress: bool = False
) -> Dataset[tuple[torch.Tensor, int]]:
    """Return the split as a data set of (input tensor, target) pairs.

    Preprocesses everything once into one tensor when that takes at most
    `cache_max_bytes`, because the data loader then only slices memory.
    """
    lazy = PreprocessedDataset(split, spec)
    if tensor_bytes(split, spec) > cache_max_bytes:
        return lazy
    inputs = torch.empty((len(split), spec.channels, spec.height, spec.width))
    for position in tqdm(range(len(split)), desc="preprocess", unit="img", disable=not progress):
        inputs[position] = lazy[position][0]
    return InMemoryDataset(inputs, split.targets)


@dataclass(frozen=True)
class DigitsTestSplit:
    """The held-out digits test images (uint8, 8x8, white digit on black) and labels."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray


def digits_test_split(
    seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> DigitsTestSplit:
    """Return the digits test split that training with the same arguments holds out.

    `indices` are positions in `sklearn.datasets.load_digits()`.
    """
    options = DataOptions(
        dataset="digits",
        data_root=Path("."),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    test = split_data(options).test
    images = np.stack(
        [np.asarray(test.source.load_image(int(i)).convert("L")) for i in test.indices]
    )
    return DigitsTestSplit(images=images, labels=test.targets, indices=test.indices)
