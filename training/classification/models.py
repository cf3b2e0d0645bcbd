"""Classification models: small ones trained from scratch and pretrained ImageNet backbones."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import nn

from training.classification.efficientnet import TIMM_ARCHITECTURE, efficientnet_lite0
from training.classification.errors import (
    DataNotFoundError,
    InvalidArgumentsError,
    TrainingError,
)
from training.classification.timm_models import (
    TIMM_PREFIX,
    build_timm_model,
    is_timm_model,
    timm_architecture,
    timm_name,
)

logger = logging.getLogger(__name__)

TORCHVISION_MODELS = ("resnet18", "resnet50", "vgg11", "vgg16")
MODEL_NAMES = ("mlp", "cnn", "efficientnet_lite0", *TORCHVISION_MODELS)
# Two 2x2 max-pools halve the input twice; below 4 pixels nothing is left to pool.
CNN_MIN_IMAGE_SIZE = 4


class MLP(nn.Module):
    """Two hidden layers on the flattened image."""

    def __init__(
        self, in_features: int, num_classes: int, hidden: int = 256, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """Three conv stages with batch norm, two max-pools, global average pooling and dropout.

    Global pooling makes it accept any input of at least 4x4 pixels; it was
    tuned for 8x8 to 32x32 inputs.
    """

    def __init__(
        self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.25
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            *_conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            *_conv_bn_relu(2 * width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _load_torchvision_weights(name: str, weights: Path) -> nn.Module:
    from torchvision import models

    model: nn.Module = models.get_model(name, weights=None)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise TrainingError(f"{weights} is not a {name} state dict: {error}") from error
    return model


def model_name_argument(name: str) -> str:
    """Check a --model value: one of MODEL_NAMES or `timm:<name>` with a known timm model."""
    if name in MODEL_NAMES:
        return name
    if is_timm_model(name):
        timm_name(name)
        return name
    raise InvalidArgumentsError(
        f"unknown model {name!r}. Choose one of {', '.join(MODEL_NAMES)} or {TIMM_PREFIX}<name>"
    )


def takes_weights_file(name: str) -> bool:
    """Return whether model `name` loads its pretrained weights from --weights or a download."""
    return name in TORCHVISION_MODELS or is_timm_model(name)


def check_weights_source(name: str, weights: Path | None, download_weights: bool) -> None:
    """Raise DataNotFoundError when a model that needs a weights file has none and no download."""
    if not takes_weights_file(name) or download_weights:
        return
    kind = "timm" if is_timm_model(name) else "torchvision"
    if weights is None:
        download = "timm's weights" if kind == "timm" else "torchvision's IMAGENET1K_V1 weights"
        raise DataNotFoundError(
            f"{name} needs ImageNet weights: pass --weights PATH with a {kind} "
            f"{name} state dict file, or --download-weights to download {download}"
        )
    if not weights.is_file():
        raise DataNotFoundError(
            f"weights file {weights} not found. Pass --weights with an existing "
            f"{kind} {name} state dict, or --download-weights"
        )


def _torchvision_model(
    name: str, num_classes: int, weights: Path | None, download_weights: bool
) -> nn.Module:
    from torchvision import models

    check_weights_source(name, weights, download_weights)
    if weights is not None:
        model = _load_torchvision_weights(name, weights)
    else:
        # Downloads into torch.hub's cache (TORCH_HOME) on first use.
        enum = models.get_model_weights(name).IMAGENET1K_V1
        try:
            model = models.get_model(name, weights=enum)
        except OSError as error:  # urllib's URLError is an OSError
            raise DataNotFoundError(
                f"downloading torchvision's {name} ImageNet weights failed ({error}); "
                f"pass --weights FILE with a local {name} state dict instead"
            ) from error

    if num_classes == 1000:
        return model
    if isinstance(model, models.ResNet):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    elif isinstance(model, models.VGG) and isinstance(model.classifier[-1], nn.Linear):
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    else:
        raise TrainingError(f"cannot replace the classifier of {type(model).__name__}")
    return model


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    dropout: float = 0.2,
    weights: Path | None = None,
    download_weights: bool = False,
) -> nn.Module:
    """Create model `name` for `num_classes` classes and inputs of in_channels x image_size^2."""
    if not takes_weights_file(name) and (weights is not None or download_weights):
        start = (
            "the packaged ImageNet weights" if name == "efficientnet_lite0" else "random weights"
        )
        raise InvalidArgumentsError(
            f"--weights and --download-weights apply to {', '.join(TORCHVISION_MODELS)} and "
            f"{TIMM_PREFIX}<name> only; {name} starts from {start}"
        )
    if name == "mlp":
        return MLP(in_channels * image_size * image_size, num_classes, dropout=dropout)
    if name == "cnn":
        if image_size < CNN_MIN_IMAGE_SIZE:
            raise InvalidArgumentsError(
                f"--image-size {image_size} is too small for cnn; use at least {CNN_MIN_IMAGE_SIZE}"
            )
        return SmallCNN(in_channels, num_classes, dropout=dropout)
    if name == "efficientnet_lite0":
        return efficientnet_lite0(num_classes, dropout=dropout)
    if name in TORCHVISION_MODELS:
        return _torchvision_model(name, num_classes, weights, download_weights)
    if is_timm_model(name):
        check_weights_source(name, weights, download_weights)
        return build_timm_model(
            name,
            num_classes=num_classes,
            dropout=dropout,
            weights=weights,
            download_weights=download_weights,
        )
    raise TrainingError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def build_architecture(
    name: str, *, num_classes: int, in_channels: int, image_size: int, dropout: float = 0.2
) -> nn.Module:
    """Create model `name` with random weights and the layer shapes that `build_model` gives.

    For loading a checkpoint, so no ImageNet weights are read or downloaded.
    """
    if name in ("mlp", "cnn"):
        return build_model(
            name,
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            dropout=dropout,
        )
    if name == "efficientnet_lite0":
        model: nn.Module = timm.create_model(
            TIMM_ARCHITECTURE, pretrained=False, num_classes=num_classes, drop_rate=dropout
        )
        return model
    if name in TORCHVISION_MODELS:
        from torchvision import models

        return models.get_model(name, weights=None, num_classes=num_classes)
    if is_timm_model(name):
        return timm_architecture(name, num_classes=num_classes, dropout=dropout)
    raise TrainingError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
