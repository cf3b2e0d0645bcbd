"""Tiny but real ONNX classifiers for tests, built with `onnx.helper` (no torch).

The colour model averages each channel over the image (GlobalAveragePool),
flattens to (N, 3) and applies a Gemm whose weights copy channel i to class i.
A pure red image therefore gives "red" with a probability near 1, and so on
for green and blue. Usage:

    repository = build_colour_repository(tmp_path / "models")
    # repository/colours/1/{model.onnx, model.json}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from services.common.metadata import (
    MODEL_FILENAME,
    ModelMetadata,
    PreprocessSpec,
    write_metadata,
)

COLOUR_MODEL = "colours"
COLOUR_LABELS = ("red", "green", "blue")
INPUT_SIZE = 8
# Input values lie in [-1, 1] after mean 0.5 and std 0.5, so a pure colour
# gives logits of +GAIN and -GAIN: probabilities of about 0.9993 and 0.0003.
GAIN = 4.0
# Not the newest opset and IR version, so that older onnxruntime builds load the file too.
OPSET = 17
IR_VERSION = 8


def colour_classifier(
    num_classes: int = len(COLOUR_LABELS),
    *,
    input_size: int = INPUT_SIZE,
    batch_dim: str | int = "N",
    input_name: str = "input",
    output_name: str = "logits",
) -> onnx.ModelProto:
    """Build the colour model: input (N, 3, size, size) float32, output (N, num_classes).

    Classes beyond the third get zero weights. `batch_dim` may be a symbolic
    name or a fixed size.
    """
    weights = np.zeros((3, num_classes), dtype=np.float32)
    for channel in range(min(3, num_classes)):
        weights[channel, channel] = GAIN
    bias = np.zeros(num_classes, dtype=np.float32)

    graph = helper.make_graph(
        nodes=[
            helper.make_node("GlobalAveragePool", [input_name], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
            helper.make_node("Gemm", ["features", "weights", "bias"], [output_name]),
        ],
        name="colour_classifier",
        inputs=[
            helper.make_tensor_value_info(
                input_name, TensorProto.FLOAT, [batch_dim, 3, input_size, input_size]
            )
        ],
        outputs=[
            helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch_dim, num_classes])
        ],
        initializer=[
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="visionserve-tests"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def colour_metadata(
    name: str = COLOUR_MODEL,
    version: int = 1,
    labels: Sequence[str] = COLOUR_LABELS,
    *,
    input_size: int = INPUT_SIZE,
    task: str = "classification",
) -> ModelMetadata:
    """Return the `model.json` contents that match `colour_classifier`."""
    return ModelMetadata.model_validate(
        {
            "name": name,
            "version": version,
            "task": task,
            "labels": list(labels),
            "preprocess": PreprocessSpec(
                height=input_size,
                width=input_size,
                color_mode="RGB",
                resize="stretch",
                interpolation="bilinear",
                mean=(0.5, 0.5, 0.5),
                std=(0.5, 0.5, 0.5),
            ),
            "metrics": {"top1_accuracy": 1.0},
        }
    )


def write_model_version(
    repository: Path, model: onnx.ModelProto, metadata: ModelMetadata, *, folder: str | None = None
) -> Path:
    """Write `model.onnx` and `model.json` to `repository/<name>/<version>/` and return that folder.

    `folder` overrides the model folder name, to build a repository whose
    folder and `model.json` disagree.
    """
    version_dir = repository / (folder or metadata.name) / str(metadata.version)
    version_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, version_dir / MODEL_FILENAME)
    write_metadata(version_dir, metadata)
    return version_dir


def build_colour_repository(repository: Path, versions: Sequence[int] = (1,)) -> Path:
    """Write the colour model as `COLOUR_MODEL` in each of `versions` and return `repository`."""
    for version in versions:
        write_model_version(repository, colour_classifier(), colour_metadata(version=version))
    return repository
