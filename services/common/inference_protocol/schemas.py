"""JSON objects of the Open Inference Protocol (KServe V2) REST API, as pydantic models.

Request models reject unknown keys, so a misspelled field is an error rather
than silently ignored. Tensor data stays `Any` here because its element
types depend on the datatype; `codec` checks it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

# Names that may appear in error messages. Client input outside this pattern
# is rejected, so that messages never repeat arbitrary client text.
TENSOR_NAME_PATTERN = r"^[A-Za-z0-9_.:/-]{1,128}$"
MAX_RANK = 8
MAX_REQUEST_ID_LENGTH = 256

ParameterValue = StrictBool | StrictInt | StrictFloat | StrictStr
Parameters = dict[Annotated[str, Field(pattern=TENSOR_NAME_PATTERN)], ParameterValue]
Dimension = Annotated[StrictInt, Field(ge=0)]


class RequestInput(BaseModel):
    """One input tensor: JSON `data`, or binary data announced by `binary_data_size`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TENSOR_NAME_PATTERN)
    shape: list[Dimension] = Field(max_length=MAX_RANK)
    datatype: str = Field(pattern=TENSOR_NAME_PATTERN)
    parameters: Parameters = Field(default_factory=dict)
    data: Any = None


class RequestOutput(BaseModel):
    """An output the client asks for, with `binary_data` and `classification` options."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TENSOR_NAME_PATTERN)
    parameters: Parameters = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=MAX_REQUEST_ID_LENGTH)
    parameters: Parameters = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class MetadataTensor(BaseModel):
    """Name, datatype and shape of a model input or output; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str] = Field(description="Versions that can be requested: the live one.")
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ProtocolError(BaseModel):
    """The error body of every `/v2` route."""

    error: str
