"""Image sources: the raw samples of each supported data set, before preprocessing.

A source returns decoded RGB PIL images, integer targets and a per-sample
digest for the training data fingerprint. Preprocessing happens later, through
`services.common.preprocess.preprocess`, so training sees the tensors that
serving computes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from training.classification.errors import DataNotFoundError, TrainingError

DATASETS = ("digits", "faces", "mnist", "cifar10", "imagefolder")
FACES_CLASSES = ["face", "non-face"]


class ImageSource(Protocol):
    """Indexed samples of one data set part (for example the MNIST training set)."""

    name: str
    classes: list[str]
    targets: np.ndarray

    def __len__(self) -> int: ...

    def load_image(self, index: int) -> Image.Image:
        """Return sample `index` as an RGB image."""
        ...

    def sample_digest(self, index: int) -> bytes:
        """Return bytes that change whenever the content or the id of sample `index` changes."""
        ...


class ArraySource:
    """Samples held in memory as a uint8 array of shape (N, H, W) or (N, H, W, 3)."""

    def __init__(
        self, name: str, images: np.ndarray, targets: np.ndarray, classes: list[str]
    ) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise TrainingError(
                f"{name}: expected uint8 images of shape (N, H, W) or (N, H, W, 3), "
                f"got {images.dtype} {images.shape}"
            )
        self.name = name
        self.images = np.ascontiguousarray(images)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = classes

    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index]).convert("RGB")

    def sample_digest(self, index: int) -> bytes:
        return self.images[index].tobytes()


def digits_images_uint8(values: np.ndarray) -> np.ndarray:
    """Scale scikit-learn digits pixel values (0-16) to uint8 grayscale (0-255)."""
    return np.round(values * (255.0 / 16.0)).astype(np.uint8)


def load_digits_source() -> ArraySource:
    """Return the 1,797 8x8 handwritten digits that ship with scikit-learn."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = digits_images_uint8(bunch.images)
    return ArraySource("digits", images, bunch.target, [str(label) for label in range(10)])


def load_faces_source() -> ArraySource:
    """Return the 200 25x25 grayscale images of `skimage.data.lfw_subset()`.

    scikit-image ships the array in its package data, so nothing is downloaded.
    The first 100 images are faces from Labeled Faces in the Wild and the last
    100 are not faces, so the targets are 0 (face) and then 1 (non-face).
    """
    from skimage.data import lfw_subset

    # scikit-image 0.26 returns float64 values in [0, 1], although its docstring states uint8.
    images = np.round(lfw_subset() * 255.0).astype(np.uint8)
    half = len(images) // 2
    targets = np.repeat(np.arange(len(FACES_CLASSES)), [half, len(images) - half])
    return ArraySource("faces", images, targets, list(FACES_CLASSES))


def load_torchvision_source(
    dataset: str, root: Path, *, train: bool, download: bool
) -> ArraySource:
    """Return the MNIST or CIFAR-10 training or test set stored under `root`.

    Downloads only when `download` is true. A missing data set raises
    DataNotFoundError naming the folder and the `--download` flag.
    """
    from torchvision import datasets

    part = "train" if train else "test"
    try:
        if dataset == "mnist":
            mnist = datasets.MNIST(str(root), train=train, download=download)
            return ArraySource(
                f"mnist-{part}",
                mnist.data.numpy(),
                mnist.targets.numpy(),
                [str(label) for label in range(10)],
            )
        if dataset == "cifar10":
            cifar = datasets.CIFAR10(str(root), train=train, download=download)
            return ArraySource(
                f"cifar10-{part}", cifar.data, np.asarray(cifar.targets), list(cifar.classes)
            )
    except RuntimeError as error:
        # torchvision raises RuntimeError("Dataset not found ...") when the
        # files are absent and download is false.
        if download:
            raise
        raise DataNotFoundError(
            f"{dataset} {part} set not found under {root} ({error}); "
            f"pass --download to fetch it there, or set --data-root to the folder that holds it"
        ) from error
    raise TrainingError(f"{dataset!r} is not a torchvision data set; choose mnist or cifar10")


class ImageFolderSource:
    """Image files in `root/<class name>/...`, decoded by the shared service decoder."""

    def __init__(self, root: Path, *, max_pixels: int, draft_size: tuple[int, int] | None) -> None:
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        if not root.is_dir():
            raise DataNotFoundError(
                f"image folder {root} not found; set --data-root to a folder with one "
                f"subfolder of images per class"
            )
        try:
            classes, class_to_index = find_classes(str(root))
            samples = make_dataset(str(root), class_to_index, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as error:
            raise DataNotFoundError(f"no usable images under {root}: {error}") from error
        self.name = f"imagefolder:{root.name}"
        self.root = root
        self.classes = classes
        self.paths = [Path(path) for path, _ in samples]
        self.targets = np.asarray([target for _, target in samples], dtype=np.int64)
        self.max_pixels = max_pixels
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, index: int) -> Image.Image:
        from services.common.imaging import decode_image

        path = self.paths[index]
        try:
            decoded = decode_image(
                path.read_bytes(), max_pixels=self.max_pixels, draft_size=self.draft_size
            )
        except Exception as error:
            # The decoder raises its own error types for corrupt, oversized and
            # unsupported images; the file name is what the user needs to fix it.
            raise TrainingError(f"cannot decode {path}: {error}") from error
        image: Image.Image = decoded.image
        return image

    def sample_digest(self, index: int) -> bytes:
        path = self.paths[index]
        relative = path.relative_to(self.root).as_posix().encode()
        return relative + b"\0" + hashlib.sha256(path.read_bytes()).digest()
