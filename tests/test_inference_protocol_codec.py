"""The Open Inference Protocol codec on request and response bodies, parsed by tritonclient too."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput, InferResult

from services.common.errors import InvalidRequest
from services.common.inference_protocol.outputs import classify, select_outputs
from services.common.inference_protocol.request_codec import HEADER_LENGTH_HEADER, decode_request
from services.common.inference_protocol.response_codec import OutputTensor, encode_response
from services.common.inference_protocol.schemas import RequestOutput


def tritonclient_body(inputs: list[InferInput], outputs: Any = None) -> tuple[bytes, str | None]:
    """Build a request body the way tritonclient's InferenceServerClient.infer does."""
    body, json_size = InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    return body, None if json_size is None else str(json_size)


def json_body(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def binary_body(document: dict[str, Any], data: bytes) -> tuple[bytes, str]:
    header = json_body(document)
    return header + data, str(len(header))


def rejected(body: bytes, header_length: str | None = None) -> str:
    with pytest.raises(InvalidRequest) as raised:
        decode_request(body, header_length)
    return raised.value.message


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_inputs_decode(binary: bool) -> None:
    tensor = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    counts = np.array([[1, -2], [3, 4]], dtype=np.int64)
    words = np.array([b"cat", b"dog", b""], dtype=np.object_)
    inputs = [
        InferInput("tensor", list(tensor.shape), "FP32").set_data_from_numpy(tensor, binary),
        InferInput("counts", [2, 2], "INT64").set_data_from_numpy(counts, binary),
        InferInput("words", [3], "BYTES").set_data_from_numpy(words, binary),
    ]
    body, header_length = tritonclient_body(inputs, [InferRequestedOutput("out")])

    decoded = decode_request(body, header_length)

    assert [item.name for item in decoded.inputs] == ["tensor", "counts", "words"]
    assert all(item.binary is binary for item in decoded.inputs)
    np.testing.assert_array_equal(decoded.inputs[0].data, tensor)
    assert decoded.inputs[0].data.dtype == np.float32
    np.testing.assert_array_equal(decoded.inputs[1].data, counts)
    assert list(decoded.inputs[2].data) == [b"cat", b"dog", b""]
    assert decoded.outputs is not None
    assert decoded.outputs[0].name == "out"


def test_nested_json_data_decodes_row_major() -> None:
    body = json_body(
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]}
    )

    (tensor,) = decode_request(body, None).inputs

    np.testing.assert_array_equal(tensor.data, [[1.0, 2.0], [3.0, 4.0]])


def test_empty_tensor_decodes() -> None:
    body = json_body({"inputs": [{"name": "x", "shape": [0, 3], "datatype": "INT32", "data": []}]})

    (tensor,) = decode_request(body, None).inputs

    assert tensor.data.shape == (0, 3)
    assert tensor.data.dtype == np.int32


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not a valid JSON object"),
        (b"[1, 2]", "invalid inference request"),
        (json_body({"inputs": []}), "inputs"),
        (json_body({"input": [], "inputs": []}), "Extra inputs are not permitted"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}',
            "not a valid JSON object",
        ),
        (
            json_body({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]}),
            "greater than or equal to 0",
        ),
        (
            json_body({"inputs": [{"name": "x y", "shape": [1], "datatype": "FP32", "data": [1]}]}),
            "should match pattern",
        ),
        (
            json_body(
                {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}
            ),
            "input 'x' has 2 elements, but its shape [3] needs 3",
        ),
        (
            json_body({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}),
            "input 'x' has no data",
        ),
        (
            json_body({"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]}),
            "datatype 'FP8', which is not supported",
        ),
        (
            json_body(
                {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, "2"]}]}
            ),
            "must be a flat or nested array of numbers",
        ),
        (
            json_body(
                {"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2.5]}]}
            ),
            "array of integers",
        ),
        (
            json_body(
                {"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [256]}]}
            ),
            "outside the UINT8 range [0, 255]",
        ),
        (
            json_body({"inputs": [{"name": "x", "shape": [1], "datatype": "FP16", "data": [1e6]}]}),
            "not finite in FP16",
        ),
        (
            json_body(
                {"inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "data": ["a", 1]}]}
            ),
            "array of strings",
        ),
        (
            json_body(
                {
                    "inputs": [
                        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
                        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
                    ]
                }
            ),
            "input 'x' appears twice",
        ),
        (
            json_body(
                {
                    "inputs": [
                        {
                            "name": "x",
                            "shape": [1],
                            "datatype": "FP32",
                            "data": [1],
                            "parameters": {"shared_memory_region": "r"},
                        }
                    ]
                }
            ),
            "unsupported parameters: shared_memory_region",
        ),
    ],
    ids=[
        "not-json",
        "not-object",
        "no-inputs",
        "unknown-key",
        "nan-literal",
        "negative-dimension",
        "bad-name",
        "count-mismatch",
        "no-data",
        "unknown-datatype",
        "string-in-numbers",
        "fraction-in-integers",
        "integer-overflow",
        "fp16-overflow",
        "number-in-bytes",
        "duplicate-input",
        "shared-memory",
    ],
)
def test_invalid_json_request_rejected(body: bytes, message: str) -> None:
    assert message in rejected(body)


def fp32_input(size: int, name: str = "x") -> dict[str, Any]:
    return {
        "name": name,
        "shape": [2],
        "datatype": "FP32",
        "parameters": {"binary_data_size": size},
    }


def test_binary_size_must_match_shape() -> None:
    body, length = binary_body({"inputs": [fp32_input(4)]}, b"\x00" * 4)

    assert "has 4 bytes of binary data, but shape [2] of FP32 needs 8 bytes" in rejected(
        body, length
    )


def test_binary_data_shorter_than_declared() -> None:
    body, length = binary_body({"inputs": [fp32_input(8)]}, b"\x00" * 6)

    assert "declares 8 bytes of binary data, but only 6 bytes follow" in rejected(body, length)


def test_binary_data_left_over() -> None:
    body, length = binary_body({"inputs": [fp32_input(8)]}, b"\x00" * 10)

    assert "2 bytes of binary data that no input's 'binary_data_size'" in rejected(body, length)


def test_binary_data_without_header_length() -> None:
    body, _ = binary_body({"inputs": [fp32_input(8)]}, b"\x00" * 8)

    # Without the header the whole body is parsed as JSON, which it is not.
    assert "not a valid JSON object" in rejected(body, None)


@pytest.mark.parametrize("header_length", ["abc", "-3", "0", "100000"])
def test_invalid_header_length_rejected(header_length: str) -> None:
    body, _ = binary_body({"inputs": [fp32_input(8)]}, b"\x00" * 8)

    assert HEADER_LENGTH_HEADER in rejected(body, header_length)


def test_binary_size_must_be_integer() -> None:
    document = {"inputs": [fp32_input(8)]}
    document["inputs"][0]["parameters"]["binary_data_size"] = 8.5
    body, length = binary_body(document, b"\x00" * 8)

    assert "must be a non-negative integer byte count" in rejected(body, length)


def test_json_data_and_binary_size_together() -> None:
    document = {"inputs": [{**fp32_input(8), "data": [1, 2]}]}
    body, length = binary_body(document, b"\x00" * 8)

    assert "has both JSON data and 'binary_data_size'" in rejected(body, length)


def test_bool_bytes_must_be_zero_or_one() -> None:
    document = {
        "inputs": [
            {"name": "x", "shape": [2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}}
        ]
    }
    body, length = binary_body(document, b"\x01\x02")

    assert "BOOL elements must be the bytes 0 or 1" in rejected(body, length)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack("<I", 5) + b"abc", "declares 5 bytes, but only 3 remain"),
        (struct.pack("<I", 1) + b"a" + b"\x00\x00", "ends inside a BYTES length prefix"),
        (struct.pack("<I", 1) + b"a", "contains 1 BYTES elements, but its shape needs 2"),
    ],
    ids=["element-too-long", "truncated-prefix", "too-few-elements"],
)
def test_invalid_binary_bytes_rejected(data: bytes, message: str) -> None:
    document = {
        "inputs": [
            {
                "name": "x",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(data)},
            }
        ]
    }
    body, length = binary_body(document, data)

    assert message in rejected(body, length)


def test_response_parses_with_tritonclient() -> None:
    floats = np.array([[0.5, -1.25, 3.0]], dtype=np.float32)
    ids = np.array([7, -1], dtype=np.int64)
    labels = np.array([b"cat", "h\u00e9".encode()], dtype=np.object_)
    outputs = [
        OutputTensor("floats", floats, binary=True),
        OutputTensor("ids", ids, binary=False),
        OutputTensor("labels", labels, binary=True),
        OutputTensor("json_labels", labels, binary=False),
    ]

    encoded = encode_response("model-a", 3, "request-1", outputs)
    result = InferResult.from_response_body(
        encoded.body, header_length=int(encoded.headers[HEADER_LENGTH_HEADER])
    )

    assert encoded.media_type == "application/octet-stream"
    response = result.get_response()
    assert response["model_name"] == "model-a"
    assert response["model_version"] == "3"
    assert response["id"] == "request-1"
    np.testing.assert_array_equal(result.as_numpy("floats"), floats)
    np.testing.assert_array_equal(result.as_numpy("ids"), ids)
    assert list(result.as_numpy("labels")) == [b"cat", "h\u00e9".encode()]
    assert list(result.as_numpy("json_labels")) == ["cat", "h\u00e9"]


def test_json_only_response_has_no_header_length() -> None:
    encoded = encode_response("m", 1, None, [OutputTensor("x", np.zeros(2, np.float32), False)])

    assert encoded.media_type == "application/json"
    assert HEADER_LENGTH_HEADER not in encoded.headers
    assert "id" not in json.loads(encoded.body)


def test_classification_orders_by_value() -> None:
    scores = np.array([[1.1, 3.3, 0.5, 2.4], [4.0, 4.0, 1.0, 0.0]], dtype=np.float32)

    classified = classify(scores, 2, ["a", "b", "c", "d"])

    assert classified.shape == (2, 2)
    assert list(classified[0]) == [b"3.3:1:b", b"2.4:3:d"]
    # Equal values keep class order.
    assert list(classified[1]) == [b"4.0:0:a", b"4.0:1:b"]


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        ([], "'outputs' is an empty list"),
        (
            [RequestOutput(name="missing")],
            "unknown output 'missing'; this request can return: a, b",
        ),
        ([RequestOutput(name="a"), RequestOutput(name="a")], "output 'a' is requested twice"),
        (
            [RequestOutput(name="a", parameters={"binary_data": 1})],
            "'binary_data' must be true or false",
        ),
        (
            [RequestOutput(name="a", parameters={"classification": 4})],
            "'classification' must be an integer from 1 to 3",
        ),
        (
            [RequestOutput(name="a", parameters={"classification": True})],
            "'classification' must be an integer from 1 to 3",
        ),
        (
            [RequestOutput(name="b", parameters={"classification": 1})],
            "output 'b' does not support the classification extension",
        ),
        (
            [RequestOutput(name="a", parameters={"shared_memory_region": "r"})],
            "unsupported parameters: shared_memory_region",
        ),
    ],
    ids=[
        "empty",
        "unknown",
        "duplicate",
        "binary-not-bool",
        "classification-too-large",
        "classification-bool",
        "not-classifiable",
        "shared-memory",
    ],
)
def test_invalid_outputs_rejected(requested: list[RequestOutput], message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        select_outputs(
            requested, ("a", "b"), binary=False, classifiable={"a"}, classification_limit=3
        )

    assert message in raised.value.message


def test_outputs_default_to_all() -> None:
    selections = select_outputs(None, ("a", "b"), binary=True)

    assert [(item.name, item.binary, item.classification) for item in selections] == [
        ("a", True, None),
        ("b", True, None),
    ]
