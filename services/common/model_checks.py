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
    """Check that the preprocess spec suits the task: detectors letterbox, classifiers do not."""
    spec = metadata.preprocess
    if metadata.task == "classification" and spec.resize == "letterbox":
        return (
            "preprocess.resize is 'letterbox', which is for detection models; "
            "use 'stretch' or 'shorter_side_center_crop' for a classifier"
        )
    if metadata.task == "detection" and (
        spec.resize != "letterbox" or spec.interpolation != "bilinear"
    ):
        # The detector's letterbox reproduces ultralytics' OpenCV bilinear resize only.
        return (
            f"preprocess has resize {spec.resize!r} with {spec.interpolation!r} "
            "interpolation; detection models need resize 'letterbox' with 'bilinear'"
        )
    return None


def check_output_shape(shape: tuple[int, ...], metadata: ModelMetadata) -> str | None:
    """Check the shape of the first output of a one-image run.

    A classifier must return (1, number of labels). A detector must return
    the raw YOLOv8/YOLO11/YOLOv5u layout (1, 4 + number of labels, anchors),
    which is what ultralytics exports with `nms=False`.
    """
    if metadata.task == "detection":
        return _check_detection_output(shape, metadata)
    expected = (1, metadata.num_classes)
    if shape != expected:
        return (
            f"output {metadata.output_names[0]!r} has shape {shape} for one image, "
            f"expected {expected} because model.json lists {metadata.num_classes} labels"
        )
    return None


def _check_detection_output(shape: tuple[int, ...], metadata: ModelMetadata) -> str | None:
    rows = 4 + metadata.num_classes
    if len(shape) == 3 and shape[0] == 1 and shape[1] == rows and shape[2] >= 1:
        return None
    problem = (
        f"output {metadata.output_names[0]!r} has shape {shape} for one image, expected "
        f"(1, {rows}, anchors): 4 box rows plus one score row for each of the "
        f"{metadata.num_classes} labels in model.json"
    )
    if len(shape) == 3 and shape[-1] == 6:
        # End-to-end exports of NMS-free heads (YOLOv10, YOLO26) return
        # (1, max_det, 6) rows of x1, y1, x2, y2, score, class instead.
        problem += (
            "; this looks like an end-to-end export, so export the raw head output "
            "again (ultralytics 8.4 does when the nms export argument is not passed)"
        )
    return problem
