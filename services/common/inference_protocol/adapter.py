"""The contract between the shared protocol routes and a service's task-specific adapter.

The routes parse the protocol. The adapter describes what a model accepts
and returns, and computes the outputs. Blocking work must run through the
pipeline's `run_in_worker`, so that the event loop stays free.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from services.common.inference_protocol.request_codec import InputTensor
from services.common.inference_protocol.schemas import MetadataTensor, ParameterValue
from services.common.pipeline import ModelPipeline
from services.common.repository import LoadedModel

ComputeOutputs = Callable[[], Awaitable[dict[str, np.ndarray]]]


@dataclass(frozen=True)
class InferencePlan:
    """A checked request: the outputs it can return and the call that computes them all.

    `labels` and `classification_limit` enable Triton's classification
    extension on `classifiable` outputs, which hold one score per label.
    """

    output_names: tuple[str, ...]
    compute: ComputeOutputs
    classifiable: frozenset[str] = field(default_factory=frozenset)
    labels: Sequence[str] = ()
    classification_limit: int = 0


class InferenceAdapter(Protocol):
    """The task-specific part of a model service, plugged into the shared protocol routes."""

    @property
    def server_name(self) -> str: ...

    @property
    def extensions(self) -> tuple[str, ...]:
        """Protocol extensions the service supports, reported in the server metadata."""
        ...

    @property
    def request_parameters(self) -> tuple[str, ...]:
        """Request-level parameters the adapter reads, besides `binary_data_output`."""
        ...

    def inputs(self, pipeline: ModelPipeline[Any], model: LoadedModel) -> list[MetadataTensor]: ...

    def outputs(self, pipeline: ModelPipeline[Any], model: LoadedModel) -> list[MetadataTensor]: ...

    def plan(
        self,
        pipeline: ModelPipeline[Any],
        model: LoadedModel,
        inputs: Sequence[InputTensor],
        parameters: Mapping[str, ParameterValue],
    ) -> InferencePlan:
        """Check the inputs and parameters, raising ServiceError 4xx subclasses."""
        ...
