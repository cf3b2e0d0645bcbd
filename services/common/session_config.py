"""onnxruntime session configuration: threads, graph optimizations, execution mode, providers.

`SessionConfig.from_settings` resolves a model service's settings once at
start-up. Thread counts of 0 become this worker's share of the usable CPUs
(`services.common.cpus`), and requested providers that this onnxruntime build
lacks are dropped with a warning. Every session the service creates then uses
the same options, and `create_session` logs what each session actually runs on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from services.common.cpus import threads_per_worker
from services.common.settings import (
    CPU_PROVIDER,
    ExecutionMode,
    GraphOptimizationLevel,
    ModelServiceSettings,
)

logger = logging.getLogger(__name__)

_OPTIMIZATION_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_EXECUTION_MODES = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}


@dataclass(frozen=True)
class SessionConfig:
    """Resolved options for every onnxruntime session of one service process."""

    intra_op_threads: int
    inter_op_threads: int
    graph_optimization_level: GraphOptimizationLevel = "all"
    execution_mode: ExecutionMode = "sequential"
    providers: tuple[str, ...] = (CPU_PROVIDER,)

    @classmethod
    def from_settings(cls, settings: ModelServiceSettings) -> SessionConfig:
        """Resolve thread defaults and providers from a model service's settings."""
        share = threads_per_worker(settings.workers)
        return cls(
            intra_op_threads=settings.intra_op_threads or share,
            inter_op_threads=settings.inter_op_threads or share,
            graph_optimization_level=settings.graph_optimization_level,
            execution_mode=settings.execution_mode,
            providers=select_providers(settings.execution_providers),
        )

    def options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.graph_optimization_level = _OPTIMIZATION_LEVELS[self.graph_optimization_level]
        options.execution_mode = _EXECUTION_MODES[self.execution_mode]
        return options


def select_providers(
    requested: Sequence[str], available: Sequence[str] | None = None
) -> tuple[str, ...]:
    """Return the requested providers this build has, in order, with the CPU provider last.

    `available` defaults to `onnxruntime.get_available_providers()`. Each
    requested provider missing from it is logged at WARNING and skipped.
    """
    present = list(ort.get_available_providers() if available is None else available)
    selected = []
    for name in requested:
        if name == CPU_PROVIDER:
            continue
        if name in present:
            selected.append(name)
            continue
        logger.warning(
            "execution provider %s is not available in this onnxruntime build and is "
            "skipped; available providers: %s",
            name,
            ", ".join(present),
        )
    return (*selected, CPU_PROVIDER)


def create_session(model_path: Path, config: SessionConfig) -> ort.InferenceSession:
    """Load `model_path` into an onnxruntime session and log the providers it runs on.

    A provider can still decline a model it was selected for (a missing CUDA
    library, for example), so the log reports `session.get_providers()`.
    """
    session = ort.InferenceSession(
        str(model_path), config.options(), providers=list(config.providers)
    )
    logger.info(
        "onnxruntime session created",
        extra={
            "path": str(model_path),
            "providers": session.get_providers(),
            "intra_op_threads": config.intra_op_threads,
            "inter_op_threads": config.inter_op_threads,
            "graph_optimization_level": config.graph_optimization_level,
            "execution_mode": config.execution_mode,
        },
    )
    return session
