"""ONNX export of a classifier and the ONNX Runtime vs PyTorch parity check.

The exported graph has one input `input` of shape [N, C, H, W] (float32, N
dynamic) and one output `logits` of shape [N, classes]; the service applies
softmax.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
from torch import nn

from services.common.metadata import PreprocessSpec
from training.classification.errors import ParityError

logger = logging.getLogger(__name__)

# ONNX Runtime's Python exceptions derive from Exception directly.
_ONNXRUNTIME_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.RuntimeException,
)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 18
EXPORT_METHOD = "torch.onnx.export(dynamo=True)"
# Logit differences between ONNX Runtime and PyTorch on CPU are about 1e-5 for
# the models here (float32, different kernels), so 1e-3 leaves a wide margin
# while still catching a wrong operator or weight.
DEFAULT_PARITY_ATOL = 1e-3


def export_onnx(
    model: nn.Module, spec: PreprocessSpec, path: Path, *, opset: int = DEFAULT_OPSET
) -> None:
    """Export `model` in eval mode to a self-contained ONNX file and check it with onnx.checker.

    Uses the torch.export-based exporter, the default since PyTorch 2.9, with
    the batch axis dynamic. The example batch has two samples because
    torch.export specialises a dimension of size 1 to a constant.
    """
    model.eval()
    example = torch.zeros((2, spec.channels, spec.height, spec.width), dtype=torch.float32)
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        # The exporter warns about internal deprecations that do not concern the caller.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes=({0: batch},),
            dynamo=True,
            # One file: the model repository copies model.onnx without side files.
            external_data=False,
            verbose=False,
        )
    onnx.checker.check_model(str(path), full_check=True)
    logger.info("exported %s (%.1f MB, opset %d)", path, path.stat().st_size / 1e6, opset)


def exporter_versions(opset: int) -> dict[str, str]:
    """Return the versions of the software that produced the ONNX file, for model.json."""
    import timm

    return {
        "method": EXPORT_METHOD,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "timm": timm.__version__,
        "opset": str(opset),
    }


@dataclass(frozen=True)
class ParityResult:
    """Comparison of ONNX Runtime and PyTorch logits on the same inputs."""

    num_samples: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    atol: float
    mismatched_samples: list[int]

    @property
    def passed(self) -> bool:
        return self.top1_agreement == 1.0 and self.max_abs_diff <= self.atol

    def as_metrics(self) -> dict[str, Any]:
        values = asdict(self)
        del values["mismatched_samples"]
        return {f"parity_{key}": value for key, value in values.items()}


def onnx_session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


@torch.inference_mode()
def compare_with_onnx(
    model: nn.Module,
    onnx_path: Path,
    batches: Iterable[torch.Tensor],
    *,
    atol: float = DEFAULT_PARITY_ATOL,
) -> ParityResult:
    """Run PyTorch and ONNX Runtime on every batch and compare the logits.

    The first sample also runs alone and counts towards both checks, so a batch
    axis that was exported as a constant fails here rather than in the service.
    """
    model.eval()
    session = onnx_session(onnx_path)
    differences: list[np.ndarray] = []
    agreements: list[np.ndarray] = []
    for inputs in batches:
        expected = model(inputs).numpy()
        actual = run_onnx(session, inputs.numpy())
        difference = np.abs(actual - expected).max(axis=1)
        agreement = actual.argmax(axis=1) == expected.argmax(axis=1)
        if not differences:
            alone = run_onnx(session, inputs[:1].numpy())
            difference[0] = max(difference[0], np.abs(alone - expected[:1]).max())
            agreement[0] &= alone[0].argmax() == expected[0].argmax()
        differences.append(difference)
        agreements.append(agreement)
    if not differences:
        raise ParityError("the parity check got no inputs")
    all_differences = np.concatenate(differences)
    all_agreements = np.concatenate(agreements)
    return ParityResult(
        num_samples=len(all_differences),
        max_abs_diff=float(all_differences.max()),
        mean_abs_diff=float(all_differences.mean()),
        top1_agreement=float(all_agreements.mean()),
        atol=atol,
        mismatched_samples=[int(index) for index in np.flatnonzero(~all_agreements)[:10]],
    )


def run_onnx(session: onnxruntime.InferenceSession, inputs: np.ndarray) -> np.ndarray:
    """Return the logits of ONNX Runtime for a float32 batch (N, C, H, W)."""
    try:
        outputs = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.astype(np.float32, copy=False)})
    except _ONNXRUNTIME_ERRORS as error:
        raise ParityError(
            f"ONNX Runtime failed on a batch of shape {inputs.shape}: {error}"
        ) from error
    logits: np.ndarray = np.asarray(outputs[0])
    return logits


def require_parity(result: ParityResult) -> None:
    """Raise ParityError unless top-1 agrees on every sample and the logits are within atol."""
    logger.info(
        "parity on %d samples: max abs logit difference %.3g (tolerance %.3g), "
        "top-1 agreement %.4f",
        result.num_samples,
        result.max_abs_diff,
        result.atol,
        result.top1_agreement,
    )
    if result.passed:
        return
    raise ParityError(
        f"ONNX parity check failed on {result.num_samples} samples: max abs logit difference "
        f"{result.max_abs_diff:.3g} (tolerance {result.atol:.3g}), top-1 agreement "
        f"{result.top1_agreement:.2%} (must be 100%; first mismatched samples "
        f"{result.mismatched_samples}). No model version was written"
    )
