"""Encoding of inference responses: a JSON object, then the binary data of binary outputs.

With any binary output the `Inference-Header-Content-Length` header gives the
length of the JSON part, as Triton's binary tensor data extension requires.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.common.inference_protocol.datatypes import datatype_of, serialize_bytes
from services.common.inference_protocol.request_codec import (
    BINARY_DATA_SIZE,
    HEADER_LENGTH_HEADER,
)

JSON_MEDIA_TYPE = "application/json"
BINARY_MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class OutputTensor:
    """An output to send: numeric data or an object array of `bytes`, as JSON or binary data."""

    name: str
    data: np.ndarray
    binary: bool


@dataclass(frozen=True)
class EncodedResponse:
    body: bytes
    media_type: str
    headers: dict[str, str]


def encode_response(
    model_name: str, model_version: int, request_id: str | None, outputs: Sequence[OutputTensor]
) -> EncodedResponse:
    """Encode the response object, followed by the binary data of the binary outputs."""
    entries = []
    chunks = []
    for output in outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": datatype_of(output.data),
            "shape": list(output.data.shape),
        }
        if output.binary:
            raw = _binary_data(output.data)
            entry["parameters"] = {BINARY_DATA_SIZE: len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(output.data)
        entries.append(entry)

    document: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if request_id is not None:
        document["id"] = request_id
    document["outputs"] = entries
    header = json.dumps(document, allow_nan=False).encode("utf-8")
    if not chunks:
        return EncodedResponse(header, JSON_MEDIA_TYPE, {})
    return EncodedResponse(
        header + b"".join(chunks), BINARY_MEDIA_TYPE, {HEADER_LENGTH_HEADER: str(len(header))}
    )


def _binary_data(data: np.ndarray) -> bytes:
    if data.dtype == np.object_:
        return serialize_bytes(list(data.ravel()))
    little_endian = data.dtype.newbyteorder("<")
    return np.ascontiguousarray(data, dtype=little_endian).tobytes()


def _json_data(data: np.ndarray) -> list[Any]:
    if data.dtype == np.object_:
        return [element.decode("utf-8") for element in data.ravel()]
    flat: list[Any] = data.ravel().tolist()
    return flat
