"""Selection and encoding of the outputs a request receives, and Triton's classification extension.

An output may carry two parameters: `binary_data` (true for binary tensor
data) and `classification` (a count k: the output is replaced by its k
highest elements per row, as BYTES strings "value:index:label").
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from services.common.errors import InvalidRequest
from services.common.inference_protocol.schemas import ParameterValue, RequestOutput

BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
CLASSIFICATION = "classification"
_OUTPUT_PARAMETERS = (BINARY_DATA, CLASSIFICATION)


@dataclass(frozen=True)
class OutputSelection:
    """One output to return. `classification` is the requested count, or None for raw data."""

    name: str
    binary: bool
    classification: int | None = None


def binary_default(parameters: Mapping[str, ParameterValue]) -> bool:
    """Return the request's `binary_data_output` parameter, False when it is absent."""
    value = parameters.get(BINARY_DATA_OUTPUT, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"request parameter {BINARY_DATA_OUTPUT!r} must be true or false")
    return value


def select_outputs(
    requested: Sequence[RequestOutput] | None,
    available: Sequence[str],
    *,
    binary: bool,
    classifiable: Collection[str] = frozenset(),
    classification_limit: int = 0,
) -> list[OutputSelection]:
    """Check the requested outputs against `available`; without a request, return all of them.

    Only `classifiable` outputs accept a classification count, from 1 to
    `classification_limit`. Raises InvalidRequest (400).
    """
    if requested is None:
        return [OutputSelection(name, binary) for name in available]
    if not requested:
        raise InvalidRequest("'outputs' is an empty list; omit it to receive every output")

    selections = []
    seen: set[str] = set()
    for output in requested:
        if output.name in seen:
            raise InvalidRequest(f"output {output.name!r} is requested twice; request it once")
        seen.add(output.name)
        if output.name not in available:
            raise InvalidRequest(
                f"unknown output {output.name!r}; this request can return: {', '.join(available)}"
            )
        limit = classification_limit if output.name in classifiable else None
        selections.append(_selection(output, binary, limit))
    return selections


def _selection(
    output: RequestOutput, binary: bool, classification_limit: int | None
) -> OutputSelection:
    unknown = sorted(set(output.parameters) - set(_OUTPUT_PARAMETERS))
    if unknown:
        raise InvalidRequest(
            f"output {output.name!r} has unsupported parameters: {', '.join(unknown)}; "
            f"supported: {', '.join(_OUTPUT_PARAMETERS)} (no shared memory)"
        )
    chosen = output.parameters.get(BINARY_DATA, binary)
    if not isinstance(chosen, bool):
        raise InvalidRequest(f"output {output.name!r}: {BINARY_DATA!r} must be true or false")
    count = output.parameters.get(CLASSIFICATION)
    if count is None:
        return OutputSelection(output.name, chosen)
    if classification_limit is None:
        raise InvalidRequest(
            f"output {output.name!r} does not support the classification extension; "
            f"remove its {CLASSIFICATION!r} parameter"
        )
    out_of_range = InvalidRequest(
        f"output {output.name!r}: {CLASSIFICATION!r} must be an integer from 1 to "
        f"{classification_limit}"
    )
    if isinstance(count, bool) or not isinstance(count, int):
        raise out_of_range
    if not 1 <= count <= classification_limit:
        raise out_of_range
    return OutputSelection(output.name, chosen, count)


def classify(scores: np.ndarray, count: int, labels: Sequence[str]) -> np.ndarray:
    """Return the `count` highest elements of each row as BYTES "value:index:label".

    Rows are the last axis, so (N, C) scores give (N, count) strings. The
    highest value comes first and equal values keep class order.
    """
    rows = scores.reshape(-1, scores.shape[-1])
    order = np.argsort(-rows, axis=1, kind="stable")[:, :count]
    strings = np.empty(order.shape, dtype=np.object_)
    for row_index, (row, indices) in enumerate(zip(rows, order, strict=True)):
        for column, index in enumerate(indices):
            # str() of a numpy float32 is the shortest text that reads back as the same value.
            strings[row_index, column] = f"{row[index]!s}:{index}:{labels[index]}".encode()
    return strings.reshape((*scores.shape[:-1], count))
