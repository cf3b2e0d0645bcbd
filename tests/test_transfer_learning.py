"""Fine-tuning strategies, frozen BatchNorm, optimizer groups, schedules, augmentation, weights."""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import models

from training.classification import train, transfer_experiment
from training.classification.augment import (
    AugmentedDataset,
    AugmentOptions,
    MixingCollate,
    build_sample_transform,
)
from training.classification.checkpoint import load_checkpoint
from training.classification.data import DataOptions, build_dataset, split_data
from training.classification.engine import StepOptions, train_one_epoch
from training.classification.errors import DataNotFoundError, InvalidArgumentsError
from training.classification.finetune import (
    Strategy,
    apply_strategy,
    layer_groups,
    optimizer_parameter_groups,
)
from training.classification.models import build_architecture, build_model
from training.classification.optim import build_lr_scheduler, warmup_lr_factor
from training.classification.preprocessing import build_preprocess_spec
from training.classification.transfer_args import check_transfer_args
from training.classification.transfer_report import ArmResult, RunRecord, outcome_checks

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def efficientnet() -> nn.Module:
    return build_model("efficientnet_lite0", num_classes=NUM_CLASSES, in_channels=3, image_size=32)


def count_parameters(model: nn.Module, prefixes: tuple[str, ...] | None) -> int:
    """Count the parameters whose names start with one of `prefixes` (None: all)."""
    return sum(
        parameter.numel()
        for name, parameter in model.named_parameters()
        if prefixes is None or name.startswith(prefixes)
    )


def trainable_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def trainable_names(model: nn.Module) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


HEAD = ("classifier.",)
# timm groups EfficientNet's last stage with the 1x1 head convolution and its norm.
LAST_GROUP = ("blocks.6.", "conv_head.", "bn2.")
EFFICIENTNET_CASES = [
    (Strategy("linear_probe"), 1, HEAD),
    (Strategy("partial", unfreeze_blocks=1), 1, HEAD + LAST_GROUP),
    (Strategy("partial", unfreeze_blocks=2), 1, HEAD + LAST_GROUP + ("blocks.5.",)),
    (Strategy("full"), 1, None),
    (Strategy("staged", head_epochs=2, unfreeze_every=2), 2, HEAD),
    (Strategy("staged", head_epochs=2, unfreeze_every=2), 3, HEAD + LAST_GROUP),
    (Strategy("staged", head_epochs=2, unfreeze_every=2), 4, HEAD + LAST_GROUP),
    (Strategy("staged", head_epochs=2, unfreeze_every=2), 5, HEAD + LAST_GROUP + ("blocks.5.",)),
    (Strategy("staged", head_epochs=0, unfreeze_every=1), 99, None),
]


@pytest.mark.parametrize(("strategy", "epoch", "prefixes"), EFFICIENTNET_CASES)
def test_efficientnet_strategy_trainable_parameters(
    efficientnet: nn.Module, strategy: Strategy, epoch: int, prefixes: tuple[str, ...] | None
) -> None:
    groups = layer_groups(efficientnet)

    returned = apply_strategy(groups, strategy, epoch)

    expected = count_parameters(efficientnet, prefixes)
    assert trainable_count(efficientnet) == expected
    assert returned == expected
    if prefixes is not None:
        assert all(name.startswith(prefixes) for name in trainable_names(efficientnet))


def test_efficientnet_groups_cover_model(efficientnet: nn.Module) -> None:
    groups = layer_groups(efficientnet)

    names = [name for group in groups.ordered() for name, _ in group.parameters]
    assert sorted(names) == sorted(name for name, _ in efficientnet.named_parameters())
    assert len(groups.backbone) == 8
    assert {name for name, _ in groups.head.parameters} == {"classifier.weight", "classifier.bias"}


def test_resnet_strategies_freeze_stages() -> None:
    model = build_architecture("resnet18", num_classes=NUM_CLASSES, in_channels=3, image_size=32)
    groups = layer_groups(model)

    assert [group.name for group in groups.backbone] == [
        "stem", "layer1", "layer2", "layer3", "layer4",
    ]  # fmt: skip
    apply_strategy(groups, Strategy("linear_probe"), 1)
    assert trainable_count(model) == count_parameters(model, ("fc.",))
    apply_strategy(groups, Strategy("partial", unfreeze_blocks=1), 1)
    assert trainable_count(model) == count_parameters(model, ("fc.", "layer4."))
    apply_strategy(groups, Strategy("partial", unfreeze_blocks=5), 1)
    assert trainable_count(model) == count_parameters(model, None)


def test_vgg_strategies_freeze_blocks() -> None:
    model = models.vgg11(weights=None, num_classes=NUM_CLASSES)
    groups = layer_groups(model)

    # Five convolution blocks, each closed by a max-pool, then the hidden Linear layers.
    assert len(groups.backbone) == 6
    assert groups.backbone[-1].name == "fully_connected"
    apply_strategy(groups, Strategy("linear_probe"), 1)
    assert trainable_names(model) == {"classifier.6.weight", "classifier.6.bias"}
    apply_strategy(groups, Strategy("partial", unfreeze_blocks=2), 1)
    assert trainable_count(model) == count_parameters(
        model, ("classifier.", "features.16.", "features.18.")
    )


def test_scratch_model_rejects_linear_probe(tmp_path: Path) -> None:
    argv = [
        "--dataset", "digits", "--model", "cnn", "--strategy", "linear_probe",
        "--max-samples", "200", "--epochs", "1", "--threads", "1", "--no-progress",
        "--output-dir", str(tmp_path / "run"),
    ]  # fmt: skip

    with pytest.raises(InvalidArgumentsError, match="--strategy full"):
        train.main(train.get_args_parser().parse_args(argv))


def test_resume_with_ema_and_augmentation_matches(tmp_path: Path) -> None:
    # The step schedule lets the resumed run extend --epochs. The EMA copy, the
    # training weights and the random crops and MixUp draws must all continue.
    options = [
        "--dataset", "digits", "--model", "cnn", "--image-size", "8",
        "--max-samples", "300", "--batch-size", "32", "--threads", "1", "--no-progress",
        "--lr-scheduler", "step", "--lr-step-size", "1", "--lr-gamma", "0.5",
        "--ema-decay", "0.8", "--crop-scale", "0.7", "--mixup-alpha", "0.4",
        "--max-grad-norm", "1.0",
    ]  # fmt: skip
    straight_dir = tmp_path / "straight"
    resumed_dir = tmp_path / "resumed"
    parse = train.get_args_parser().parse_args
    train.main(parse([*options, "--epochs", "2", "--output-dir", str(straight_dir)]))
    train.main(parse([*options, "--epochs", "1", "--output-dir", str(resumed_dir)]))

    train.main(parse([*options, "--epochs", "2", "--resume", str(resumed_dir / "last.pt")]))

    straight = load_checkpoint(straight_dir / "last.pt")
    resumed = load_checkpoint(resumed_dir / "last.pt")
    assert resumed["ema_updates"] == straight["ema_updates"]
    for part in ("model", "training_model"):
        for key, tensor in straight[part].items():
            assert torch.equal(tensor, resumed[part][key]), f"{part} {key}"
    averaged, trained = straight["model"], straight["training_model"]
    assert not torch.equal(averaged["classifier.2.weight"], trained["classifier.2.weight"])


def test_resume_warmup_keeps_epoch_count(tmp_path: Path) -> None:
    options = [
        "--dataset", "digits", "--model", "mlp", "--image-size", "8", "--max-samples", "200",
        "--lr-scheduler", "cosine", "--warmup-epochs", "1", "--threads", "1", "--no-progress",
    ]  # fmt: skip
    run_dir = tmp_path / "run"
    parse = train.get_args_parser().parse_args
    train.main(parse([*options, "--epochs", "2", "--output-dir", str(run_dir)]))

    with pytest.raises(InvalidArgumentsError, match="warmup schedule spans the epoch count"):
        train.main(parse([*options, "--epochs", "3", "--resume", str(run_dir / "last.pt")]))


def batchnorm_buffers(model: nn.Module, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {
        name: buffer.clone()
        for name, buffer in model.named_buffers()
        if name.startswith(prefixes) and ("running_mean" in name or "running_var" in name)
    }


def random_loader(seed: int) -> DataLoader[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(16, 3, 32, 32, generator=generator)
    targets = torch.randint(0, NUM_CLASSES, (16,), generator=generator)
    return DataLoader(TensorDataset(inputs, targets), batch_size=8)


def test_frozen_batchnorm_statistics_unchanged() -> None:
    model = build_model("efficientnet_lite0", num_classes=NUM_CLASSES, in_channels=3, image_size=32)
    groups = layer_groups(model)
    apply_strategy(groups, Strategy("partial", unfreeze_blocks=1), 1)
    frozen_before = batchnorm_buffers(model, ("bn1.", "blocks.0.", "blocks.5."))
    trained_before = batchnorm_buffers(model, ("bn2.", "blocks.6."))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    train_one_epoch(
        model, nn.CrossEntropyLoss(), optimizer, random_loader(0), epoch=1, progress=False
    )

    assert frozen_before
    for name, before in frozen_before.items():
        assert torch.equal(dict(model.named_buffers())[name], before), name
    changed = [
        name
        for name, before in trained_before.items()
        if not torch.equal(dict(model.named_buffers())[name], before)
    ]
    assert changed, "the BatchNorm layers that train should update their statistics"


def test_batchnorm_eval_keeps_statistics_of_trained_layers() -> None:
    model = build_model("efficientnet_lite0", num_classes=NUM_CLASSES, in_channels=3, image_size=32)
    apply_strategy(layer_groups(model), Strategy("full"), 1)
    statistics_before = batchnorm_buffers(model, ("bn1.", "blocks.", "bn2."))
    scale_before = model.bn2.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

    train_one_epoch(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        random_loader(1),
        epoch=1,
        progress=False,
        options=StepOptions(batchnorm_eval=True),
    )

    assert len(statistics_before) == 98
    for name, before in statistics_before.items():
        assert torch.equal(dict(model.named_buffers())[name], before), name
    assert not torch.equal(model.bn2.weight, scale_before)


def test_weight_decay_skips_norm_and_bias(efficientnet: nn.Module) -> None:
    groups = layer_groups(efficientnet)

    parameter_groups = optimizer_parameter_groups(
        groups, lr=1e-3, weight_decay=0.05, layer_lr_decay=0.5
    )

    decay_of = {
        id(parameter): group["weight_decay"]
        for group in parameter_groups
        for parameter in group["params"]  # type: ignore[attr-defined]
    }
    assert len(decay_of) == len(list(efficientnet.parameters()))
    norms = 0
    for module_name, module in efficientnet.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            full_name = f"{module_name}.{name}"
            if isinstance(module, nn.BatchNorm2d) or name == "bias":
                norms += 1
                assert decay_of[id(parameter)] == 0.0, full_name
            elif isinstance(module, nn.Conv2d | nn.Linear):
                assert decay_of[id(parameter)] == 0.05, full_name
    # 49 BatchNorm layers with a weight and a bias each, plus the classifier bias.
    assert norms == 99


def test_discriminative_learning_rates(efficientnet: nn.Module) -> None:
    groups = layer_groups(efficientnet)

    parameter_groups = optimizer_parameter_groups(
        groups, lr=1e-3, weight_decay=0.0, layer_lr_decay=0.5
    )

    rates = {group["name"]: group["lr"] for group in parameter_groups}
    assert rates["head"] == pytest.approx(1e-3)
    stem = groups.backbone[0].name
    last = groups.backbone[-1].name
    assert rates[last] == pytest.approx(1e-3 * 0.5)
    assert rates[f"{stem}/no_decay"] == pytest.approx(1e-3 * 0.5**8)


def test_decay_norm_and_bias_option(efficientnet: nn.Module) -> None:
    parameter_groups = optimizer_parameter_groups(
        layer_groups(efficientnet), lr=1e-3, weight_decay=0.05, decay_norm_and_bias=True
    )

    assert all(group["weight_decay"] == 0.05 for group in parameter_groups)


def scheduled_rates(scheduler_name: str, steps: int, **options: int | float) -> list[float]:
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler, per_batch = build_lr_scheduler(scheduler_name, optimizer, **options)  # type: ignore[arg-type]
    assert per_batch
    assert scheduler is not None
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_cosine_schedule_values() -> None:
    # 10 epochs of 5 steps, the first 2 epochs (10 steps) warm up.
    rates = scheduled_rates(
        "cosine", 50, epochs=10, steps_per_epoch=5, step_size=None, gamma=None, warmup_epochs=2
    )

    assert rates[0] == pytest.approx(0.1 / 10)
    assert rates[4] == pytest.approx(0.1 * 5 / 10)
    assert rates[9] == pytest.approx(0.1)
    assert rates[10] == pytest.approx(0.1)
    assert rates[30] == pytest.approx(0.05)
    assert rates[49] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))
    assert all(a < b for a, b in itertools.pairwise(rates[:10]))
    assert all(a > b for a, b in itertools.pairwise(rates[10:]))


def test_warmup_step_schedule_values() -> None:
    rates = scheduled_rates(
        "step", 20, epochs=5, steps_per_epoch=4, step_size=2, gamma=0.1, warmup_epochs=1
    )

    assert rates[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert rates[4:12] == pytest.approx([0.1] * 8)
    assert rates[12:20] == pytest.approx([0.01] * 8)


def test_warmup_factor_rejects_onecycle() -> None:
    with pytest.raises(ValueError, match="cosine and step"):
        warmup_lr_factor(5, total_steps=10, warmup_steps=2, decay="onecycle")


def test_warmup_with_onecycle_rejected(tmp_path: Path) -> None:
    argv = [
        "--dataset", "digits", "--model", "mlp", "--warmup-epochs", "1",
        "--output-dir", str(tmp_path / "run"),
    ]  # fmt: skip

    with pytest.raises(InvalidArgumentsError, match="onecycle has its own warmup"):
        train.main(train.get_args_parser().parse_args(argv))


ALL_AUGMENTATIONS = AugmentOptions(
    crop_scale=0.5,
    hflip=0.5,
    vflip=0.5,
    rotation=30.0,
    scale_jitter=0.2,
    color_jitter=0.4,
    auto_augment="trivialaugment",
)


@pytest.fixture(scope="module")
def digits_splits():
    return split_data(DataOptions(dataset="digits", data_root=Path("."), max_samples=200))


@pytest.mark.parametrize(
    ("model", "auto_augment", "shape"),
    [
        ("efficientnet_lite0", "trivialaugment", (3, 32, 32)),
        ("efficientnet_lite0", "randaugment", (3, 32, 32)),
        ("cnn", "trivialaugment", (1, 16, 16)),
    ],
)
def test_augmentation_keeps_labels_and_shapes(
    digits_splits, model: str, auto_augment: str, shape: tuple[int, ...]
) -> None:
    spec = build_preprocess_spec(
        model=model, dataset="digits", image_size=shape[-1], color_mode=None
    )
    options = AugmentOptions(**{**vars(ALL_AUGMENTATIONS), "auto_augment": auto_augment})
    torch.manual_seed(0)
    dataset = AugmentedDataset(
        digits_splits.train,
        spec,
        build_sample_transform(options, spec),
        cache_max_bytes=10**9,
    )
    plain = build_dataset(digits_splits.train, spec, cache_max_bytes=10**9)

    differs = 0
    for position in range(len(dataset)):
        augmented, target = dataset[position]
        reference, reference_target = plain[position]
        assert augmented.shape == shape
        assert augmented.dtype == torch.float32
        assert target == reference_target == int(digits_splits.train.targets[position])
        differs += not torch.equal(augmented, reference)
    assert differs > len(dataset) // 2


def test_augmentation_off_gives_serving_tensor(digits_splits) -> None:
    spec = build_preprocess_spec(model="efficientnet_lite0", dataset="digits", image_size=32)
    dataset = AugmentedDataset(
        digits_splits.train,
        spec,
        build_sample_transform(AugmentOptions(), spec),
        cache_max_bytes=0,
    )
    plain = build_dataset(digits_splits.train, spec, cache_max_bytes=10**9)

    assert dataset.cached is None
    for position in (0, 7, 42):
        assert torch.equal(dataset[position][0], plain[position][0])


@pytest.mark.parametrize(("mixup_alpha", "cutmix_alpha"), [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixup_cutmix_soft_labels(mixup_alpha: float, cutmix_alpha: float) -> None:
    torch.manual_seed(0)
    collate = MixingCollate(
        AugmentOptions(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha), num_classes=5
    )
    labels = [0, 1, 2, 3, 4, 0, 1, 2]
    batch = [(torch.randn(3, 16, 16), label) for label in labels]

    inputs, targets = collate(batch)

    assert inputs.shape == (8, 3, 16, 16)
    assert targets.shape == (8, 5)
    assert targets.dtype == torch.float32
    assert torch.allclose(targets.sum(dim=1), torch.ones(8))
    assert (targets >= 0.0).all()
    # torchvision mixes each sample with its neighbour in the batch (a roll by one),
    # so only the two labels involved may get probability.
    for index, label in enumerate(labels):
        others = torch.ones(5, dtype=torch.bool)
        others[label] = False
        others[labels[index - 1]] = False
        assert float(targets[index, others].sum()) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("model_name", ["resnet50", "vgg16", "timm:resnet18"])
def test_missing_weights_file_named(tmp_path: Path, model_name: str) -> None:
    missing = tmp_path / "weights.pth"

    with pytest.raises(DataNotFoundError) as raised:
        build_model(
            model_name, num_classes=NUM_CLASSES, in_channels=3, image_size=32, weights=missing
        )

    assert str(missing) in str(raised.value)
    assert "not found" in str(raised.value)


def test_timm_without_weights_explains_options() -> None:
    with pytest.raises(DataNotFoundError) as raised:
        build_model("timm:resnet18", num_classes=NUM_CLASSES, in_channels=3, image_size=32)

    assert "--weights PATH" in str(raised.value)
    assert "--download-weights" in str(raised.value)


def test_timm_model_loads_local_weights(tmp_path: Path) -> None:
    source = timm.create_model("resnet18", pretrained=False)
    weights = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), weights)

    model = build_model(
        "timm:resnet18", num_classes=NUM_CLASSES, in_channels=3, image_size=32, weights=weights
    )

    state = model.state_dict()
    assert torch.equal(state["conv1.weight"], source.state_dict()["conv1.weight"])
    assert torch.equal(
        state["layer4.1.bn2.running_var"], source.state_dict()["layer4.1.bn2.running_var"]
    )
    assert state["fc.weight"].shape == (NUM_CLASSES, 512)


def test_torchvision_model_loads_local_weights(tmp_path: Path) -> None:
    source = models.resnet18(weights=None)
    weights = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), weights)

    model = build_model(
        "resnet18", num_classes=NUM_CLASSES, in_channels=3, image_size=32, weights=weights
    )

    assert torch.equal(model.state_dict()["conv1.weight"], source.state_dict()["conv1.weight"])
    assert model.state_dict()["fc.weight"].shape == (NUM_CLASSES, 512)


def test_unknown_timm_model_rejected() -> None:
    with pytest.raises(SystemExit):
        train.get_args_parser().parse_args(["--model", "timm:no_such_net"])


def summary_result(arm: str, augment: bool, accuracy: float) -> ArmResult:
    record = RunRecord(arm, augment, 0, accuracy, accuracy, 1.0, [accuracy], [1.0], 1)
    return ArmResult(arm, augment, [record])


def test_outcome_checks_need_a_positive_gain() -> None:
    losses = [
        summary_result("scratch", False, 0.95),
        summary_result("scratch", True, 0.94),
        summary_result("full", False, 0.90),
        summary_result("full", True, 0.50),
    ]
    gains = [*losses[:1], summary_result("scratch", True, 0.97), *losses[2:]]

    assert "helps scratch most: does not hold" in outcome_checks(losses)[-1]
    assert "helps scratch most: holds" in outcome_checks(gains)[-1]
    assert (
        "Pretrained beats scratch (without augmentation): does not hold"
        in (outcome_checks(losses)[0])
    )


def test_quick_experiment_writes_page(tmp_path: Path) -> None:
    output = tmp_path / "docs" / "transfer.md"
    args = transfer_experiment.get_args_parser().parse_args(
        ["--output", str(output), "--quick", "--arms", "scratch", "staged"]
    )

    results = transfer_experiment.main(args)

    page = output.read_text(encoding="utf-8")
    assert [(result.arm, result.augment) for result in results] == [
        ("scratch", False), ("scratch", True), ("staged", False), ("staged", True),
    ]  # fmt: skip
    assert "--quick" in page
    assert "| staged | yes |" in page
    assert "Pretrained beats scratch (without augmentation)" in page
    assert (tmp_path / "docs" / "transfer-curves.png").read_bytes().startswith(b"\x89PNG")
    for result in results:
        accuracy = result.accuracy.mean
        assert 0.0 <= accuracy <= 1.0
        assert len(result.runs[0].val_accuracy) == transfer_experiment.QUICK_EPOCHS
    assert np.isfinite([result.seconds.mean for result in results]).all()


def test_quick_faces_experiment_writes_page(tmp_path: Path) -> None:
    output = tmp_path / "faces.md"
    args = transfer_experiment.get_args_parser().parse_args(
        ["--output", str(output), "--dataset", "faces", "--quick", "--arms", "scratch"]
    )

    results = transfer_experiment.main(args)

    page = output.read_text(encoding="utf-8")
    assert page.startswith("# Transfer learning with little data: faces\n")
    assert "--dataset faces --quick" in page
    assert "lfw_subset()" in page
    assert "20 training images (10 per class), 20 validation and 160 test images" in page
    assert "24x24 grayscale" in page
    assert "--hflip 0.5" in page
    assert "(transfer-learning.md)" in page
    assert [(result.arm, result.augment) for result in results] == [
        ("scratch", False),
        ("scratch", True),
    ]


def test_staged_without_unfreezing_warns(caplog: pytest.LogCaptureFixture) -> None:
    args = train.get_args_parser().parse_args(
        ["--model", "efficientnet_lite0", "--strategy", "staged", "--head-epochs", "4",
         "--epochs", "2"]
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        check_transfer_args(args)
    assert "never unfreezes a backbone group" in caplog.text
