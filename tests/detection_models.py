"""Real ONNX detection models for tests, in the raw YOLOv8 output layout (1, 4 + labels, anchors).

Two kinds:

- The colour detector, built with `onnx.helper` (no torch). It splits the
  input into cells of `COLOUR_CELL` pixels and predicts one cell-sized box
  per cell, scored by how red, green or blue the cell is on average. A red
  square therefore gives boxes on exactly the cells it covers, which makes
  box positions predictable.
- An ultralytics YOLOv8n with random weights, exported by ultralytics itself.
  Its batch-norm statistics are taken from four scikit-image photos and its
  class biases are raised, so that it returns tens of varied boxes per photo.
  The boxes mean nothing, but the graph, the output layout and the export
  path are those of a trained model, which is what parity tests need.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from services.common.metadata import (
    MODEL_FILENAME,
    DetectionSpec,
    ModelMetadata,
    PreprocessSpec,
    write_metadata,
)
from tests.onnx_models import IR_VERSION, OPSET

COLOUR_DETECTOR = "colour-boxes"
COLOUR_LABELS = ("red", "green", "blue")
COLOUR_INPUT_SIZE = 64
COLOUR_CELL = 8
# Logit of class c for a cell with mean channel values r, g, b in [0, 1]:
# GAIN * (2 * own - others) - OFFSET. A pure red cell scores sigmoid(10) for
# red, and the grey letterbox padding (114) scores sigmoid(-6) for every class.
_GAIN = 8.0
_OFFSET = 6.0

YOLO_MODEL = "random-yolo"
YOLO_LABELS = ("circle", "square", "triangle")
YOLO_INPUT_SIZE = 320
# Added to the random model's class-logit biases: ultralytics initialises them
# near -8, which keeps every score below 0.01.
_YOLO_SCORE_SHIFT = 6.0


def letterbox_spec(input_size: int) -> PreprocessSpec:
    """Return ultralytics' preprocessing: letterbox, pad 114, RGB scaled to [0, 1]."""
    return PreprocessSpec(
        height=input_size,
        width=input_size,
        color_mode="RGB",
        resize="letterbox",
        interpolation="bilinear",
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        pad_value=114,
        stride=32,
    )


def detection_metadata(
    name: str,
    labels: Sequence[str],
    input_size: int,
    *,
    version: int = 1,
    input_name: str = "images",
    output_name: str = "output0",
    detection: DetectionSpec | None = None,
) -> ModelMetadata:
    return ModelMetadata(
        name=name,
        version=version,
        task="detection",
        labels=list(labels),
        preprocess=letterbox_spec(input_size),
        input_name=input_name,
        output_names=[output_name],
        metrics={"map50": 0.0},
        detection=detection or DetectionSpec(),
    )


def colour_detector(
    input_size: int = COLOUR_INPUT_SIZE, cell: int = COLOUR_CELL
) -> onnx.ModelProto:
    """Build the colour detector: input (1, 3, size, size), output (1, 7, (size / cell) ** 2)."""
    grid = input_size // cell
    anchors = grid * grid
    weights = np.full((3, 3, 1, 1), -_GAIN, dtype=np.float32)
    for channel in range(3):
        weights[channel, channel] = 2 * _GAIN
    bias = np.full(3, -_OFFSET, dtype=np.float32)

    rows, columns = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    boxes = np.stack(
        [
            (columns.ravel() + 0.5) * cell,
            (rows.ravel() + 0.5) * cell,
            np.full(anchors, cell),
            np.full(anchors, cell),
        ]
    ).astype(np.float32)[np.newaxis]

    graph = helper.make_graph(
        nodes=[
            helper.make_node(
                "AveragePool",
                ["images"],
                ["pooled"],
                kernel_shape=[cell, cell],
                strides=[cell, cell],
            ),
            helper.make_node("Conv", ["pooled", "weights", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["scores_grid"]),
            helper.make_node("Reshape", ["scores_grid", "scores_shape"], ["scores"]),
            helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1),
        ],
        name="colour_detector",
        inputs=[
            helper.make_tensor_value_info(
                "images", TensorProto.FLOAT, [1, 3, input_size, input_size]
            )
        ],
        outputs=[helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 7, anchors])],
        initializer=[
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
            numpy_helper.from_array(boxes, "boxes"),
            numpy_helper.from_array(np.array([1, 3, anchors], dtype=np.int64), "scores_shape"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="visionserve-tests"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_detector_version(
    repository: Path, model_path_or_proto: Path | onnx.ModelProto, metadata: ModelMetadata
) -> Path:
    """Write `model.onnx` and `model.json` to `repository/<name>/<version>/`; return the folder."""
    version_dir = repository / metadata.name / str(metadata.version)
    version_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(model_path_or_proto, Path):
        shutil.copyfile(model_path_or_proto, version_dir / MODEL_FILENAME)
    else:
        onnx.save(model_path_or_proto, version_dir / MODEL_FILENAME)
    write_metadata(version_dir, metadata)
    return version_dir


def build_colour_detector_repository(repository: Path) -> Path:
    metadata = detection_metadata(COLOUR_DETECTOR, COLOUR_LABELS, COLOUR_INPUT_SIZE)
    write_detector_version(repository, colour_detector(), metadata)
    return repository


def calibration_photos() -> list[np.ndarray]:
    """Return four RGB photos shipped with scikit-image, of different sizes and aspect ratios."""
    import skimage.data

    return [
        skimage.data.coffee(),
        skimage.data.astronaut(),
        skimage.data.chelsea(),
        skimage.data.rocket(),
    ]


@functools.cache
def random_yolo_onnx(seed: int = 0, *, dynamic: bool = False) -> Path:
    """Export the random YOLOv8n once per test process and return the ONNX path.

    `dynamic` exports dynamic batch, height and width axes, as our training
    export does; otherwise every axis is fixed, as ultralytics does by default.
    Imports torch and ultralytics, so only tests call it.
    """
    from training.detection.offline import offline_ultralytics

    offline_ultralytics()
    import torch
    from ultralytics import YOLO
    from ultralytics.data.augment import LetterBox
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    wrapper = YOLO("yolov8n.yaml")
    network = DetectionModel(wrapper.model.yaml, nc=len(YOLO_LABELS), verbose=False)
    network.args = wrapper.model.args
    network.task = "detect"
    network.names = dict(enumerate(YOLO_LABELS))

    # Random weights shrink activations layer after layer. Batch statistics
    # from real photos bring them back to a useful range.
    letterbox = LetterBox((YOLO_INPUT_SIZE, YOLO_INPUT_SIZE), auto=False)
    photos = np.stack([letterbox(image=photo) for photo in calibration_photos()])
    batch = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batch
    network.train()
    with torch.no_grad():
        network(batch)
        for branch in network.model[-1].cv3:
            branch[-1].bias += _YOLO_SCORE_SHIFT
    network.eval()
    wrapper.model = network

    folder = Path(tempfile.mkdtemp(prefix="visionserve-yolo-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    # The exporter writes next to the model's source, which is the working
    # directory for a model built from a YAML name.
    with contextlib.chdir(folder):
        exported = wrapper.export(
            format="onnx",
            imgsz=YOLO_INPUT_SIZE,
            simplify=False,
            dynamic=dynamic,
            opset=OPSET,
            verbose=False,
        )
    return folder / Path(exported).name


def build_yolo_repository(
    repository: Path, detection: DetectionSpec | None = None, *, dynamic: bool = False
) -> Path:
    metadata = detection_metadata(YOLO_MODEL, YOLO_LABELS, YOLO_INPUT_SIZE, detection=detection)
    write_detector_version(repository, random_yolo_onnx(dynamic=dynamic), metadata)
    return repository
