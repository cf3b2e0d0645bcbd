"""Data sets of the transfer-learning experiment: splits, batch size, augmentation and page text.

Each data set keeps about 10 training images per class, so the experiment
compares the same arms on images unlike ImageNet (digits) and on images close
to photos (faces).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TransferDataset:
    """The `train` options and the page text that differ between the experiment's data sets."""

    name: str
    data_options: tuple[str, ...]
    quick_data_options: tuple[str, ...]
    batch_size: int
    augmentation_options: tuple[str, ...]
    # Completes "Augmentation, when on: `<options>` (...)." on the page.
    augmentation_text: str
    scratch_image_size: int
    # Completes "The scratch CNN reads NxN grayscale, ...".
    scratch_size_reason: str
    # Completes "Data: ... (`<data options>`), split stratified per seed: ...".
    data_text: str
    # One paragraph under the page's introduction that links the other page.
    see_also: str
    # The first bullet of the page's limits section.
    limits_text: str


DIGITS = TransferDataset(
    name="digits",
    # 600 stratified digits: 75% (450) for the test split, 1/12 (50) for
    # validation and the remaining 100, about 10 per class, for training.
    data_options=(
        "--dataset", "digits",
        "--max-samples", "600",
        "--test-fraction", "0.75",
        "--val-fraction", "0.0833333",
    ),
    quick_data_options=(
        "--dataset", "digits",
        "--max-samples", "300",
        "--test-fraction", "0.75",
        "--val-fraction", "0.0833333",
    ),
    batch_size=25,
    augmentation_options=(
        "--crop-scale", "0.7",
        "--rotation", "10",
        "--scale-jitter", "0.1",
        "--color-jitter", "0.3",
    ),
    augmentation_text="random resized crop, rotation, zoom and colour jitter; digits are not "
    "mirror-symmetric, so no flips",
    scratch_image_size=16,
    scratch_size_reason="the size of the project's digits recipe, because upscaled 8x8 digits "
    "hold no more detail",
    data_text="scikit-learn's 8x8 handwritten digits",
    see_also="The same experiment on photo-like images, 25x25 grayscale faces and non-faces, "
    "is on [Transfer learning with little data: faces](transfer-learning-faces.md).",
    limits_text="- One data set: 8x8 grayscale digits upscaled to the pretrained input size "
    "look nothing like the ImageNet photos the backbone learned from. Photos closer to "
    "ImageNet may rank the arms differently; [the faces page](transfer-learning-faces.md) "
    "runs the same arms on 25x25 photo crops.",
)  # fmt: skip

FACES = TransferDataset(
    name="faces",
    # 200 images, 100 per class: 80% (160) for the test split and about 10%
    # (20) for validation, which leaves 20, 10 per class, for training. 0.0999
    # and not 0.1, because 0.1 / (1 - 0.8) rounds above 0.5 in floating point
    # and scikit-learn then moves a 21st image into validation.
    data_options=(
        "--dataset", "faces",
        "--test-fraction", "0.8",
        "--val-fraction", "0.0999",
    ),
    quick_data_options=(
        "--dataset", "faces",
        "--test-fraction", "0.8",
        "--val-fraction", "0.0999",
    ),
    # 2 optimizer steps per epoch on 20 training images. A batch of 25 would
    # leave one full-batch step per epoch.
    batch_size=10,
    augmentation_options=(
        "--crop-scale", "0.7",
        "--hflip", "0.5",
        "--rotation", "10",
        "--scale-jitter", "0.1",
        "--color-jitter", "0.3",
    ),
    augmentation_text="random resized crop, horizontal flip, rotation, zoom and colour jitter; "
    "a mirrored face or background crop is still one of its class",
    scratch_image_size=24,
    scratch_size_reason="one pixel below the 25x25 of the source images, so the CNN sees "
    "nearly every pixel and its two 2x2 max-pools divide the size evenly",
    data_text="scikit-image's `skimage.data.lfw_subset()`, 200 grayscale 25x25 crops that "
    "ship with the package: 100 faces from Labeled Faces in the Wild and 100 crops of the "
    "backgrounds of the same photos, classes `face` and `non-face`",
    see_also="The same experiment on 8x8 handwritten digits, which look nothing like "
    "ImageNet photos, is on [Transfer learning with little data](transfer-learning.md).",
    limits_text="- One small data set: 200 crops of 25x25 grayscale pixels, upscaled to the "
    "pretrained input size. They are photos, but at far lower resolution than ImageNet and "
    "without colour. With 160 test images, one image is 0.625 points of accuracy.",
)  # fmt: skip

TRANSFER_DATASETS = {dataset.name: dataset for dataset in (DIGITS, FACES)}
