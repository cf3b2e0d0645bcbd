"""The benchmark images: real photos encoded as JPEG at fixed sizes, built at run time.

The photos ship inside installed packages (scikit-image's `skimage.data` and
ultralytics' `assets/bus.jpg`), so nothing is downloaded and no image file is
stored in the repository. Each photo is cropped to the aspect ratio of the
target size and resized with Pillow's Lanczos filter. A 4000x3000 image is
therefore an upscaled photo. It has the pixel count of a 12-megapixel camera
JPEG, but its file is smaller than a camera's, because upscaling removes fine
detail.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from scripts.sample_images import ultralytics_asset

SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
ULTRALYTICS_PHOTOS = ("bus.jpg",)
# The throughput grid sends this size; the size sweep compares the others with it.
GRID_SIZE = (640, 480)
SWEEP_SIZES = ((320, 240), (640, 480), (1280, 960), (1920, 1440), (4000, 3000))
JPEG_QUALITY = 90


@dataclass(frozen=True)
class BenchImage:
    """One encoded benchmark image."""

    photo: str
    width: int
    height: int
    jpeg: bytes

    @property
    def size_label(self) -> str:
        return f"{self.width}x{self.height}"


def load_photos() -> dict[str, Image.Image]:
    """Load every source photo as an RGB image, keyed by a short name."""
    import skimage.data  # a training dependency, imported only where the photos are built

    photos = {
        name: Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
        for name in SKIMAGE_PHOTOS
    }
    for asset in ULTRALYTICS_PHOTOS:
        with Image.open(ultralytics_asset(asset)) as image:
            photos[asset.split(".")[0]] = image.convert("RGB")
    return photos


def encode_at_size(photo: Image.Image, size: tuple[int, int], quality: int = JPEG_QUALITY) -> bytes:
    """Crop `photo` to the aspect ratio of `size`, resize it to `size` and encode it as JPEG."""
    fitted = ImageOps.fit(photo, size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    fitted.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def build_images(
    sizes: tuple[tuple[int, int], ...], photos: dict[str, Image.Image] | None = None
) -> dict[tuple[int, int], list[BenchImage]]:
    """Encode every photo at every size, in a fixed photo order."""
    photos = photos if photos is not None else load_photos()
    return {
        size: [
            BenchImage(photo=name, width=size[0], height=size[1], jpeg=encode_at_size(image, size))
            for name, image in photos.items()
        ]
        for size in sizes
    }


def write_images(images: list[BenchImage], folder: Path) -> list[Path]:
    """Write the JPEG files for the load generator process and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image in images:
        path = folder / f"{image.photo}-{image.size_label}.jpg"
        path.write_bytes(image.jpeg)
        paths.append(path)
    return paths


def describe(images: list[BenchImage]) -> list[dict[str, object]]:
    """Return the JSON description of a set of images: photo, size and file size."""
    return [
        {"photo": image.photo, "size": image.size_label, "bytes": len(image.jpeg)}
        for image in images
    ]
