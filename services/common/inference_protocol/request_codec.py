"""Decoding of inference request bodies, JSON and binary.

A body is a JSON object, optionally followed by binary tensor data (Triton's
binary tensor data extension). The `Inference-Header-Content-Length` header
gives the length of the JSON part. Each input with a `binary_data_size`
parameter takes that many bytes of the binary part, in input order, and the
sizes must add up to the whole binary part.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
from pydantic import ValidationError

from services.common.errors import InvalidRequest
from services.common.inference_protocol.datatypes import (
    BYTES,
    DATATYPES,
    NUMERIC_DATATYPES,
    deserialize_bytes,
)
from services.common.inference_protocol.schemas import (
    MAX_RANK,
    InferenceRequest,
    ParameterValue,
    RequestInput,
    RequestOutput,
)

HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
BINARY_DATA_SIZE = "binary_data_size"
_MAX_REPORTED_PROBLEMS = 5
# numpy kinds of JSON numbers that each datatype accepts: integers fit float
# tensors, but fractions do not fit integer tensors.
_ACCEPTED_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}


@dataclass(frozen=True)
class InputTensor:
    """A decoded input. `data` has the declared shape; BYTES elements are `bytes` objects.

    `binary` is True when the data came as binary data rather than JSON.
    That matters for BYTES, because JSON strings cannot carry arbitrary bytes.
    """

    name: str
    datatype: str
    data: np.ndarray
    binary: bool


@dataclass(frozen=True)
class DecodedRequest:
    id: str | None
    parameters: dict[str, ParameterValue]
    inputs: list[InputTensor]
    outputs: list[RequestOutput] | None


def decode_request(body: bytes, header_length: str | None) -> DecodedRequest:
    """Parse and check a request body; raise InvalidRequest (400) naming the first problem."""
    header, binary = split_body(body, header_length)
    request = _validate_header(header)
    return DecodedRequest(
        id=request.id,
        parameters=request.parameters,
        inputs=decode_inputs(request.inputs, binary),
        outputs=request.outputs,
    )


def split_body(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """Return the JSON part and the binary part of a body."""
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view) :]
    if not (header_length.isascii() and header_length.isdigit()):
        raise InvalidRequest(
            f"the {HEADER_LENGTH_HEADER} header must be the byte length of the JSON object "
            "at the start of the body, as a decimal number"
        )
    length = int(header_length)
    if not 0 < length <= len(view):
        raise InvalidRequest(
            f"the {HEADER_LENGTH_HEADER} header gives {length} bytes, but the body has "
            f"{len(view)} bytes; it must give the length of the JSON object at the start of "
            "the body"
        )
    return view[:length], view[length:]


def _reject_constant(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not a JSON number")


def _validate_header(header: memoryview) -> InferenceRequest:
    try:
        document = json.loads(bytes(header), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise InvalidRequest(
            "the inference request is not a valid JSON object; send UTF-8 JSON, and with "
            f"binary tensor data set {HEADER_LENGTH_HEADER} to the length of the JSON part"
        ) from exc
    try:
        return InferenceRequest.model_validate(document)
    except ValidationError as exc:
        raise InvalidRequest(validation_message(exc)) from exc


def validation_message(exc: ValidationError) -> str:
    """Describe pydantic errors by location and rule, without the rejected values."""
    problems = []
    for error in exc.errors()[:_MAX_REPORTED_PROBLEMS]:
        location = ".".join(str(item) for item in error["loc"]) or "request"
        problems.append(f"{location}: {error['msg']}")
    more = len(exc.errors()) - len(problems)
    suffix = f" (and {more} more)" if more > 0 else ""
    return "invalid inference request: " + "; ".join(problems) + suffix


def decode_inputs(inputs: Sequence[RequestInput], binary: memoryview) -> list[InputTensor]:
    """Decode every input, taking binary data in input order, and check that none is left over."""
    seen: set[str] = set()
    decoded = []
    offset = 0
    for spec in inputs:
        if spec.name in seen:
            raise InvalidRequest(f"input {spec.name!r} appears twice; send each input once")
        seen.add(spec.name)
        _check_input_parameters(spec)
        size = spec.parameters.get(BINARY_DATA_SIZE)
        if size is None:
            decoded.append(_from_json(spec))
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidRequest(
                f"input {spec.name!r}: parameter {BINARY_DATA_SIZE!r} must be a non-negative "
                "integer byte count"
            )
        if offset + size > len(binary):
            raise InvalidRequest(
                f"input {spec.name!r} declares {size} bytes of binary data, but only "
                f"{len(binary) - offset} bytes follow; send the data after the JSON object and "
                f"set {HEADER_LENGTH_HEADER} to the length of the JSON part"
            )
        decoded.append(_from_binary(spec, binary[offset : offset + size]))
        offset += size
    if offset != len(binary):
        raise InvalidRequest(
            f"the body has {len(binary) - offset} bytes of binary data that no input's "
            f"{BINARY_DATA_SIZE!r} accounts for; the sizes must add up to the data after "
            "the JSON object"
        )
    return decoded


def _check_input_parameters(spec: RequestInput) -> None:
    unknown = sorted(set(spec.parameters) - {BINARY_DATA_SIZE})
    if unknown:
        raise InvalidRequest(
            f"input {spec.name!r} has unsupported parameters: {', '.join(unknown)}; only "
            f"{BINARY_DATA_SIZE!r} is supported (no shared memory)"
        )
    if spec.datatype not in DATATYPES:
        raise InvalidRequest(
            f"input {spec.name!r} has datatype {spec.datatype!r}, which is not supported; "
            f"use one of {', '.join(DATATYPES)}"
        )
    if spec.parameters.get(BINARY_DATA_SIZE) is not None and spec.data is not None:
        raise InvalidRequest(
            f"input {spec.name!r} has both JSON data and {BINARY_DATA_SIZE!r}; send one of them"
        )


def _element_count(spec: RequestInput) -> int:
    return math.prod(spec.shape)


def _from_binary(spec: RequestInput, chunk: memoryview) -> InputTensor:
    count = _element_count(spec)
    if spec.datatype == BYTES:
        elements = deserialize_bytes(chunk, count, spec.name)
        return InputTensor(spec.name, BYTES, _object_array(elements, spec.shape), binary=True)

    dtype = NUMERIC_DATATYPES[spec.datatype]
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise InvalidRequest(
            f"input {spec.name!r} has {len(chunk)} bytes of binary data, but shape "
            f"{spec.shape} of {spec.datatype} needs {expected} bytes"
        )
    array = np.frombuffer(chunk, dtype=dtype).reshape(spec.shape)
    if spec.datatype == "BOOL" and np.any(np.frombuffer(chunk, dtype=np.uint8) > 1):
        raise InvalidRequest(f"input {spec.name!r}: BOOL elements must be the bytes 0 or 1")
    return InputTensor(spec.name, spec.datatype, array, binary=True)


def _from_json(spec: RequestInput) -> InputTensor:
    if spec.data is None:
        raise InvalidRequest(
            f"input {spec.name!r} has no data; send it as 'data' or as binary data with "
            f"the {BINARY_DATA_SIZE!r} parameter"
        )
    if not isinstance(spec.data, list):
        raise InvalidRequest(f"input {spec.name!r}: 'data' must be a JSON array")
    if spec.datatype == BYTES:
        strings = _flatten_strings(spec.data, spec.name)
        _check_count(spec, len(strings))
        elements = [text.encode("utf-8") for text in strings]
        return InputTensor(spec.name, BYTES, _object_array(elements, spec.shape), binary=False)
    array = _numeric_array(spec)
    _check_count(spec, array.size)
    return InputTensor(spec.name, spec.datatype, array.reshape(spec.shape), binary=False)


def _check_count(spec: RequestInput, count: int) -> None:
    expected = _element_count(spec)
    if count != expected:
        raise InvalidRequest(
            f"input {spec.name!r} has {count} elements, but its shape {spec.shape} needs {expected}"
        )


def _numeric_array(spec: RequestInput) -> np.ndarray:
    dtype = NUMERIC_DATATYPES[spec.datatype]
    wrong_type = InvalidRequest(
        f"input {spec.name!r}: 'data' must be a flat or nested array of "
        f"{_element_description(dtype)} for datatype {spec.datatype}"
    )
    try:
        array = np.asarray(spec.data)
    except (ValueError, RecursionError) as exc:  # ragged nesting
        raise wrong_type from exc
    if array.ndim > MAX_RANK:
        raise wrong_type
    if array.size == 0:
        # json gives no element type for [], so numpy guesses float64.
        return np.empty(array.shape, dtype=dtype)
    if array.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
        raise wrong_type
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise InvalidRequest(
                f"input {spec.name!r} has values outside the {spec.datatype} range "
                f"[{limits.min}, {limits.max}]"
            )
    with np.errstate(over="ignore"):
        converted = array.astype(dtype)
    if dtype.kind == "f" and not np.all(np.isfinite(converted)):
        raise InvalidRequest(
            f"input {spec.name!r} has values that are not finite in {spec.datatype}; send "
            "numbers within the datatype's range"
        )
    return converted


def _element_description(dtype: np.dtype) -> str:
    return {"b": "true/false values", "f": "numbers"}.get(dtype.kind, "integers")


def _flatten_strings(data: list[Any], name: str) -> list[str]:
    strings: list[str] = []
    pending: list[tuple[Any, int]] = [(data, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, list) and depth < MAX_RANK:
            pending.extend((child, depth + 1) for child in reversed(item))
        else:
            raise InvalidRequest(
                f"input {name!r}: 'data' of a BYTES tensor must be a flat or nested array "
                "of strings"
            )
    return strings


def _object_array(elements: Sequence[bytes], shape: Sequence[int]) -> np.ndarray:
    array = np.empty(len(elements), dtype=np.object_)
    array[:] = list(elements)
    return array.reshape(shape)
