"""Build digits-scenes: load_digits digits on scikit-image photos, in the ultralytics layout.

    python -m training.detection.dataset --output data/digits-scenes --seed 0

The defaults are the data set of the recipe in docs/detection-recipe.md.

Writes `images/{train,val,test}/`, `labels/{train,val,test}/` (one
`class cx cy w h` line per digit, normalised), `data.yaml` with names "0".."9"
and `manifest.json` (options, digit pools, every box with its source digit).

The 1797 load_digits images are split into disjoint pools first (60 % train,
20 % val, 20 % test), and each split's scenes draw only from its own pool, so
no held-out digit appears in a training scene. The background photos are
shared by all splits: their crops differ, but the photos are the same 14.
Each scene has its own random generator seeded by (seed, split, index), so the
output is the same for the same options on any machine with the same
numpy, Pillow and scikit-image versions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from training.classification.errors import InvalidArgumentsError
from training.detection.scenes import (
    BACKGROUND_PHOTOS,
    SceneOptions,
    render_scene,
    yolo_label_lines,
)
from training.detection.yolo_data import SPLITS, fingerprint, load_data_yaml
from training.help_format import DefaultsHelpFormatter

logger = logging.getLogger(__name__)

POOL_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
NAMES = [str(digit) for digit in range(10)]
MANIFEST = "manifest.json"
JPEG_QUALITY = 95


@dataclass(frozen=True)
class BuildResult:
    root: Path
    data_yaml: Path
    fingerprint: str
    counts: dict[str, int]


def digit_pools(seed: int, num_digits: int) -> dict[str, np.ndarray]:
    """Split load_digits indices into disjoint, sorted train/val/test pools."""
    order = np.random.default_rng(seed).permutation(num_digits)
    train_end = round(num_digits * POOL_FRACTIONS["train"])
    val_end = train_end + round(num_digits * POOL_FRACTIONS["val"])
    return {
        "train": np.sort(order[:train_end]),
        "val": np.sort(order[train_end:val_end]),
        "test": np.sort(order[val_end:]),
    }


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index])


def save_image(image: np.ndarray, path: Path) -> None:
    picture = Image.fromarray(image)
    if path.suffix == ".png":
        picture.save(path, format="PNG")
    else:
        # 4:4:4 chroma keeps thin coloured strokes intact.
        picture.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def write_split(
    root: Path,
    split: str,
    count: int,
    *,
    seed: int,
    pool: np.ndarray,
    options: SceneOptions,
    image_format: str,
) -> list[dict[str, Any]]:
    """Render `count` scenes of one split into root/images/<split> and root/labels/<split>."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images_dir = root / "images" / split
    labels_dir = root / "labels" / split
    images_dir.mkdir(parents=True)
    labels_dir.mkdir(parents=True)
    records = []
    for index in range(count):
        scene = render_scene(
            scene_rng(seed, split, index), digits.images, digits.target, pool, options
        )
        stem = f"{split}_{index:05d}"
        save_image(scene.image, images_dir / f"{stem}.{image_format}")
        lines = yolo_label_lines(scene)
        (labels_dir / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines))
        records.append(
            {
                "image": f"images/{split}/{stem}.{image_format}",
                "background": scene.background,
                "digits": [asdict(digit) for digit in scene.digits],
            }
        )
    logger.info("wrote %d %s scenes", count, split)
    return records


def build_dataset(
    output: Path,
    *,
    seed: int,
    counts: dict[str, int],
    options: SceneOptions,
    image_format: str = "jpg",
    force: bool = False,
) -> BuildResult:
    """Render every split into a staging folder, then rename it to `output`."""
    from sklearn.datasets import load_digits

    if output.exists() and not force:
        raise InvalidArgumentsError(f"{output} already exists; pass --force to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        pools = digit_pools(seed, len(load_digits().target))
        scenes = {
            split: write_split(
                staging,
                split,
                counts[split],
                seed=seed,
                pool=pools[split],
                options=options,
                image_format=image_format,
            )
            for split in SPLITS
        }
        data_yaml = staging / "data.yaml"
        # No `path` key: ultralytics then resolves the split folders against the
        # yaml's own folder, so the data set can be moved.
        content = {split: f"images/{split}" for split in SPLITS}
        data_yaml.write_text(
            yaml.safe_dump({**content, "names": dict(enumerate(NAMES))}, sort_keys=False)
        )
        digest = fingerprint(load_data_yaml(data_yaml))
        manifest = {
            "seed": seed,
            "counts": counts,
            "options": asdict(options),
            "image_format": image_format,
            "backgrounds": list(BACKGROUND_PHOTOS),
            "digit_pools": {split: pool.tolist() for split, pool in pools.items()},
            "fingerprint": digest,
            "scenes": scenes,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        staging.chmod(0o755)
        if output.exists():
            shutil.rmtree(output)
        os.rename(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("data set %s: %s, fingerprint %s", output, counts, digest)
    return BuildResult(output, output / "data.yaml", digest, counts)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Build the digits-scenes detection data set in the ultralytics layout.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--output", type=Path, required=True, help="data set folder to create")
    parser.add_argument("--seed", type=int, default=0, help="seed of the digit pools and scenes")
    parser.add_argument("--train", type=int, default=4000, help="training scenes")
    parser.add_argument("--val", type=int, default=300, help="validation scenes")
    parser.add_argument("--test", type=int, default=500, help="test scenes")
    parser.add_argument(
        "--image-size", type=int, default=128, help="scene width and height in pixels"
    )
    parser.add_argument("--min-digits", type=int, default=2, help="min digits per scene")
    parser.add_argument("--max-digits", type=int, default=6, help="max digits per scene")
    parser.add_argument(
        "--min-digit-size",
        type=float,
        default=0.15,
        help="min digit cell height as a fraction of the scene's shorter side",
    )
    parser.add_argument(
        "--max-digit-size",
        type=float,
        default=0.35,
        help="max digit cell height as a fraction of the scene's shorter side",
    )
    parser.add_argument(
        "--clean-fraction",
        type=float,
        default=0.2,
        help="fraction of scenes on a plain gradient instead of a photo, 0-1",
    )
    parser.add_argument(
        "--image-format", choices=("jpg", "png"), default="jpg", help="image file format"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --output")
    return parser


def options_from_args(args: argparse.Namespace) -> SceneOptions:
    if min(args.train, args.val, args.test) < 1:
        raise InvalidArgumentsError("--train, --val and --test must each be at least 1")
    if args.image_size < 32:
        raise InvalidArgumentsError(
            f"--image-size must be at least 32 pixels, got {args.image_size}"
        )
    if not 1 <= args.min_digits <= args.max_digits:
        raise InvalidArgumentsError(
            f"need 1 <= --min-digits <= --max-digits, got {args.min_digits} and {args.max_digits}"
        )
    if not 0.0 < args.min_digit_size <= args.max_digit_size <= 1.0:
        raise InvalidArgumentsError(
            "need 0 < --min-digit-size <= --max-digit-size <= 1, got "
            f"{args.min_digit_size} and {args.max_digit_size}"
        )
    if not 0.0 <= args.clean_fraction <= 1.0:
        raise InvalidArgumentsError(
            f"--clean-fraction must be in [0, 1], got {args.clean_fraction}"
        )
    return SceneOptions(
        width=args.image_size,
        height=args.image_size,
        min_digits=args.min_digits,
        max_digits=args.max_digits,
        min_digit_size=args.min_digit_size,
        max_digit_size=args.max_digit_size,
        clean_fraction=args.clean_fraction,
    )


def main(args: argparse.Namespace) -> BuildResult:
    options = options_from_args(args)
    result = build_dataset(
        args.output,
        seed=args.seed,
        counts={"train": args.train, "val": args.val, "test": args.test},
        options=options,
        image_format=args.image_format,
        force=args.force,
    )
    print(f"{result.data_yaml}: {result.counts}, fingerprint {result.fingerprint}")
    return result


if __name__ == "__main__":
    from training.classification.cli import run

    run(get_args_parser(), main)
