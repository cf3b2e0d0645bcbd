"""Validation of a detection request's parameters against the model and the settings.

`/v1` routes take them as query parameters and check them before the body is
read. `/v2` inference takes them as request parameters in the body. Every
failure is an InvalidParameter (422) that names the parameter and its
allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.errors import InvalidParameter
from services.common.metadata import DetectionSpec
from services.common.repository import LoadedModel


@dataclass(frozen=True)
class DetectionParameters:
    """Post-processing options of one request, after defaults and validation."""

    conf_threshold: float
    iou_threshold: float
    max_det: int
    classes: tuple[int, ...] | None
    agnostic: bool


def detection_defaults(model: LoadedModel) -> DetectionSpec:
    """Return the `detection` section of the model's model.json, or the schema defaults."""
    return model.metadata.detection or DetectionSpec()


def resolve_parameters(
    model: LoadedModel,
    *,
    conf: float | None,
    iou: float | None,
    max_det: int | None,
    classes: Sequence[str] | None,
    agnostic: bool,
    max_det_limit: int,
    source: str = "query parameter",
) -> DetectionParameters:
    """Fill in the model's defaults and check each value, raising InvalidParameter (422).

    `source` names where the values came from in error messages.
    """
    defaults = detection_defaults(model)
    conf_threshold = defaults.conf_threshold if conf is None else _fraction(source, "conf", conf)
    iou_threshold = defaults.iou_threshold if iou is None else _fraction(source, "iou", iou)
    if max_det is None:
        max_det = min(defaults.max_det, max_det_limit)
    elif not 1 <= max_det <= max_det_limit:
        raise InvalidParameter(
            f"{source} 'max_det' must be between 1 and {max_det_limit}; got {max_det}"
        )
    return DetectionParameters(
        conf_threshold=conf_threshold,
        iou_threshold=iou_threshold,
        max_det=max_det,
        classes=None if classes is None else parse_classes(classes, model),
        agnostic=agnostic,
    )


def _fraction(source: str, name: str, value: float) -> float:
    # The comparison is False for NaN, so NaN is rejected too.
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InvalidParameter(f"{source} {name!r} must be between 0 and 1; got {value}")
    return value


def parse_classes(values: Sequence[str], model: LoadedModel) -> tuple[int, ...]:
    """Parse class ids given as comma-separated lists, repeated parameters, or both.

    Returns the sorted, unique ids. Raises InvalidParameter for an empty value
    (as in "1,,2") or a value that is not a class id of `model`.
    """
    num_classes = model.metadata.num_classes
    allowed = (
        f"query parameter 'classes' must be class ids from 0 to {num_classes - 1} for model "
        f"{model.name}, separated by commas or given as repeated parameters"
    )
    tokens = [token.strip() for value in values for token in value.split(",")]
    ids = set()
    for token in tokens:
        if not token:
            raise InvalidParameter(f"{allowed}; got an empty value")
        if not token.isascii() or not token.isdigit():
            # The token is client input, so it is not quoted back.
            raise InvalidParameter(f"{allowed}; got a value that is not a number")
        class_id = int(token)
        if class_id >= num_classes:
            raise InvalidParameter(f"{allowed}; got {class_id}")
        ids.add(class_id)
    if not ids:
        raise InvalidParameter(f"{allowed}; got an empty list")
    return tuple(sorted(ids))


def default_parameters(model: LoadedModel, max_det_limit: int) -> DetectionParameters:
    """Return the parameters of a request to `model` that sets none."""
    return resolve_parameters(
        model,
        conf=None,
        iou=None,
        max_det=None,
        classes=None,
        agnostic=False,
        max_det_limit=max_det_limit,
    )
