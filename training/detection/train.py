"""Train a YOLO detector with ultralytics on any data.yaml, offline.

    python -m training.detection.train --data data/digits-scenes/data.yaml \\
        --output-dir runs/detect/digits-yolov8n

The defaults are the digits-scenes recipe measured in docs/detection-recipe.md
(from scratch, 4 epochs at 128 pixels).
The model is built untrained from the `<model>.yaml` config bundled with
ultralytics, or loaded from `--weights PATH`. Names such as `yolov8n.pt` are
never downloaded. The run folder keeps ultralytics' results.csv, args.yaml,
plots and weights/{best,last}.pt, plus train_summary.json written here.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.classification.errors import DataNotFoundError, InvalidArgumentsError, TrainingError
from training.detection.offline import install_local_fonts, offline_ultralytics
from training.detection.yolo_data import fingerprint, load_data_yaml
from training.help_format import DefaultsHelpFormatter

logger = logging.getLogger(__name__)

MODELS = ("yolov8n", "yolov5nu", "yolo11n")
OPTIMIZERS = ("SGD", "AdamW", "Adam", "auto")
SUMMARY_FILE = "train_summary.json"
# Search space of --tune: ultralytics' defaults for these keys. The flips are
# left out because a flipped digit is another symbol or none, and the tuner
# would otherwise try them.
TUNE_SPACE: dict[str, tuple[float, ...]] = {
    "lr0": (1e-5, 1e-2),
    "lrf": (0.01, 1.0),
    "momentum": (0.7, 0.98, 0.3),
    "weight_decay": (0.0, 0.001),
    "warmup_epochs": (0.0, 5.0),
    "hsv_h": (0.0, 0.1),
    "hsv_s": (0.0, 0.9),
    "hsv_v": (0.0, 0.9),
    "translate": (0.0, 0.9),
    "scale": (0.0, 0.95),
    "mosaic": (0.0, 1.0),
}


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_weights: Path
    minutes: float
    metrics: dict[str, float]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a YOLO detector with ultralytics (offline, CPU by default).",
        formatter_class=DefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data and model")
    data.add_argument("--data", type=Path, required=True, help="ultralytics data.yaml")
    data.add_argument("--model", choices=MODELS, default="yolov8n", help="architecture")
    data.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="start from this .pt file (default: untrained, from <model>.yaml)",
    )
    data.add_argument("--imgsz", type=int, default=128, help="training image size in pixels")

    optim = parser.add_argument_group("optimizer and schedule")
    optim.add_argument("--epochs", type=int, default=4, help="training epochs")
    optim.add_argument("--batch", type=int, default=16, help="images per batch")
    optim.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="AdamW",
        help="'auto' lets ultralytics pick the optimizer and ignores --lr0 and --momentum",
    )
    optim.add_argument("--lr0", type=float, default=0.002, help="initial learning rate")
    optim.add_argument(
        "--lrf", type=float, default=0.01, help="final learning rate, as a fraction of --lr0"
    )
    optim.add_argument("--cos-lr", action="store_true", help="cosine instead of linear decay")
    optim.add_argument("--momentum", type=float, default=0.9, help="SGD momentum or Adam beta1")
    optim.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay")
    optim.add_argument("--warmup-epochs", type=float, default=1.0, help="warm-up length in epochs")
    optim.add_argument(
        "--patience",
        type=int,
        default=100,
        help="early stop after this many epochs without improvement",
    )

    augment = parser.add_argument_group("augmentation (probabilities or fractions)")
    augment.add_argument("--mosaic", type=float, default=1.0, help="mosaic probability")
    augment.add_argument(
        "--close-mosaic", type=int, default=1, help="turn mosaic off for the last N epochs"
    )
    augment.add_argument(
        "--fliplr",
        type=float,
        default=0.0,
        help="left-right flip probability (keep 0 for digits: a flipped digit is another symbol)",
    )
    augment.add_argument("--flipud", type=float, default=0.0, help="up-down flip probability")
    augment.add_argument(
        "--hsv-h", type=float, default=0.015, help="hue jitter, fraction of the hue circle"
    )
    augment.add_argument("--hsv-s", type=float, default=0.7, help="saturation jitter, fraction")
    augment.add_argument("--hsv-v", type=float, default=0.4, help="brightness jitter, fraction")
    augment.add_argument("--scale", type=float, default=0.5, help="random scale gain, +/- fraction")
    augment.add_argument(
        "--translate", type=float, default=0.1, help="random shift, +/- fraction of the image"
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--output-dir",
        type=Path,
        default=Path("runs/detect/train"),
        help="run folder (must not exist)",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of ultralytics' training")
    run.add_argument("--device", default="cpu", help="'cpu' or a CUDA device id such as '0'")
    run.add_argument(
        "--workers",
        type=int,
        default=2,
        help="data loader worker processes on CUDA (on CPU ultralytics 8.4 always uses 0)",
    )
    run.add_argument(
        "--cache",
        choices=("ram", "disk", "none"),
        default="none",
        help="decoded image cache (ultralytics warns that 'ram' can make runs non-deterministic)",
    )
    run.add_argument(
        "--no-val", dest="val", action="store_false", help="validate only after the last epoch"
    )
    run.add_argument(
        "--no-plots", dest="plots", action="store_false", help="skip the plots in the run folder"
    )

    tune = parser.add_argument_group("hyperparameter tuning")
    tune.add_argument(
        "--tune",
        action="store_true",
        help="run ultralytics' evolutionary tuner (each iteration is a training run of --epochs); "
        "copies matplotlib's DejaVu Sans to ultralytics' config folder as Arial.ttf, because "
        "the tuner's training subprocesses would otherwise request that font online",
    )
    tune.add_argument("--tune-iterations", type=int, default=10, help="tuner iterations")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Reject values ultralytics would accept silently or fail on late."""
    if args.epochs < 1 or args.batch < 1 or args.imgsz < 32:
        raise InvalidArgumentsError(
            f"need --epochs >= 1, --batch >= 1 and --imgsz >= 32, got {args.epochs}, "
            f"{args.batch} and {args.imgsz}"
        )
    if args.imgsz % 32 != 0:
        raise InvalidArgumentsError(
            f"--imgsz must be a multiple of 32 (the max stride), got {args.imgsz}"
        )
    if args.lr0 <= 0 or not 0 < args.lrf <= 1:
        raise InvalidArgumentsError(
            f"need --lr0 > 0 and 0 < --lrf <= 1, got {args.lr0} and {args.lrf}"
        )
    for name in ("mosaic", "fliplr", "flipud"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise InvalidArgumentsError(f"--{name} is a probability in [0, 1], got {value}")
    if args.workers < 0 or args.close_mosaic < 0 or args.tune_iterations < 1:
        raise InvalidArgumentsError(
            "--workers and --close-mosaic must not be negative, --tune-iterations positive"
        )
    if args.weights is not None and not args.weights.is_file():
        raise DataNotFoundError(
            f"weights file {args.weights} not found; give the path of an existing .pt file "
            f"(nothing is downloaded) or leave out --weights to train from scratch"
        )
    if args.output_dir.exists():
        raise InvalidArgumentsError(f"{args.output_dir} already exists; pass a new --output-dir")


def ultralytics_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Map our options to ultralytics train arguments."""
    output_dir = args.output_dir.resolve()
    return {
        "data": str(args.data.resolve()),
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "batch": args.batch,
        "optimizer": args.optimizer,
        "lr0": args.lr0,
        "lrf": args.lrf,
        "cos_lr": args.cos_lr,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "warmup_epochs": args.warmup_epochs,
        "patience": args.patience,
        "mosaic": args.mosaic,
        "close_mosaic": args.close_mosaic,
        "fliplr": args.fliplr,
        "flipud": args.flipud,
        "hsv_h": args.hsv_h,
        "hsv_s": args.hsv_s,
        "hsv_v": args.hsv_v,
        "scale": args.scale,
        "translate": args.translate,
        "seed": args.seed,
        "deterministic": True,
        "device": args.device,
        "workers": args.workers,
        "cache": False if args.cache == "none" else args.cache,
        "val": args.val,
        "plots": args.plots,
        "project": str(output_dir.parent),
        "name": output_dir.name,
        "exist_ok": False,
        # amp=False skips the AMP check, which downloads a model on CUDA.
        "amp": False,
        "pretrained": args.weights is not None,
        "verbose": True,
    }


def load_model(args: argparse.Namespace) -> Any:
    """Return an ultralytics YOLO model: the weights file, or untrained from <model>.yaml."""
    from ultralytics import YOLO

    source = str(args.weights) if args.weights is not None else f"{args.model}.yaml"
    logger.info("building %s", source)
    return YOLO(source, task="detect")


def _final_metrics(trainer: Any) -> dict[str, float]:
    metrics = getattr(trainer, "metrics", None) or {}
    return {str(key): float(value) for key, value in metrics.items()}


def main(args: argparse.Namespace) -> TrainResult:
    check_args(args)
    offline_ultralytics()
    data = load_data_yaml(args.data)
    model = load_model(args)
    overrides = ultralytics_overrides(args)

    started = time.perf_counter()
    if args.tune:
        # The tuner writes its results to <project>/<name> and each iteration's
        # run to <project>/train<n>, so both go inside --output-dir.
        overrides.update(project=str(args.output_dir.resolve()), name="tune")
        install_local_fonts()
        model.tune(**overrides, space=TUNE_SPACE, iterations=args.tune_iterations, use_ray=False)
        run_dir = args.output_dir.resolve() / "tune"
        best = run_dir / "weights" / "best.pt"
        metrics: dict[str, float] = {}
    else:
        model.train(**overrides)
        trainer = model.trainer
        run_dir = Path(trainer.save_dir)
        best = Path(trainer.best)
        metrics = _final_metrics(trainer)
    minutes = (time.perf_counter() - started) / 60.0
    if not best.is_file():
        raise TrainingError(f"training finished without {best}; see the log above")

    summary = {
        "best_weights": str(best),
        "minutes": round(minutes, 2),
        "metrics": metrics,
        "data": str(args.data.resolve()),
        "data_fingerprint": fingerprint(data),
        "names": data.names,
        "args": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()
        },
    }
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("trained in %.1f min, best weights %s, metrics %s", minutes, best, metrics)
    return TrainResult(run_dir=run_dir, best_weights=best, minutes=minutes, metrics=metrics)


if __name__ == "__main__":
    from training.classification.cli import run

    run(get_args_parser(), main)
