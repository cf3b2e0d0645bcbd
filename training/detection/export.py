"""Export YOLO weights to the model repository as ONNX, after parity and evaluation checks.

    python -m training.detection.export --weights runs/detect/digits-yolov8n/weights/best.pt \\
        --repository models --name digits-yolov8n --samples 8

Writes `<repository>/<name>/<version>/` with model.onnx, model.json,
report.json, reference.json (from the val split), pr_curve.png and, with
--samples, held-out images in samples/.
model.onnx has dynamic batch, height and width and returns the raw head
output, so NMS runs in the service. The report covers the test split, or the
val split when the data set has no test split.

The export fails with exit status 1 and leaves no version folder when the
ONNX predictions differ from ultralytics' on the val split, or when our mAP50
and ultralytics' validator's differ by more than --tolerance.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

from services.common.metadata import MODEL_FILENAME, DetectionSpec, ModelMetadata, write_metadata
from training.classification.errors import DataNotFoundError, InvalidArgumentsError, TrainingError
from training.classification.repository import check_model_name, next_version, staged_version
from training.detection import evaluate as evaluation
from training.detection.offline import offline_ultralytics
from training.detection.onnx_predict import (
    INPUT_NAME,
    OUTPUT_NAME,
    NmsSettings,
    OnnxDetector,
    detection_spec,
)
from training.detection.parity import DEFAULT_MIN_IOU, check_parity
from training.detection.samples import write_samples
from training.detection.train import SUMMARY_FILE
from training.detection.yolo_data import DataSet, fingerprint, load_data_yaml
from training.help_format import DefaultsHelpFormatter
from training.reference import ReferenceImages, write_reference_profile

logger = logging.getLogger(__name__)

DEFAULT_NAME = "digits-yolov8n"
# Serving defaults written to model.json. 0.25 is ultralytics' predict default;
# 0.45 is the NMS IoU most YOLO deployments use (ultralytics' own default is 0.7).
SERVING_NMS = NmsSettings(conf_threshold=0.25, iou_threshold=0.45, max_det=300)
PARITY_IMAGES = 100


@dataclass(frozen=True)
class ExportResult:
    version_dir: Path
    metadata: ModelMetadata


def export_onnx(weights: Path, imgsz: int, destination: Path, opset: int | None) -> int:
    """Export with ultralytics in a scratch folder, check the graph, move it to `destination`.

    Returns the opset of the written file. ultralytics writes the .onnx beside
    the .pt it loaded, so the weights are copied first to leave the run
    folder untouched.
    """
    offline_ultralytics()
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory(prefix="yolo-export-") as scratch:
        copy = Path(scratch) / "model.pt"
        shutil.copyfile(weights, copy)
        exported = YOLO(str(copy), task="detect").export(
            format="onnx",
            imgsz=imgsz,
            dynamic=True,
            nms=False,
            # simplify needs onnxslim, which is not installed; the graph runs as it is.
            simplify=False,
            opset=opset,
            device="cpu",
        )
        onnx.checker.check_model(str(exported), full_check=True)
        shutil.move(str(exported), destination)
    graph = onnx.load(str(destination), load_external_data=False)
    inputs = [node.name for node in graph.graph.input]
    outputs = [node.name for node in graph.graph.output]
    if inputs != [INPUT_NAME] or outputs[:1] != [OUTPUT_NAME]:
        raise TrainingError(f"unexpected ONNX signature: inputs {inputs}, outputs {outputs}")
    return next(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx"))


def exporter_versions(opset: int) -> dict[str, str]:
    import ultralytics

    return {
        "method": "ultralytics export(format='onnx', dynamic=True, nms=False, simplify=False)",
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": str(opset),
    }


def checkpoint_train_args(weights: Path) -> dict[str, Any]:
    """Return the `train_args` ultralytics stored in the checkpoint (empty if absent)."""
    offline_ultralytics()
    from ultralytics.nn.tasks import load_checkpoint

    _, checkpoint = load_checkpoint(str(weights), device="cpu")
    return dict(checkpoint.get("train_args") or {})


def check_fingerprint(weights: Path, data: DataSet, digest: str) -> None:
    """Compare with train_summary.json of the run, when the weights sit in one."""
    summary_path = weights.resolve().parent.parent / SUMMARY_FILE
    if not summary_path.is_file():
        logger.warning("no %s beside %s; cannot check the training data", SUMMARY_FILE, weights)
        return
    trained_on = json.loads(summary_path.read_text()).get("data_fingerprint")
    if trained_on != digest:
        raise TrainingError(
            f"the data under {data.root} differs from the data the weights were trained on "
            f"(fingerprint {digest}, {summary_path} has {trained_on}); restore that data or retrain"
        )


def metrics_entries(report: dict[str, Any]) -> dict[str, Any]:
    split = report["split"]
    entries = {
        f"{split}_map50": report["map50"],
        f"{split}_map50_95": report["map50_95"],
        f"{split}_ap50_per_class": {name: v["ap50"] for name, v in report["per_class"].items()},
        f"{split}_ap50_95_per_class": {
            name: v["ap50_95"] for name, v in report["per_class"].items()
        },
        f"{split}_images": report["images"],
        f"{split}_instances": report["instances"],
    }
    if "ultralytics_val" in report:
        entries[f"{split}_ultralytics_val_map50"] = report["ultralytics_val"]["map50"]
        entries[f"{split}_ultralytics_val_map50_95"] = report["ultralytics_val"]["map50_95"]
    return entries


def export_version(
    weights: Path,
    data: DataSet,
    *,
    imgsz: int,
    repository: Path,
    name: str,
    version: int | None = None,
    opset: int | None = None,
    samples: int = 0,
    tolerance: float = evaluation.DEFAULT_TOLERANCE,
    parity_min_iou: float = DEFAULT_MIN_IOU,
    threads: int | None = None,
    write_files: Callable[[Path, OnnxDetector], None] | None = None,
) -> ExportResult:
    """Export, check parity, evaluate and publish one model version atomically.

    `write_files` adds files to the staging folder before the rename, given
    the staged detector. Any exception leaves no version behind.
    """
    check_model_name(name)
    digest = fingerprint(data)
    check_fingerprint(weights, data, digest)
    eval_split = "test" if "test" in data.splits else "val"
    if version is None:
        version = next_version(repository, name)
    with staged_version(repository, name, version) as staging:
        onnx_path = staging / MODEL_FILENAME
        written_opset = export_onnx(weights, imgsz, onnx_path, opset)
        detector = OnnxDetector(onnx_path, detection_spec(imgsz), threads=threads)
        parity = check_parity(
            weights,
            detector,
            data.images("val")[:PARITY_IMAGES],
            SERVING_NMS,
            min_iou=parity_min_iou,
        )
        result = evaluation.evaluate(
            onnx_path, imgsz, data, eval_split, weights=weights, threads=threads
        )
        evaluation.check_agreement(result, tolerance)
        report = evaluation.write_report(staging, result, tolerance)
        if samples > 0:
            write_samples(
                staging,
                data.images(eval_split)[:samples],
                detector=detector,
                settings=SERVING_NMS,
                names=data.names,
                source=f"{eval_split} split of {data.yaml_path}",
            )
        if write_files is not None:
            write_files(staging, detector)
        extra_metadata: dict[str, Any] = {
            "source_weights": str(weights.resolve()),
            "data": str(data.yaml_path.resolve()),
            "report": evaluation.REPORT_FILE,
            "output_layout": "(batch, 4 + classes, anchors): cx, cy, w, h in input pixels, "
            "then one sigmoid score per class",
        }
        metadata = ModelMetadata(
            name=name,
            version=version,
            task="detection",
            labels=data.names,
            preprocess=detection_spec(imgsz),
            input_name=INPUT_NAME,
            output_names=[OUTPUT_NAME],
            metrics={**metrics_entries(report), **parity.as_metrics()},
            detection=DetectionSpec(
                conf_threshold=SERVING_NMS.conf_threshold,
                iou_threshold=SERVING_NMS.iou_threshold,
                max_det=SERVING_NMS.max_det,
            ),
            training_data_fingerprint=digest,
            exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
            exporter=exporter_versions(written_opset),
            **extra_metadata,
        )
        write_metadata(staging, metadata)
        write_reference_profile(staging, metadata, validation_images(data))
    return ExportResult(version_dir=repository / name / str(version), metadata=metadata)


def validation_images(data: DataSet) -> ReferenceImages:
    """Return the image files of the val split as stored, for reference.json."""
    paths = data.images("val")
    return ReferenceImages(
        files=(path.read_bytes() for path in paths),
        source=f"val split of {data.yaml_path} ({len(paths)} images), as stored",
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export YOLO weights to <repository>/<name>/<version>/ after parity checks.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--weights", type=Path, required=True, help="ultralytics .pt file")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data.yaml (default: the one the weights were trained on)",
    )
    parser.add_argument(
        "--imgsz", type=int, default=None, help="input size in pixels (default: the training size)"
    )
    parser.add_argument("--repository", type=Path, default=Path("models"), help="model repository")
    parser.add_argument("--name", default=DEFAULT_NAME, help="model name")
    parser.add_argument(
        "--version", type=int, default=None, help="version; None means one more than the newest"
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default: ultralytics' choice)"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=0,
        help="copy this many test images to samples/ with index.json",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=evaluation.DEFAULT_TOLERANCE,
        help="max allowed difference between our mAP50 and ultralytics val",
    )
    parser.add_argument(
        "--parity-min-iou",
        type=float,
        default=DEFAULT_MIN_IOU,
        help="min IoU of two matching boxes",
    )
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    return parser


def main(args: argparse.Namespace) -> ExportResult:
    if not args.weights.is_file():
        raise DataNotFoundError(f"weights file {args.weights} not found")
    if args.samples < 0 or not 0 < args.tolerance < 1 or not 0 < args.parity_min_iou <= 1:
        raise InvalidArgumentsError(
            "need --samples >= 0, 0 < --tolerance < 1 and 0 < --parity-min-iou <= 1"
        )
    train_args = checkpoint_train_args(args.weights)
    data_yaml = args.data or (Path(train_args["data"]) if train_args.get("data") else None)
    if data_yaml is None:
        raise InvalidArgumentsError(f"{args.weights} does not name its data set; pass --data")
    imgsz = args.imgsz or int(train_args.get("imgsz", 0))
    if imgsz < 32 or imgsz % 32:
        raise InvalidArgumentsError(f"--imgsz must be a positive multiple of 32, got {imgsz}")
    result = export_version(
        args.weights,
        load_data_yaml(data_yaml),
        imgsz=imgsz,
        repository=args.repository,
        name=args.name,
        version=args.version,
        opset=args.opset,
        samples=args.samples,
        tolerance=args.tolerance,
        parity_min_iou=args.parity_min_iou,
        threads=args.threads,
    )
    metrics = result.metadata.metrics
    split = "test" if "test_map50" in metrics else "val"
    print(
        f"{result.version_dir}: {split} mAP50 {metrics[f'{split}_map50']:.4f}, mAP50-95 "
        f"{metrics[f'{split}_map50_95']:.4f} (ultralytics val mAP50 "
        f"{metrics[f'{split}_ultralytics_val_map50']:.4f}); parity "
        f"{metrics['parity_matched']} boxes "
        f"matched, min IoU {metrics['parity_min_matched_iou']:.4f}"
    )
    return result


if __name__ == "__main__":
    from training.classification.cli import run

    run(get_args_parser(), main)
