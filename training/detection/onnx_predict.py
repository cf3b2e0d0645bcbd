"""Run an exported detector with ONNX Runtime through the serving code path.

Decoding (`services.common.imaging.decode_image`), letterboxing
(`services.common.letterbox`) and decoding plus NMS
(`services.detector.postprocess`) are the functions the detector service
calls, so evaluation and the parity check measure what serving returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from services.common.imaging import decode_image
from services.common.letterbox import LetterboxTransform, letterbox_tensor
from services.common.metadata import PreprocessSpec
from services.detector.postprocess import postprocess
from training.detection.metrics import Detections

INPUT_NAME = "images"
OUTPUT_NAME = "output0"
# ultralytics' letterbox pads with grey 114 and its YOLO heads have stride 32.
PAD_VALUE = 114
MAX_STRIDE = 32
# Large enough for any training image; decode_image rejects bigger ones.
MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class NmsSettings:
    """Score threshold, NMS IoU threshold and detection limit per image."""

    conf_threshold: float
    iou_threshold: float
    max_det: int = 300


# The thresholds of `yolo val`: every candidate above 0.001, IoU 0.7, 300 per image.
VAL_NMS = NmsSettings(conf_threshold=0.001, iou_threshold=0.7, max_det=300)


def detection_spec(imgsz: int) -> PreprocessSpec:
    """Return the preprocessing of an ultralytics detector exported at `imgsz` (square)."""
    return PreprocessSpec(
        height=imgsz,
        width=imgsz,
        color_mode="RGB",
        resize="letterbox",
        interpolation="bilinear",
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        pad_value=PAD_VALUE,
        stride=MAX_STRIDE,
    )


def onnx_session(path: Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


class OnnxDetector:
    """An exported detector and its preprocessing, returning boxes in original pixels."""

    def __init__(self, path: Path, spec: PreprocessSpec, *, threads: int | None = None) -> None:
        self.session = onnx_session(path, threads)
        self.spec = spec

    def raw_outputs(self, inputs: np.ndarray) -> np.ndarray:
        """Return output0 (N, 4 + classes, anchors) for a float32 batch (N, 3, H, W)."""
        (output,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: inputs})
        return np.asarray(output)

    def letterboxed(self, path: Path) -> tuple[np.ndarray, LetterboxTransform]:
        """Decode an image file as the service does and letterbox it to the model input."""
        decoded = decode_image(path.read_bytes(), max_pixels=MAX_PIXELS)
        return letterbox_tensor(decoded.image, self.spec)

    def predict_files(
        self, paths: Sequence[Path], settings: NmsSettings, *, batch_size: int = 32
    ) -> Iterator[Detections]:
        """Yield the detections of each image file, in order, in original-image pixels."""
        for start in range(0, len(paths), batch_size):
            tensors = []
            transforms = []
            for path in paths[start : start + batch_size]:
                tensor, transform = self.letterboxed(path)
                tensors.append(tensor)
                transforms.append(transform)
            outputs = self.raw_outputs(np.stack(tensors))
            for output, transform in zip(outputs, transforms, strict=True):
                yield self.postprocess(output, transform, settings)

    @staticmethod
    def postprocess(
        output: np.ndarray, transform: LetterboxTransform, settings: NmsSettings
    ) -> Detections:
        """Decode one image's raw output, run NMS and map the boxes to the original image."""
        kept = postprocess(
            output,
            conf_threshold=settings.conf_threshold,
            iou_threshold=settings.iou_threshold,
            max_det=settings.max_det,
        )
        return Detections(
            boxes=transform.to_original(kept.boxes),
            scores=kept.scores.astype(np.float64),
            classes=kept.class_ids,
        )
