"""Evaluate an exported detector with our evaluator and compare it with `yolo val`.

    python -m training.detection.evaluate --model-dir models/digits-yolov8n/1 \\
        --data data/digits-scenes/data.yaml --split test

Our side runs model.onnx with ONNX Runtime through the serving code
(`training.detection.onnx_predict`) and scores it with
`training.detection.metrics`. The reference side is ultralytics' validator on
the PyTorch weights the ONNX file was exported from. Both use conf 0.001,
NMS IoU 0.7 and 300 detections per image.

`yolo val` runs NMS with `multi_label=True`: an anchor yields one candidate
for every class scoring above conf, while the service keeps each anchor's
best class only. On a model that still confuses classes the extra candidates
raise mAP50 by a few points (0.04 on a 3-epoch digits model), so the
agreement check compares with ultralytics' validator changed in that one
flag (`SingleLabelValidator`). The report lists the standard `yolo val`
numbers too.

The command fails with exit status 1, and writes nothing, when our mAP50 and
the single-label validator's differ by more than --tolerance. Otherwise it
writes report.json and pr_curve.png into the model version folder, replacing
earlier ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from services.common.metadata import read_metadata
from training.classification.errors import DataNotFoundError, TrainingError
from training.detection.metrics import DetectionMetrics, GroundTruth, compute_metrics
from training.detection.offline import offline_ultralytics
from training.detection.onnx_predict import VAL_NMS, NmsSettings, OnnxDetector, detection_spec
from training.detection.plots import PR_CURVE_FILE, plot_pr_curves
from training.detection.yolo_data import DataSet, load_data_yaml, read_labels
from training.help_format import DefaultsHelpFormatter

logger = logging.getLogger(__name__)

REPORT_FILE = "report.json"
DEFAULT_TOLERANCE = 0.02
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


class EvaluationMismatchError(TrainingError):
    """Our evaluator and ultralytics' validator disagree beyond the tolerance."""


def single_label_validator() -> type:
    """Return ultralytics' DetectionValidator with NMS keeping each anchor's best class only.

    The body is `DetectionValidator.postprocess` of ultralytics 8.4 with
    `multi_label=False`.
    """
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils import nms

    class SingleLabelValidator(DetectionValidator):
        def postprocess(self, preds: Any) -> list[dict[str, Any]]:
            outputs = nms.non_max_suppression(
                preds,
                self.args.conf,
                self.args.iou,
                nc=0,
                multi_label=False,
                agnostic=self.args.single_cls or self.args.agnostic_nms,
                max_det=self.args.max_det,
                end2end=self.end2end,
            )
            return [
                {"bboxes": x[:, :4], "conf": x[:, 4], "cls": x[:, 5], "extra": x[:, 6:]}
                for x in outputs
            ]

    return SingleLabelValidator


@dataclass(frozen=True)
class ReferenceMetrics:
    """Metrics of ultralytics' validator: mAP, and AP50 per class id of the labelled classes."""

    map50: float
    map50_95: float
    ap50: dict[int, float]
    weights: str


@dataclass(frozen=True)
class Evaluation:
    split: str
    images: int
    names: list[str]
    ours: DetectionMetrics
    single_label_val: ReferenceMetrics | None
    multi_label_val: ReferenceMetrics | None

    @property
    def map50_difference(self) -> float | None:
        """Return |our mAP50 - the single-label validator's|, None when it did not run."""
        if self.single_label_val is None:
            return None
        return abs(self.ours.map50 - self.single_label_val.map50)


def oriented_size(path: Path) -> tuple[int, int]:
    """Return (width, height) of an image as displayed, after its EXIF orientation."""
    with Image.open(path) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return height, width
    return width, height


def ground_truth(image_path: Path) -> GroundTruth:
    """Return the labelled boxes of one image in pixels (xyxy) of the displayed image."""
    labels = read_labels(image_path)
    width, height = oriented_size(image_path)
    centre = labels[:, 1:3] * (width, height)
    half = labels[:, 3:5] * (width, height) / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    return GroundTruth(boxes=boxes, classes=labels[:, 0].astype(np.int64))


def evaluate_onnx(
    onnx_path: Path,
    imgsz: int,
    data: DataSet,
    split: str,
    *,
    settings: NmsSettings = VAL_NMS,
    threads: int | None = None,
) -> DetectionMetrics:
    """Predict every image of `split` with the ONNX model and score the predictions."""
    images = data.images(split)
    if not images:
        raise DataNotFoundError(f"the {split} split of {data.yaml_path} has no images")
    detector = OnnxDetector(onnx_path, detection_spec(imgsz), threads=threads)
    predictions = list(detector.predict_files(images, settings))
    truths = [ground_truth(path) for path in images]
    return compute_metrics(predictions, truths, len(data.names))


def ultralytics_val(
    weights: Path,
    data_yaml: Path,
    split: str,
    imgsz: int,
    *,
    single_label: bool,
    batch: int = 32,
) -> ReferenceMetrics:
    """Run ultralytics' validator with the settings of VAL_NMS, in a temporary folder."""
    offline_ultralytics()
    from ultralytics import YOLO

    if not weights.is_file():
        raise DataNotFoundError(f"weights file {weights} not found")
    validator = single_label_validator() if single_label else None
    with tempfile.TemporaryDirectory(prefix="yolo-val-") as project:
        results = YOLO(str(weights), task="detect").val(
            validator=validator,
            data=str(data_yaml),
            split=split,
            imgsz=imgsz,
            batch=batch,
            conf=VAL_NMS.conf_threshold,
            iou=VAL_NMS.iou_threshold,
            max_det=VAL_NMS.max_det,
            device="cpu",
            plots=False,
            verbose=False,
            project=project,
            name="val",
        )
    box = results.box
    return ReferenceMetrics(
        map50=float(box.map50),
        map50_95=float(box.map),
        ap50={int(c): float(ap) for c, ap in zip(box.ap_class_index, box.ap50, strict=True)},
        weights=str(weights),
    )


def evaluate(
    onnx_path: Path,
    imgsz: int,
    data: DataSet,
    split: str,
    *,
    weights: Path | None,
    threads: int | None = None,
) -> Evaluation:
    """Score the ONNX model on `split` and, given the weights, run `yolo val` beside it."""
    ours = evaluate_onnx(onnx_path, imgsz, data, split, threads=threads)
    single_label = multi_label = None
    if weights is not None:
        single_label = ultralytics_val(weights, data.yaml_path, split, imgsz, single_label=True)
        multi_label = ultralytics_val(weights, data.yaml_path, split, imgsz, single_label=False)
    evaluation = Evaluation(
        split=split,
        images=len(data.images(split)),
        names=data.names,
        ours=ours,
        single_label_val=single_label,
        multi_label_val=multi_label,
    )
    logger.info("%s split: ours mAP50 %.4f mAP50-95 %.4f", split, ours.map50, ours.map50_95)
    for label, metrics in (("single-label", single_label), ("multi-label", multi_label)):
        if metrics is not None:
            logger.info(
                "%s split: ultralytics val (%s NMS) mAP50 %.4f mAP50-95 %.4f",
                split,
                label,
                metrics.map50,
                metrics.map50_95,
            )
    return evaluation


def check_agreement(evaluation: Evaluation, tolerance: float) -> None:
    """Raise EvaluationMismatchError when the two mAP50 values differ by more than `tolerance`."""
    reference = evaluation.single_label_val
    if reference is None:
        return
    difference = abs(evaluation.ours.map50 - reference.map50)
    if difference > tolerance:
        raise EvaluationMismatchError(
            f"mAP50 on the {evaluation.split} split differs by {difference:.4f} (> {tolerance}): "
            f"ours {evaluation.ours.map50:.4f} on the ONNX model, ultralytics val "
            f"{reference.map50:.4f} on {reference.weights}. "
            f"Check the letterbox, decoding and NMS settings of the ONNX path"
        )


def _rounded(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


def report_dict(evaluation: Evaluation, tolerance: float) -> dict[str, Any]:
    ours = evaluation.ours
    per_class = {
        name: {
            "ap50": _rounded(ours.ap50[class_id]),
            "ap50_95": _rounded(ours.ap50_95[class_id]),
            "instances": int(ours.ground_truth_counts[class_id]),
        }
        for class_id, name in enumerate(evaluation.names)
    }
    report: dict[str, Any] = {
        "split": evaluation.split,
        "images": evaluation.images,
        "instances": int(ours.ground_truth_counts.sum()),
        "detections": ours.detection_count,
        "nms": {
            "conf_threshold": VAL_NMS.conf_threshold,
            "iou_threshold": VAL_NMS.iou_threshold,
            "max_det": VAL_NMS.max_det,
        },
        "map50": _rounded(ours.map50),
        "map50_95": _rounded(ours.map50_95),
        "per_class": per_class,
        "evaluator": "training.detection.metrics on model.onnx through the serving code path",
    }
    for key, metrics in (
        ("ultralytics_val", evaluation.single_label_val),
        ("ultralytics_val_multi_label", evaluation.multi_label_val),
    ):
        if metrics is not None:
            report[key] = {
                "map50": _rounded(metrics.map50),
                "map50_95": _rounded(metrics.map50_95),
                "ap50": {evaluation.names[c]: _rounded(ap) for c, ap in metrics.ap50.items()},
                "weights": metrics.weights,
            }
    if evaluation.single_label_val is not None:
        report["ultralytics_val"]["nms"] = "multi_label=False, as the service"
        report["ultralytics_val_multi_label"]["nms"] = "multi_label=True, as `yolo val`"
        report["map50_difference"] = _rounded(evaluation.map50_difference or 0.0)
        report["tolerance"] = tolerance
    return report


def write_report(directory: Path, evaluation: Evaluation, tolerance: float) -> dict[str, Any]:
    """Write report.json and pr_curve.png into `directory` and return the report."""
    report = report_dict(evaluation, tolerance)
    (directory / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    title = f"{evaluation.split} split, {evaluation.images} images, IoU 0.5"
    plot_pr_curves(evaluation.ours, evaluation.names, directory / PR_CURVE_FILE, title)
    return report


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evaluate model.onnx of a model version and compare it with ultralytics val.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="model version folder")
    parser.add_argument("--data", type=Path, required=True, help="ultralytics data.yaml")
    parser.add_argument(
        "--split", choices=("train", "val", "test"), default="test", help="split to score"
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="PyTorch weights for ultralytics val (default: source_weights in model.json)",
    )
    parser.add_argument(
        "--tolerance", type=float, default=DEFAULT_TOLERANCE, help="max allowed mAP50 difference"
    )
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    return parser


def main(args: argparse.Namespace) -> Evaluation:
    metadata = read_metadata(args.model_dir)
    if metadata.task != "detection":
        raise TrainingError(
            f"{args.model_dir} contains a {metadata.task} model; pass a detection model version"
        )
    data = load_data_yaml(args.data)
    if data.names != metadata.labels:
        raise TrainingError(
            f"the class names in {args.data} {data.names} differ from the labels in model.json "
            f"{metadata.labels}"
        )
    weights = args.weights
    if weights is None:
        source = getattr(metadata, "source_weights", None)
        if source is None:
            raise DataNotFoundError("model.json has no source_weights; pass --weights")
        weights = Path(source)
    evaluation = evaluate(
        args.model_dir / "model.onnx",
        metadata.preprocess.height,
        data,
        args.split,
        weights=weights,
        threads=args.threads,
    )
    check_agreement(evaluation, args.tolerance)
    report = write_report(args.model_dir, evaluation, args.tolerance)
    reference = report["ultralytics_val"]
    print(
        f"{args.split}: mAP50 {report['map50']:.4f} (ultralytics val {reference['map50']:.4f}), "
        f"mAP50-95 {report['map50_95']:.4f} (ultralytics val {reference['map50_95']:.4f})"
    )
    return evaluation


if __name__ == "__main__":
    from training.classification.cli import run

    run(get_args_parser(), main)
