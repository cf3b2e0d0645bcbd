"""Build the demo's default detector, digits-yolov8n, into a model repository if it is missing.

    python -m training.detection.build_default --repository models

Builds the digits-scenes data set, or reuses it when it was built with the
same options. Then it trains YOLOv8n with the recipe measured in
docs/detection-recipe.md and exports it. samples/ in the version folder gets
held-out test scenes and a portrait JPEG with EXIF orientation 6, and
samples/index.json lists their expected boxes.

`--tiny` builds a small, barely trained model in well under a minute, for
tests that need a real detector rather than a good one.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from training.classification.errors import InvalidArgumentsError
from training.classification.repository import existing_versions
from training.detection import dataset, train
from training.detection.export import DEFAULT_NAME, SERVING_NMS, ExportResult, export_version
from training.detection.onnx_predict import OnnxDetector
from training.detection.portrait import write_portrait
from training.detection.scenes import SceneOptions
from training.detection.yolo_data import load_data_yaml
from training.help_format import DefaultsHelpFormatter

logger = logging.getLogger(__name__)

# The recipe of docs/detection-recipe.md: data set options, then training options.
DATASET_RECIPE = (
    "--train", "4000", "--val", "300", "--test", "500",
    "--image-size", "128",
    "--min-digits", "2", "--max-digits", "6",
    "--min-digit-size", "0.15", "--max-digit-size", "0.35",
    "--clean-fraction", "0.2",
)  # fmt: skip
TRAIN_RECIPE = (
    "--model", "yolov8n",
    "--imgsz", "128",
    "--epochs", "4",
    "--batch", "16",
    "--optimizer", "AdamW", "--lr0", "0.002",
    "--close-mosaic", "1",
)  # fmt: skip
# Seconds, not quality: one epoch on 32 scenes of 64 pixels.
TINY_DATASET_RECIPE = (
    "--train", "32", "--val", "8", "--test", "8", "--image-size", "64",
    "--min-digits", "1", "--max-digits", "2", "--min-digit-size", "0.3", "--max-digit-size", "0.5",
)  # fmt: skip
TINY_TRAIN_RECIPE = (
    "--model", "yolov8n", "--imgsz", "64", "--epochs", "1", "--batch", "8", "--no-plots",
)  # fmt: skip
TINY_NAME = "digits-yolov8n-tiny"
DEFAULT_SAMPLES = 8


def ensure_dataset(output: Path, argv: list[str]) -> Path:
    """Build the data set unless `output` already contains one built with the same options."""
    args = dataset.get_args_parser().parse_args([*argv, "--output", str(output)])
    manifest_path = output / dataset.MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        expected = {
            "seed": args.seed,
            "counts": {"train": args.train, "val": args.val, "test": args.test},
            "options": vars(dataset.options_from_args(args)),
            "image_format": args.image_format,
        }
        if all(manifest.get(key) == value for key, value in expected.items()):
            logger.info("reusing the data set in %s", output)
            return output / "data.yaml"
        raise InvalidArgumentsError(
            f"{output} contains a data set built with other options; remove it or pass "
            f"another --data-dir"
        )
    return dataset.main(args).data_yaml


class PortraitHook:
    """The `write_files` step of the export that adds the EXIF portrait sample."""

    def __init__(self, pool: np.ndarray, options: SceneOptions, seed: int) -> None:
        self.pool = pool
        self.options = options
        self.seed = seed

    def __call__(self, staging: Path, detector: OnnxDetector) -> None:
        write_portrait(
            staging,
            detector,
            SERVING_NMS,
            names=dataset.NAMES,
            pool=self.pool,
            options=self.options,
            seed=self.seed,
        )


def portrait_hook(data_yaml: Path, seed: int) -> PortraitHook:
    manifest = json.loads((data_yaml.parent / dataset.MANIFEST).read_text())
    options = SceneOptions(**manifest["options"])
    # Portrait 3:4 with the training height, so digits keep their training size in pixels.
    portrait = SceneOptions(**{**vars(options), "width": round(options.height * 3 / 4)})
    return PortraitHook(np.asarray(manifest["digit_pools"]["test"]), portrait, seed)


def build_detector(
    repository: Path, data_dir: Path, runs_dir: Path, *, name: str, seed: int, tiny: bool
) -> ExportResult:
    """Build (or reuse) the data set, train with the recipe and export with samples."""
    dataset_argv = [*(TINY_DATASET_RECIPE if tiny else DATASET_RECIPE), "--seed", str(seed)]
    data_yaml = ensure_dataset(data_dir, dataset_argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    train_argv = [
        *(TINY_TRAIN_RECIPE if tiny else TRAIN_RECIPE),
        "--data", str(data_yaml),
        "--seed", str(seed),
        "--output-dir", str(runs_dir / f"{name}-{stamp}"),
    ]  # fmt: skip
    trained = train.main(train.get_args_parser().parse_args(train_argv))
    return export_version(
        trained.best_weights,
        load_data_yaml(data_yaml),
        imgsz=int(train_argv[train_argv.index("--imgsz") + 1]),
        repository=repository,
        name=name,
        samples=DEFAULT_SAMPLES,
        write_files=portrait_hook(data_yaml, seed),
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=f"Build {DEFAULT_NAME} (or with --tiny {TINY_NAME}) into a model repository.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--repository", type=Path, default=Path("models"), help="model repository")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="digits-scenes folder (default: data/digits-scenes, or data/digits-scenes-tiny "
        "with --tiny)",
    )
    parser.add_argument(
        "--runs-dir", type=Path, default=Path("runs/detect"), help="parent of the run folder"
    )
    parser.add_argument(
        "--name", default=None, help=f"model name (default: {DEFAULT_NAME} or {TINY_NAME})"
    )
    parser.add_argument("--seed", type=int, default=0, help="data set and training seed")
    parser.add_argument("--tiny", action="store_true", help="1 epoch on 32 small scenes, for tests")
    parser.add_argument(
        "--force", action="store_true", help="add a new version even when one exists"
    )
    return parser


def main(args: argparse.Namespace) -> ExportResult | None:
    name = args.name or (TINY_NAME if args.tiny else DEFAULT_NAME)
    data_dir = args.data_dir or Path(
        "data/digits-scenes-tiny" if args.tiny else "data/digits-scenes"
    )
    versions = existing_versions(args.repository, name)
    if versions and not args.force:
        logger.info(
            "skipping %s: version %d exists in %s; pass --force to add version %d",
            name,
            versions[-1],
            args.repository,
            versions[-1] + 1,
        )
        return None
    started = time.perf_counter()
    result = build_detector(
        args.repository, data_dir, args.runs_dir, name=name, seed=args.seed, tiny=args.tiny
    )
    metrics = result.metadata.metrics
    print(
        f"{name} version {result.metadata.version}: test mAP50 {metrics['test_map50']:.4f}, "
        f"mAP50-95 {metrics['test_map50_95']:.4f}, built in {time.perf_counter() - started:.0f} s, "
        f"in {result.version_dir}"
    )
    return result


if __name__ == "__main__":
    from training.classification.cli import run

    run(get_args_parser(), main)
