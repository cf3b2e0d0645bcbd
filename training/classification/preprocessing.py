"""Default preprocessing specs per model and data set.

Models trained from scratch are normalised with statistics of their data set.
Pretrained models keep the normalisation of the weights they start from.
"""

from __future__ import annotations

from typing import cast

from services.common.metadata import ColorMode, Interpolation, PreprocessSpec, ResizePolicy
from training.classification.errors import InvalidArgumentsError
from training.classification.timm_models import is_timm_model, timm_normalization

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TensorFlow EfficientNet-Lite checkpoints expect inputs scaled to [-1, 1].
EFFICIENTNET_LITE_MEAN = (0.5, 0.5, 0.5)
EFFICIENTNET_LITE_STD = (0.5, 0.5, 0.5)

# Besides these, every `timm:<name>` model is pretrained.
PRETRAINED_MODELS = ("efficientnet_lite0", "resnet18", "resnet50", "vgg11", "vgg16")
PRETRAINED_IMAGE_SIZE = 224
# timm's default crop_pct for these models: resize the shorter side to 256, crop 224.
PRETRAINED_CROP_FRACTION = 0.875

# Per-channel RGB (mean, std) on pixels scaled to [0, 1]. digits: measured over
# load_digits() scaled to 0-255. faces: measured over skimage.data.lfw_subset()
# scaled to 0-255. mnist and cifar10: the values used throughout
# torchvision's examples. imagefolder: ImageNet.
_DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": ((0.305,) * 3, (0.376,) * 3),
    "faces": ((0.377,) * 3, (0.273,) * 3),
    "mnist": ((0.1307,) * 3, (0.3081,) * 3),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
}
# PIL's convert("L") weights (ITU-R 601-2 luma).
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)
_NATIVE_IMAGE_SIZE = {"digits": 16, "faces": 25, "mnist": 28, "cifar10": 32, "imagefolder": 224}
_NATIVE_COLOR_MODE = {
    "digits": "L",
    "faces": "L",
    "mnist": "L",
    "cifar10": "RGB",
    "imagefolder": "RGB",
}


def _luma(values: tuple[float, ...]) -> float:
    # Exact for the mean. For the std it is an upper bound that ignores the
    # correlation between channels, close enough for normalisation.
    return round(
        sum(weight * value for weight, value in zip(_LUMA_WEIGHTS, values, strict=True)), 4
    )


def is_pretrained(model: str) -> bool:
    return model in PRETRAINED_MODELS or is_timm_model(model)


def default_image_size(model: str, dataset: str) -> int:
    if is_pretrained(model):
        return PRETRAINED_IMAGE_SIZE
    return _NATIVE_IMAGE_SIZE[dataset]


def build_preprocess_spec(
    *,
    model: str,
    dataset: str,
    image_size: int | None = None,
    color_mode: str | None = None,
    resize: str | None = None,
    crop_fraction: float | None = None,
    interpolation: str = "bilinear",
) -> PreprocessSpec:
    """Return the preprocessing for `model` trained on `dataset`; None picks the default."""
    pretrained = is_pretrained(model)
    if color_mode is None:
        color_mode = "RGB" if pretrained else _NATIVE_COLOR_MODE[dataset]
    if pretrained and color_mode != "RGB":
        raise InvalidArgumentsError(
            f"--color-mode {color_mode} is invalid for {model}: its pretrained weights "
            f"expect 3-channel RGB input"
        )
    if resize is None:
        # digits, faces, mnist and cifar10 images all have one square size, so stretching
        # keeps every pixel. Photos of mixed sizes keep their aspect ratio.
        resize = "shorter_side_center_crop" if dataset == "imagefolder" else "stretch"
    if crop_fraction is None:
        crop_fraction = PRETRAINED_CROP_FRACTION if resize == "shorter_side_center_crop" else 1.0
    elif resize != "shorter_side_center_crop":
        raise InvalidArgumentsError(
            "--crop-fraction applies only to --resize shorter_side_center_crop"
        )
    if image_size is None:
        image_size = default_image_size(model, dataset)

    mean: tuple[float, ...]
    std: tuple[float, ...]
    if model == "efficientnet_lite0":
        mean, std = EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
    elif is_timm_model(model):
        mean, std = timm_normalization(model)
    elif pretrained:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = _DATASET_STATS[dataset]
        if color_mode == "L":
            mean, std = (_luma(mean),), (_luma(std),)

    try:
        return PreprocessSpec(
            height=image_size,
            width=image_size,
            color_mode=cast(ColorMode, color_mode),
            resize=cast(ResizePolicy, resize),
            crop_fraction=crop_fraction,
            interpolation=cast(Interpolation, interpolation),
            mean=mean,
            std=std,
        )
    except ValueError as error:
        raise InvalidArgumentsError(f"invalid preprocessing options: {error}") from error
