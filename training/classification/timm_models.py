"""Any timm model with ImageNet weights from a local file or a download, named `timm:<name>`.

`<name>` is a timm model name, optionally with a pretrained tag, for example
`timm:resnet18.a1_in1k` or `timm:convnext_atto`. The weights come from
`--weights FILE` (a timm state dict, .pth or .safetensors) or from
`--download-weights`, which fetches them from the Hugging Face Hub.
"""

from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from training.classification.errors import DataNotFoundError, InvalidArgumentsError

TIMM_PREFIX = "timm:"


def is_timm_model(name: str) -> bool:
    return name.startswith(TIMM_PREFIX)


def timm_name(name: str) -> str:
    """Return the timm model name of `timm:<name>`, raising InvalidArgumentsError if unknown."""
    model_name = name.removeprefix(TIMM_PREFIX)
    architecture = model_name.split(".", 1)[0]
    if not model_name or not timm.is_model(architecture):
        raise InvalidArgumentsError(
            f"unknown timm model {model_name!r}. List the names with "
            f"`python -c \"import timm; print(timm.list_models('*resnet*'))\"`"
        )
    return model_name


def timm_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return the (mean, std) that the pretrained weights of `timm:<name>` expect."""
    config = timm.models.get_pretrained_cfg(timm_name(name))
    if config is None:
        raise InvalidArgumentsError(
            f"timm has no pretrained configuration for {name}. Add a pretrained tag, "
            f"for example {name}.a1_in1k"
        )
    return tuple(config.mean), tuple(config.std)


def build_timm_model(
    name: str,
    *,
    num_classes: int,
    dropout: float,
    weights: Path | None,
    download_weights: bool,
) -> nn.Module:
    """Create `timm:<name>` with pretrained weights and a new head for `num_classes`.

    timm drops the stored classifier when `num_classes` differs from it, so
    the new head starts from random weights.
    """
    model_name = timm_name(name)
    if weights is not None:
        if not weights.is_file():
            raise DataNotFoundError(
                f"weights file {weights} not found. Pass --weights with an existing "
                f"{model_name} state dict (.pth or .safetensors), or --download-weights"
            )
        overlay = {"file": str(weights)}
        model: nn.Module = timm.create_model(
            model_name,
            pretrained=True,
            num_classes=num_classes,
            drop_rate=dropout,
            pretrained_cfg_overlay=overlay,
        )
        return model
    if not download_weights:
        raise DataNotFoundError(
            f"{name} needs pretrained weights: pass --weights PATH with a timm {model_name} "
            f"state dict file, or --download-weights to download them from the Hugging Face Hub"
        )
    # NOTE: never run by the tests, which have no network access.
    try:
        model = timm.create_model(
            model_name, pretrained=True, num_classes=num_classes, drop_rate=dropout
        )
    except OSError as error:
        raise DataNotFoundError(
            f"downloading the {model_name} weights failed ({error}). "
            f"Pass --weights FILE with a local {model_name} state dict instead"
        ) from error
    return model


def timm_architecture(name: str, *, num_classes: int, dropout: float) -> nn.Module:
    """Create `timm:<name>` with random weights, for loading a checkpoint."""
    model: nn.Module = timm.create_model(
        timm_name(name), pretrained=False, num_classes=num_classes, drop_rate=dropout
    )
    return model
