"""HTTP routes of the Open Inference Protocol (KServe V2 REST), shared by the model services.

`install_inference_protocol(app, adapter)` mounts them. Errors on these
routes have the protocol's body `{"error": "..."}`; `services.common.errors`
renders it for every path under `/v2`.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Request, Response

from services.common.errors import UnsupportedMediaType, error_response
from services.common.inference_protocol.adapter import InferenceAdapter
from services.common.inference_protocol.dataplane import (
    model_metadata,
    resolve_model,
    run_inference,
)
from services.common.inference_protocol.request_codec import HEADER_LENGTH_HEADER, decode_request
from services.common.inference_protocol.schemas import (
    ModelMetadataResponse,
    ProtocolError,
    ServerMetadataResponse,
)
from services.common.pipeline import ModelPipeline
from services.common.readiness import Readiness
from services.common.repository import LoadedModel
from services.common.upload import read_body


class ProtocolService(Protocol):
    """Service fields that these routes read from `app.state.service`."""

    @property
    def readiness(self) -> Readiness: ...

    def ready_pipeline(self) -> ModelPipeline[Any]: ...


def _service(request: Request) -> ProtocolService:
    service: ProtocolService = request.app.state.service
    return service


# Dependencies are coroutines because FastAPI runs a plain function in a worker
# thread, a hand-off that costs more than the lookup itself.
async def get_ready_pipeline(request: Request) -> ModelPipeline[Any]:
    return _service(request).ready_pipeline()


async def get_adapter(request: Request) -> InferenceAdapter:
    adapter: InferenceAdapter = request.app.state.inference_adapter
    return adapter


PipelineDep = Annotated[ModelPipeline[Any], Depends(get_ready_pipeline)]
AdapterDep = Annotated[InferenceAdapter, Depends(get_adapter)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ProtocolError, "description": description}
    for status, description in {
        400: "Invalid request: JSON, tensor datatype, shape, data, binary sizes or parameters.",
        404: "Unknown model, or a version other than the live one.",
        413: "Body larger than max_body_bytes, or an image larger than max_pixels.",
        415: "Compressed body or unsupported image format.",
        503: "Models are loading or failed to load.",
    }.items()
}

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol"])


def install_inference_protocol(app: FastAPI, adapter: InferenceAdapter) -> None:
    """Mount the `/v2` routes on `app`, with `adapter` supplying the task-specific parts."""
    app.state.inference_adapter = adapter
    app.include_router(router)


@router.get("", responses=_ERRORS)
async def server_metadata(request: Request, adapter: AdapterDep) -> ServerMetadataResponse:
    """Return the server name, API version and supported protocol extensions."""
    return ServerMetadataResponse(
        name=adapter.server_name, version=request.app.version, extensions=list(adapter.extensions)
    )


@router.get("/health/live")
async def server_live() -> Response:
    """Report that the process is alive: 200 with an empty body."""
    return Response()


@router.get("/health/ready", responses=_ERRORS)
async def server_ready(request: Request) -> Response:
    """Report 200 once every model is loaded and warmed up, 503 before that."""
    return _readiness_response(request)


@router.get("/models/{name}", responses=_ERRORS)
async def model_metadata_latest(
    name: str, pipeline: PipelineDep, adapter: AdapterDep
) -> ModelMetadataResponse:
    """Describe the live version of a model: versions, platform, inputs and outputs."""
    return model_metadata(adapter, pipeline, resolve_model(pipeline, name, None))


@router.get("/models/{name}/versions/{version}", responses=_ERRORS)
async def model_metadata_version(
    name: str, version: str, pipeline: PipelineDep, adapter: AdapterDep
) -> ModelMetadataResponse:
    """Describe a model at `version`, which must be the live version."""
    return model_metadata(adapter, pipeline, resolve_model(pipeline, name, version))


@router.get("/models/{name}/ready", responses=_ERRORS)
async def model_ready(request: Request, name: str) -> Response:
    """Report 200 when the model is served and ready, 404 for an unknown model."""
    return _model_readiness_response(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", responses=_ERRORS)
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    """Report 200 when `version` is the live, ready version of the model."""
    return _model_readiness_response(request, name, version)


@router.post("/models/{name}/infer", responses=_ERRORS)
async def infer(
    request: Request, name: str, pipeline: PipelineDep, adapter: AdapterDep
) -> Response:
    """Run the live version of a model on JSON or binary tensors, or on encoded images."""
    return await _infer(request, adapter, pipeline, resolve_model(pipeline, name, None))


@router.post("/models/{name}/versions/{version}/infer", responses=_ERRORS)
async def infer_version(
    request: Request, name: str, version: str, pipeline: PipelineDep, adapter: AdapterDep
) -> Response:
    """Run a model at `version`, which must be the live version."""
    return await _infer(request, adapter, pipeline, resolve_model(pipeline, name, version))


def _readiness_response(request: Request) -> Response:
    # NOTE: the protocol asks for "a 4xx status" when not ready. 503 is used
    # instead, as on /readyz; tritonclient treats any status but 200 as false.
    error = _service(request).readiness.unavailable_error()
    if error is not None:
        # Returned rather than raised: the error handler would log every probe
        # during start-up at ERROR level.
        return error_response(request.url.path, error)
    return Response()


def _model_readiness_response(request: Request, name: str, version: str | None) -> Response:
    not_ready = _readiness_response(request)
    if not_ready.status_code != 200:
        return not_ready
    resolve_model(_service(request).ready_pipeline(), name, version)
    return Response()


async def _infer(
    request: Request,
    adapter: InferenceAdapter,
    pipeline: ModelPipeline[Any],
    model: LoadedModel,
) -> Response:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            "compressed request bodies are not supported; send the body without Content-Encoding"
        )
    body = await read_body(
        request,
        max_body_bytes=pipeline.settings.max_body_bytes,
        content="an inference request JSON object",
    )
    # Parsing a large JSON body takes long enough to stall other requests.
    decoded = await anyio.to_thread.run_sync(
        decode_request, body, request.headers.get(HEADER_LENGTH_HEADER)
    )
    encoded = await run_inference(adapter, pipeline, model, decoded)
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)
