"""Model lookup, metadata and inference of the Open Inference Protocol, apart from HTTP.

A model is served at its live version only. The version is looked up for
every request, because the repository may switch the live version while the
service runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio.to_thread
import numpy as np

from services.common.errors import InvalidRequest, ModelNotFound
from services.common.inference_protocol.adapter import InferenceAdapter, InferencePlan
from services.common.inference_protocol.outputs import (
    BINARY_DATA_OUTPUT,
    OutputSelection,
    binary_default,
    classify,
    select_outputs,
)
from services.common.inference_protocol.request_codec import DecodedRequest
from services.common.inference_protocol.response_codec import (
    EncodedResponse,
    OutputTensor,
    encode_response,
)
from services.common.inference_protocol.schemas import ModelMetadataResponse, ParameterValue
from services.common.pipeline import ModelPipeline
from services.common.repository import LoadedModel

PLATFORM = "onnxruntime_onnx"
# Longer strings cannot be a served version, and int() of a very long digit
# string raises ValueError in Python 3.11.
_MAX_VERSION_DIGITS = 18


def resolve_model(pipeline: ModelPipeline[Any], name: str, version: str | None) -> LoadedModel:
    """Return the live version of `name`, checking `version` against it when given.

    Raises ModelNotFound (404) for an unknown model or any other version,
    naming the live version.
    """
    model = pipeline.repository.get(name)
    if version is None:
        return model
    number = int(version) if version.isascii() and version.isdigit() else None
    if number is not None and len(version) > _MAX_VERSION_DIGITS:
        number = None
    if number == model.version:
        return model
    if number is not None and number in model.available_versions:
        raise ModelNotFound(
            f"version {number} of model {model.name} is in the repository but not served; "
            f"the live version is {model.version}: request that one, or omit the version"
        )
    raise ModelNotFound(
        f"model {model.name} has no such version; the live version is {model.version}: "
        "request that one, or omit the version"
    )


def model_metadata(
    adapter: InferenceAdapter, pipeline: ModelPipeline[Any], model: LoadedModel
) -> ModelMetadataResponse:
    return ModelMetadataResponse(
        name=model.name,
        versions=[str(model.version)],
        platform=PLATFORM,
        inputs=adapter.inputs(pipeline, model),
        outputs=adapter.outputs(pipeline, model),
    )


async def run_inference(
    adapter: InferenceAdapter,
    pipeline: ModelPipeline[Any],
    model: LoadedModel,
    request: DecodedRequest,
) -> EncodedResponse:
    """Check the request, compute its outputs and encode the response.

    Every check runs before the model does. Raises InvalidRequest (400) for
    parameters or outputs the request may not use.
    """
    _check_request_parameters(request.parameters, adapter.request_parameters)
    plan = adapter.plan(pipeline, model, request.inputs, request.parameters)
    selections = select_outputs(
        request.outputs,
        plan.output_names,
        binary=binary_default(request.parameters),
        classifiable=plan.classifiable,
        classification_limit=plan.classification_limit,
    )
    computed = await plan.compute()
    outputs = [_output(selection, computed[selection.name], plan) for selection in selections]
    # JSON-encoding a large tensor takes long enough to stall other requests.
    return await anyio.to_thread.run_sync(
        encode_response, model.name, model.version, request.id, outputs
    )


def _check_request_parameters(
    parameters: Mapping[str, ParameterValue], supported: tuple[str, ...]
) -> None:
    allowed = (BINARY_DATA_OUTPUT, *supported)
    unknown = sorted(set(parameters) - set(allowed))
    if unknown:
        raise InvalidRequest(
            f"unsupported request parameters: {', '.join(unknown)}; supported: {', '.join(allowed)}"
        )


def _output(selection: OutputSelection, data: np.ndarray, plan: InferencePlan) -> OutputTensor:
    if selection.classification is not None:
        data = classify(data, selection.classification, plan.labels)
    return OutputTensor(selection.name, data, selection.binary)
