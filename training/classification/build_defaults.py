"""Build the two models of the demo into a model repository.

    python -m training.classification.build_defaults --repository models

- imagenet-efficientnet-lite0: EfficientNet-Lite0 with ImageNet weights, exported as is.
- digits-cnn: the small CNN trained on scikit-learn's digits with DIGITS_RECIPE,
  exported with every held-out test image under samples/.

A model that already has a version is skipped unless --force, which adds a
new version next to the old ones.
"""

from __future__ import annotations

import argparse
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from training.classification import export, pretrained, train
from training.classification.evaluation import set_threads
from training.classification.repository import existing_versions
from training.help_format import DefaultsHelpFormatter

logger = logging.getLogger(__name__)

DIGITS_MODEL_NAME = "digits-cnn"
# Measured with `python -m training.classification.train` and these options on
# 2 CPU cores shared with other jobs: 16-21 s of training, test accuracy 0.9926
# to 1.0000 on the 270 test images for seeds 0-4 (1.0000 for seed 0, and 0.9963
# while biases and norm parameters still got weight decay).
DIGITS_RECIPE = (
    "--dataset", "digits",
    "--model", "cnn",
    "--image-size", "16",
    "--optimizer", "adamw",
    "--lr", "3e-3",
    "--weight-decay", "1e-4",
    "--batch-size", "64",
    "--epochs", "10",
    "--lr-scheduler", "onecycle",
    "--monitor", "val_loss",
)  # fmt: skip
# More than the digits test split contains, so every test image is written.
ALL_SAMPLES = 100_000


def build_digits_cnn(
    repository: Path, runs_dir: Path, *, seed: int, threads: int | None, progress: bool
) -> export.ExportResult:
    """Train the digits CNN into a new run folder and export it with its test images."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    train_argv = [
        *DIGITS_RECIPE,
        "--seed", str(seed),
        "--output-dir", str(runs_dir / f"{DIGITS_MODEL_NAME}-{stamp}"),
    ]  # fmt: skip
    if threads is not None:
        train_argv += ["--threads", str(threads)]
    if not progress:
        train_argv.append("--no-progress")
    result = train.main(train.get_args_parser().parse_args(train_argv))
    export_args = export.get_args_parser().parse_args(
        [
            "--checkpoint", str(result.best_checkpoint),
            "--repository", str(repository),
            "--name", DIGITS_MODEL_NAME,
            "--samples", str(ALL_SAMPLES),
        ]
    )  # fmt: skip
    return export.main(export_args)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Build imagenet-efficientnet-lite0 and digits-cnn into a model repository.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--repository", type=Path, default=Path("models"), help="model repository")
    parser.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="parent folder of the digits run"
    )
    parser.add_argument(
        "--force", action="store_true", help="add a new version even when one exists"
    )
    parser.add_argument("--seed", type=int, default=0, help="digits split and training seed")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide progress bars"
    )
    return parser


def _should_build(repository: Path, name: str, force: bool) -> bool:
    versions = existing_versions(repository, name)
    if versions and not force:
        logger.info(
            "skipping %s: version %d exists in %s; pass --force to add version %d",
            name,
            versions[-1],
            repository,
            versions[-1] + 1,
        )
        return False
    return True


def main(args: argparse.Namespace) -> dict[str, export.ExportResult]:
    set_threads(args.threads)
    built: dict[str, export.ExportResult] = {}
    if _should_build(args.repository, pretrained.MODEL_NAME, args.force):
        started = time.perf_counter()
        built[pretrained.MODEL_NAME] = pretrained.build_imagenet_efficientnet(args.repository)
        logger.info("built %s in %.0f s", pretrained.MODEL_NAME, time.perf_counter() - started)
    if _should_build(args.repository, DIGITS_MODEL_NAME, args.force):
        started = time.perf_counter()
        built[DIGITS_MODEL_NAME] = build_digits_cnn(
            args.repository,
            args.runs_dir,
            seed=args.seed,
            threads=args.threads,
            progress=args.progress,
        )
        logger.info("built %s in %.0f s", DIGITS_MODEL_NAME, time.perf_counter() - started)
    for name, result in built.items():
        metrics = result.metadata.metrics
        accuracy = metrics.get("test_accuracy")
        accuracy_text = f"test accuracy {accuracy:.4f}, " if accuracy is not None else ""
        print(
            f"{name} version {result.metadata.version}: {accuracy_text}parity max abs "
            f"logit difference {metrics['parity_max_abs_diff']:.3g}, in {result.version_dir}"
        )
    return built


if __name__ == "__main__":
    from training.classification.cli import run

    run(get_args_parser(), main)
