"""Real photos that installed packages ship, with the ImageNet labels we expect.

The demo prints the predictions for them and the end-to-end tests assert them. The
photos come from scikit-image (`skimage.data`) and ultralytics (`assets/`),
so nothing is downloaded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGENET_CATS = frozenset({"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"})
IMAGENET_BUSES = frozenset({"minibus", "school bus", "trolleybus", "passenger car"})


@dataclass(frozen=True)
class SamplePhoto:
    """A JPEG-encoded photo and the labels that count as a correct prediction."""

    name: str
    jpeg: bytes
    expected_labels: frozenset[str]
    within_top: int

    def check(self, labels: list[str]) -> bool:
        """Return True when an expected label is among the first `within_top` labels."""
        return any(label in self.expected_labels for label in labels[: self.within_top])


def encode_jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def ultralytics_asset(name: str) -> Path:
    """Return the path of an image shipped inside the ultralytics package."""
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("ultralytics is not installed; install the 'train' extra")
    return Path(spec.origin).parent / "assets" / name


def imagenet_samples() -> list[SamplePhoto]:
    from skimage import data

    return [
        SamplePhoto("chelsea (skimage)", encode_jpeg(data.chelsea()), IMAGENET_CATS, 1),
        SamplePhoto(
            "coffee (skimage)", encode_jpeg(data.coffee()), frozenset({"espresso", "cup"}), 1
        ),
        SamplePhoto(
            "bus.jpg (ultralytics)", ultralytics_asset("bus.jpg").read_bytes(), IMAGENET_BUSES, 3
        ),
    ]
