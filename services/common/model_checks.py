"""Checks that an ONNX graph agrees with its `model.json` before it serves requests.

Each check returns a message describing the first mismatch, or None when the
graph fits. The repository turns a message into a start-up error.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnxruntime as ort

from services.common.metadata import ModelMetadata

_FLOAT_TENSOR = "tensor(float)"


def check_signature(session: ort.InferenceSession, metadata: ModelMetadata) -> str | None:
    """Compare the graph's inputs and outputs with the names and preprocess spec in metadata.

    The input must be float32 with shape (batch, C, H, W). Batch must be
    symbolic or 1, because the services send one image per run. C, H and W
    must equal the preprocess spec wherever the graph fixes them.
    """
    inputs = {node.name: node for node in session.get_inputs()}
    expected_name = metadata.input_name
    if expected_name not in inputs:
        return (
            f"the graph has no input named {expected_name!r} (model.json input_name); "
            f"its inputs are: {', '.join(inputs)}"
        )
    extra = sorted(name for name in inputs if name != expected_name)
    if extra:
        return f"the graph has inputs besides {expected_name!r}: {', '.join(extra)}"

    node = inputs[expected_name]
    if node.type != _FLOAT_TENSOR:
        return f"input {expected_name!r} is {node.type}, expected {_FLOAT_TENSOR}"
    problem = _check_input_shape(node.shape, metadata)
    if problem:
        return f"input {expected_name!r}: {problem}"

    outputs = [node.name for node in session.get_outputs()]
    if metadata.output_names[0] not in outputs:
        return (
            f"the graph has no output named {metadata.output_names[0]!r} "
            f"(first of model.json output_names); its outputs are: {', '.join(outputs)}"
        )
    return None


def _check_input_shape(shape: Sequence[int | str | None], metadata: ModelMetadata) -> str | None:
    spec = metadata.preprocess
    expected = (spec.channels, spec.height, spec.width)
    if len(shape) != 4:
        return f"shape {list(shape)} has rank {len(shape)}, expected (batch, C, H, W)"

    batch, *image_dims = shape
    if isinstance(batch, int) and batch != 1:
        return f"batch dimension is fixed at {batch}; export it as symbolic or 1"
    for axis, actual, expected_dim in zip("CHW", image_dims, expected, strict=True):
        if isinstance(actual, int) and actual != expected_dim:
            return (
                f"shape {list(shape)} has {axis}={actual}, but the preprocess spec in "
                f"model.json gives {axis}={expected_dim} (shape (batch, {expected[0]}, "
                f"{expected[1]}, {expected[2]}))"
            )
    return None


def check_preprocess(metadata: ModelMetadata) -> str | None:
    """Check that the preprocess spec suits the task: letterboxing is for detectors only."""
    if metadata.task == "classification" and metadata.preprocess.resize == "letterbox":
        return (
            "preprocess.resize is 'letterbox', which is for detection models; "
            "use 'stretch' or 'shorter_side_center_crop' for a classifier"
        )
    return None


def check_output_shape(shape: tuple[int, ...], metadata: ModelMetadata) -> str | None:
    """Check the shape of the first output of a one-image run.

    A classifier must return (1, number of labels).
    """
    if metadata.task != "classification":
        # NOTE: detection outputs differ between exporters; the detector
        # service is expected to check its own layout.
        return None
    expected = (1, metadata.num_classes)
    if shape != expected:
        return (
            f"output {metadata.output_names[0]!r} has shape {shape} for one image, "
            f"expected {expected} because model.json lists {metadata.num_classes} labels"
        )
    return None
