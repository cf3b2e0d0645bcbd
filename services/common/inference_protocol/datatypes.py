"""Tensor datatypes of the Open Inference Protocol and their binary layout.

Binary tensor data is little-endian and row-major without padding. A BOOL
element is one byte (0 or 1). A BYTES element is a 4-byte little-endian
unsigned length followed by that many bytes, as Triton's binary tensor data
extension defines it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from services.common.errors import InvalidRequest

BYTES = "BYTES"
NUMERIC_DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*NUMERIC_DATATYPES, BYTES)

_LENGTH = struct.Struct("<I")


def datatype_of(array: np.ndarray) -> str:
    """Return the protocol datatype of a numeric or object (BYTES) array."""
    if array.dtype == np.object_:
        return BYTES
    for name, dtype in NUMERIC_DATATYPES.items():
        if array.dtype == dtype.newbyteorder("="):
            return name
    raise ValueError(f"no Open Inference Protocol datatype for numpy dtype {array.dtype}")


def serialize_bytes(elements: Sequence[bytes]) -> bytes:
    """Serialize BYTES elements, each as its 4-byte length followed by its bytes."""
    return b"".join(_LENGTH.pack(len(element)) + element for element in elements)


def deserialize_bytes(data: bytes | memoryview, count: int, tensor_name: str) -> list[bytes]:
    """Split binary BYTES data into exactly `count` elements.

    Raises InvalidRequest (400) when a length prefix runs past the data or
    the data contains more or fewer elements than `count`.
    """
    view = memoryview(data)
    elements: list[bytes] = []
    position = 0
    while position < len(view):
        if position + _LENGTH.size > len(view):
            raise InvalidRequest(
                f"the binary data of input {tensor_name!r} ends inside a BYTES length prefix; "
                "each element needs a 4-byte little-endian length before its bytes"
            )
        (length,) = _LENGTH.unpack_from(view, position)
        start = position + _LENGTH.size
        if start + length > len(view):
            raise InvalidRequest(
                f"element {len(elements)} of input {tensor_name!r} declares {length} bytes, "
                f"but only {len(view) - start} remain in its binary data"
            )
        elements.append(bytes(view[start : start + length]))
        position = start + length
    if len(elements) != count:
        raise InvalidRequest(
            f"the binary data of input {tensor_name!r} contains {len(elements)} BYTES elements, "
            f"but its shape needs {count}"
        )
    return elements
