"""Training-time data augmentation with torchvision.transforms.v2, and MixUp/CutMix batches.

The augmentation runs between the two halves of the shared preprocessing:
`resize` (the serving resize and crop, giving the model's input size) and
`to_tensor` (colour mode and normalisation). So an augmented sample has the
shape and normalisation that serving produces, and with every augmentation
switched off it equals the serving tensor. Random crops and rotations
therefore work inside the served crop, at the model's input resolution.

MixUp and CutMix act on whole batches in the data loader's collate function
and turn the targets into class probabilities of shape (N, classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import v2
from tqdm import tqdm

from services.common.metadata import PreprocessSpec
from services.common.preprocess import resize, to_tensor
from training.classification.data import Split

AUTO_AUGMENTS = ("none", "randaugment", "trivialaugment")


@dataclass(frozen=True)
class AugmentOptions:
    """Each augmentation and its strength; the defaults switch all of them off."""

    # Smallest crop area of RandomResizedCrop as a share of the image. None turns the crop off.
    crop_scale: float | None = None
    hflip: float = 0.0
    vflip: float = 0.0
    # Maximum rotation in degrees, both ways.
    rotation: float = 0.0
    # RandomAffine scales by a factor drawn from [1 - scale_jitter, 1 + scale_jitter].
    scale_jitter: float = 0.0
    # Brightness, contrast and saturation factors drawn from [1 - s, 1 + s].
    color_jitter: float = 0.0
    auto_augment: str = "none"
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    @property
    def per_sample(self) -> bool:
        return (
            self.crop_scale is not None
            or self.hflip > 0.0
            or self.vflip > 0.0
            or self.rotation > 0.0
            or self.scale_jitter > 0.0
            or self.color_jitter > 0.0
            or self.auto_augment != "none"
        )

    @property
    def mixes_batches(self) -> bool:
        return self.mixup_alpha > 0.0 or self.cutmix_alpha > 0.0

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> AugmentOptions:
        """Read the augmentation options from a run's arguments; a missing key turns one off."""
        return cls(
            crop_scale=args.get("crop_scale"),
            hflip=args.get("hflip", 0.0),
            vflip=args.get("vflip", 0.0),
            rotation=args.get("rotation", 0.0),
            scale_jitter=args.get("scale_jitter", 0.0),
            color_jitter=args.get("color_jitter", 0.0),
            auto_augment=args.get("auto_augment", "none"),
            mixup_alpha=args.get("mixup_alpha", 0.0),
            cutmix_alpha=args.get("cutmix_alpha", 0.0),
        )


def build_sample_transform(options: AugmentOptions, spec: PreprocessSpec) -> torch.nn.Module:
    """Return the per-sample augmentation of a uint8 image tensor (3, H, W) of the input size.

    Returns v2.Identity when every per-sample augmentation is off.
    """
    steps: list[torch.nn.Module] = []
    if options.crop_scale is not None:
        steps.append(
            v2.RandomResizedCrop((spec.height, spec.width), scale=(options.crop_scale, 1.0))
        )
    if options.hflip > 0.0:
        steps.append(v2.RandomHorizontalFlip(options.hflip))
    if options.vflip > 0.0:
        steps.append(v2.RandomVerticalFlip(options.vflip))
    if options.rotation > 0.0 or options.scale_jitter > 0.0:
        scale = (1.0 - options.scale_jitter, 1.0 + options.scale_jitter)
        steps.append(
            v2.RandomAffine(
                degrees=options.rotation, scale=scale if options.scale_jitter > 0.0 else None
            )
        )
    if options.color_jitter > 0.0:
        strength = options.color_jitter
        steps.append(v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
    if options.auto_augment == "randaugment":
        steps.append(v2.RandAugment())
    elif options.auto_augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    return v2.Compose(steps) if steps else v2.Identity()


def resized_bytes(split: Split, spec: PreprocessSpec) -> int:
    """Return the memory the resized uint8 RGB images of `split` take, in bytes."""
    return len(split) * 3 * spec.height * spec.width


class AugmentedDataset(Dataset[tuple[torch.Tensor, int]]):
    """A training split that applies a fresh random augmentation on every access.

    Keeps the resized uint8 images in memory when they take at most
    `cache_max_bytes`; else loads and resizes each image on access.
    """

    def __init__(
        self,
        split: Split,
        spec: PreprocessSpec,
        transform: torch.nn.Module,
        *,
        cache_max_bytes: int,
        progress: bool = False,
    ) -> None:
        self.split = split
        self.spec = spec
        self.transform = transform
        self.cached: torch.Tensor | None = None
        if resized_bytes(split, spec) <= cache_max_bytes:
            cached = torch.empty((len(split), 3, spec.height, spec.width), dtype=torch.uint8)
            for position in tqdm(range(len(split)), desc="resize", disable=not progress):
                cached[position] = self._resized(position)
            self.cached = cached

    def _resized(self, position: int) -> torch.Tensor:
        image = self.split.source.load_image(int(self.split.indices[position]))
        pixels = np.asarray(resize(image, self.spec).convert("RGB"))
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        pixels = self.cached[position] if self.cached is not None else self._resized(position)
        augmented = self.transform(pixels)
        image = Image.fromarray(augmented.permute(1, 2, 0).numpy())
        target = int(self.split.targets[position])
        return torch.from_numpy(to_tensor(image, self.spec)), target


class MixingCollate:
    """Collate a batch, then apply MixUp or CutMix (one of them at random when both are on)."""

    def __init__(self, options: AugmentOptions, num_classes: int) -> None:
        mixes: list[torch.nn.Module] = []
        if options.mixup_alpha > 0.0:
            mixes.append(v2.MixUp(alpha=options.mixup_alpha, num_classes=num_classes))
        if options.cutmix_alpha > 0.0:
            mixes.append(v2.CutMix(alpha=options.cutmix_alpha, num_classes=num_classes))
        if not mixes:
            raise ValueError("MixingCollate needs a positive mixup_alpha or cutmix_alpha")
        self.mix = mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)

    def __call__(self, batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = default_collate(batch)
        mixed_inputs, soft_targets = self.mix(inputs, targets)
        return mixed_inputs, soft_targets
