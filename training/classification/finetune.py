"""Fine-tuning strategies: which layer groups train in each epoch, and their learning rates.

A pretrained model splits into ordered backbone groups (stem first, the
stage next to the head last) and the new classification head:

- timm models (EfficientNet-Lite0 included): timm's coarse `group_matcher`,
  one group per stage, with the classifier taken out as the head.
- torchvision ResNet: stem (conv1, bn1), layer1 to layer4, head fc.
- torchvision VGG: one group per convolution block (up to each max-pool), the
  hidden fully connected layers, and the last Linear as the head.

Strategies:

- full: every parameter trains.
- linear_probe: only the head trains.
- partial: the head and the last `unfreeze_blocks` backbone groups train.
- staged: the head alone for `head_epochs`, then one more backbone group,
  from the head down, every `unfreeze_every` epochs until all train.

BatchNorm layers whose parameters are all frozen stay in eval mode during
training (`set_train_mode`), so their running statistics keep the pretrained
values. Models trained from scratch (mlp, cnn) have no backbone and take
`full` only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from training.classification.errors import InvalidArgumentsError

logger = logging.getLogger(__name__)

STRATEGIES = ("full", "linear_probe", "partial", "staged")

NamedParameters = list[tuple[str, nn.Parameter]]


@dataclass(frozen=True)
class LayerGroup:
    name: str
    parameters: NamedParameters

    @property
    def parameter_count(self) -> int:
        return sum(parameter.numel() for _, parameter in self.parameters)


@dataclass(frozen=True)
class LayerGroups:
    """Backbone groups from the input side to the head side, then the head."""

    backbone: list[LayerGroup]
    head: LayerGroup

    def ordered(self) -> list[LayerGroup]:
        return [*self.backbone, self.head]


@dataclass(frozen=True)
class Strategy:
    name: str = "full"
    unfreeze_blocks: int | None = None
    head_epochs: int = 1
    unfreeze_every: int = 1

    def trainable_backbone_groups(self, epoch: int, backbone_groups: int) -> int:
        """Return how many backbone groups, counted from the head, train in `epoch` (from 1)."""
        if self.name == "full":
            return backbone_groups
        if self.name == "linear_probe":
            return 0
        if self.name == "partial":
            return min(self.unfreeze_blocks or 0, backbone_groups)
        if self.name == "staged":
            if epoch <= self.head_epochs:
                return 0
            return min(backbone_groups, 1 + (epoch - self.head_epochs - 1) // self.unfreeze_every)
        raise InvalidArgumentsError(
            f"unknown strategy {self.name!r}; choose one of {', '.join(STRATEGIES)}"
        )


def _named(module: nn.Module, prefix: str) -> NamedParameters:
    return [(f"{prefix}.{name}", parameter) for name, parameter in module.named_parameters()]


def _timm_groups(model: nn.Module) -> LayerGroups:
    from timm.models import group_parameters

    classifier = model.get_classifier()  # type: ignore[operator]
    head_ids = {id(parameter) for parameter in classifier.parameters()}
    named = dict(model.named_parameters())
    grouped = group_parameters(model, model.group_matcher(coarse=True))  # type: ignore[operator]
    backbone: list[LayerGroup] = []
    for ordinal, names in sorted(grouped.items()):
        body = [(name, named[name]) for name in names if id(named[name]) not in head_ids]
        if body:
            backbone.append(LayerGroup(f"group{ordinal}:{body[0][0].split('.')[0]}", body))
    head = [(name, parameter) for name, parameter in named.items() if id(parameter) in head_ids]
    return LayerGroups(backbone=backbone, head=LayerGroup("head", head))


def _resnet_groups(model: nn.Module) -> LayerGroups:
    stem = _named(model.conv1, "conv1") + _named(model.bn1, "bn1")  # type: ignore[arg-type]
    backbone = [LayerGroup("stem", stem)]
    for name in ("layer1", "layer2", "layer3", "layer4"):
        backbone.append(LayerGroup(name, _named(getattr(model, name), name)))
    return LayerGroups(backbone=backbone, head=LayerGroup("head", _named(model.fc, "fc")))  # type: ignore[arg-type]


def _vgg_groups(model: nn.Module) -> LayerGroups:
    backbone: list[LayerGroup] = []
    block: NamedParameters = []
    for index, layer in enumerate(model.features):  # type: ignore[arg-type]
        block += _named(layer, f"features.{index}")
        if isinstance(layer, nn.MaxPool2d) and block:
            backbone.append(LayerGroup(f"conv_block{len(backbone) + 1}", block))
            block = []
    classifier: nn.Sequential = model.classifier  # type: ignore[assignment]
    last = len(classifier) - 1
    hidden = [
        item for index in range(last) for item in _named(classifier[index], f"classifier.{index}")
    ]
    backbone.append(LayerGroup("fully_connected", hidden))
    head = LayerGroup("head", _named(classifier[last], f"classifier.{last}"))
    return LayerGroups(backbone=backbone, head=head)


def layer_groups(model: nn.Module) -> LayerGroups:
    """Split `model` into backbone groups and head; a model without a backbone is all head."""
    from torchvision.models import VGG, ResNet

    if isinstance(model, ResNet):
        groups = _resnet_groups(model)
    elif isinstance(model, VGG):
        groups = _vgg_groups(model)
    elif hasattr(model, "group_matcher") and hasattr(model, "get_classifier"):
        groups = _timm_groups(model)
    else:
        return LayerGroups(backbone=[], head=LayerGroup("model", list(model.named_parameters())))
    grouped = sum(len(group.parameters) for group in groups.ordered())
    total = len(list(model.parameters()))
    if grouped != total:
        raise RuntimeError(
            f"the layer groups of {type(model).__name__} contain {grouped} of its "
            f"{total} parameter tensors"
        )
    return groups


def check_strategy(strategy: Strategy, groups: LayerGroups, model_name: str) -> None:
    """Raise InvalidArgumentsError when `strategy` does not fit the model's groups."""
    if strategy.name != "full" and not groups.backbone:
        raise InvalidArgumentsError(
            f"--strategy {strategy.name} needs a pretrained backbone, but {model_name} "
            f"trains from scratch. Use --strategy full"
        )
    count = len(groups.backbone)
    if strategy.name == "partial" and not 1 <= (strategy.unfreeze_blocks or 0) <= count:
        raise InvalidArgumentsError(
            f"--strategy partial needs --unfreeze-blocks between 1 and {count} for "
            f"{model_name} (backbone groups: {', '.join(group.name for group in groups.backbone)})"
        )


def apply_strategy(groups: LayerGroups, strategy: Strategy, epoch: int) -> int:
    """Set requires_grad for `epoch` and return the number of trainable parameters."""
    count = len(groups.backbone)
    trainable_groups = strategy.trainable_backbone_groups(epoch, count)
    for index, group in enumerate(groups.backbone):
        trainable = index >= count - trainable_groups
        for _, parameter in group.parameters:
            parameter.requires_grad_(trainable)
    for _, parameter in groups.head.parameters:
        parameter.requires_grad_(True)
    return sum(
        parameter.numel()
        for group in groups.ordered()
        for _, parameter in group.parameters
        if parameter.requires_grad
    )


def set_train_mode(model: nn.Module, *, batchnorm_eval: bool = False) -> None:
    """Put `model` in training mode except BatchNorm layers whose parameters are all frozen.

    A frozen BatchNorm in training mode would still normalise with batch
    statistics and overwrite its pretrained running mean and variance. With
    `batchnorm_eval`, every BatchNorm layer stays in eval mode, including those
    whose scale and shift train.
    """
    model.train()
    for module in model.modules():
        if not isinstance(module, _BatchNorm):
            continue
        parameters = list(module.parameters(recurse=False))
        frozen = bool(parameters) and not any(parameter.requires_grad for parameter in parameters)
        if frozen or batchnorm_eval:
            module.eval()


def _decays(name: str, parameter: nn.Parameter) -> bool:
    # Biases and the scale and shift of normalisation layers are 1-D. Decaying
    # them toward zero works against the normalisation.
    return parameter.ndim > 1 and not name.endswith(".bias")


def optimizer_parameter_groups(
    groups: LayerGroups,
    *,
    lr: float,
    weight_decay: float,
    layer_lr_decay: float = 1.0,
    decay_norm_and_bias: bool = False,
) -> list[dict[str, object]]:
    """Return optimizer parameter groups: one or two per layer group.

    The head gets `lr`, and the backbone group k places below the head gets
    lr * layer_lr_decay**k (discriminative learning rates). Biases and norm
    parameters get no weight decay unless `decay_norm_and_bias`. Frozen
    parameters are included because PyTorch's optimizers skip a parameter
    without a gradient, so unfreezing later needs no new optimizer.
    """
    ordered = groups.ordered()
    result: list[dict[str, object]] = []
    for depth, group in enumerate(reversed(ordered)):
        group_lr = lr * layer_lr_decay**depth
        decay = [p for name, p in group.parameters if decay_norm_and_bias or _decays(name, p)]
        decay_ids = {id(parameter) for parameter in decay}
        no_decay = [p for _, p in group.parameters if id(p) not in decay_ids]
        if decay:
            result.append(
                {"params": decay, "lr": group_lr, "weight_decay": weight_decay, "name": group.name}
            )
        if no_decay:
            result.append(
                {
                    "params": no_decay,
                    "lr": group_lr,
                    "weight_decay": 0.0,
                    "name": f"{group.name}/no_decay",
                }
            )
    # Input side first, as model.parameters() orders them.
    result.reverse()
    return result


class StrategySchedule:
    """Applies a strategy epoch by epoch and logs each change of the trainable groups."""

    def __init__(self, model: nn.Module, strategy: Strategy, model_name: str) -> None:
        self.groups = layer_groups(model)
        self.strategy = strategy
        check_strategy(strategy, self.groups, model_name)
        self._trainable: int | None = None

    def start_epoch(self, epoch: int) -> int:
        """Set the trainable parameters of `epoch` and return their count."""
        trainable = apply_strategy(self.groups, self.strategy, epoch)
        if trainable != self._trainable:
            count = len(self.groups.backbone)
            unfrozen = self.strategy.trainable_backbone_groups(epoch, count)
            logger.info(
                "epoch %d: %s trains the head and %d of %d backbone groups (%d parameters)",
                epoch,
                self.strategy.name,
                unfrozen,
                count,
                trainable,
            )
            self._trainable = trainable
        return trainable
