"""Detection training: exact data set labels, our mAP against ultralytics, tiny train and export."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from services.common.imaging import decode_image
from services.common.metadata import MODEL_FILENAME, read_metadata
from services.common.model_checks import check_output_shape, check_preprocess, check_signature
from services.common.reference_profile import read_reference
from tests.reference_checks import (
    check_detections,
    check_input_features,
    model_service_env,
    post_each,
)
from tests.servers import running_server
from training.classification.cli import run
from training.classification.errors import DataNotFoundError, InvalidArgumentsError
from training.detection import build_default, dataset, evaluate, export, parity, train
from training.detection.metrics import (
    Detections,
    GroundTruth,
    compute_metrics,
    match_image,
)
from training.detection.offline import offline_ultralytics
from training.detection.portrait import PORTRAIT_FILE
from training.detection.samples import SAMPLES_DIRNAME, SAMPLES_INDEX
from training.detection.scenes import (
    INK_THRESHOLD,
    PastedDigit,
    Scene,
    digit_alpha,
    paste_digit,
    yolo_label_lines,
)
from training.detection.yolo_data import fingerprint, label_path, load_data_yaml

NAMES = [str(digit) for digit in range(10)]


def build_tiny_dataset(output: Path, seed: int = 0) -> dataset.BuildResult:
    argv = [*build_default.TINY_DATASET_RECIPE, "--output", str(output), "--seed", str(seed)]
    return dataset.main(dataset.get_args_parser().parse_args(argv))


def changed_extent(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int]:
    changed = np.abs(after - before).max(axis=2) > 0
    rows = np.flatnonzero(changed.any(axis=1))
    cols = np.flatnonzero(changed.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def label_to_pixels(line: str, width: int, height: int) -> tuple[int, np.ndarray]:
    class_id, cx, cy, w, h = line.split()
    centre = np.array([float(cx) * width, float(cy) * height])
    half = np.array([float(w) * width, float(h) * height]) / 2
    return int(class_id), np.concatenate([centre - half, centre + half])


# --- data set ---------------------------------------------------------------


def test_pasted_digit_label_is_stroke_extent() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate([(12, 9), (23, 17), (40, 31), (57, 60)]):
        background = np.full((80, 96, 3), 120.0)
        canvas = background.copy()
        alpha = digit_alpha(digits.images[index], height, width)
        box = paste_digit(canvas, alpha, left=7 + index, top=5 + 2 * index, rng=rng)
        scene = Scene(
            image=np.clip(np.rint(canvas), 0, 255).astype(np.uint8),
            digits=[PastedDigit(int(digits.target[index]), index, box)],
            background="test",
        )
        (line,) = yolo_label_lines(scene)
        class_id, drawn_back = label_to_pixels(line, 96, 80)

        extent = changed_extent(background, scene.image.astype(np.float64))
        assert class_id == digits.target[index]
        assert extent == box
        np.testing.assert_allclose(drawn_back, extent, atol=1.0)


def test_digit_alpha_edges_hold_stroke() -> None:
    from sklearn.datasets import load_digits

    alpha = digit_alpha(load_digits().images[3], 30, 24)

    for edge in (alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]):
        assert edge.max() >= INK_THRESHOLD


def test_digit_pools_are_disjoint_and_complete() -> None:
    pools = dataset.digit_pools(seed=3, num_digits=1797)

    assert set(pools["train"]).isdisjoint(pools["test"])
    assert set(pools["train"]).isdisjoint(pools["val"])
    assert set(pools["val"]).isdisjoint(pools["test"])
    assert sorted(np.concatenate(list(pools.values()))) == list(range(1797))


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> dataset.BuildResult:
    return build_tiny_dataset(tmp_path_factory.mktemp("data") / "digits-scenes")


def test_train_scenes_use_train_pool_only(tiny_dataset: dataset.BuildResult) -> None:
    manifest = json.loads((tiny_dataset.root / dataset.MANIFEST).read_text())
    pools = {split: set(indices) for split, indices in manifest["digit_pools"].items()}

    for split, scenes in manifest["scenes"].items():
        used = {digit["source_index"] for scene in scenes for digit in scene["digits"]}
        assert used, split
        assert used <= pools[split], split
    train_used = {d["source_index"] for s in manifest["scenes"]["train"] for d in s["digits"]}
    assert train_used.isdisjoint(pools["test"])


def test_label_files_match_manifest_boxes(tiny_dataset: dataset.BuildResult) -> None:
    manifest = json.loads((tiny_dataset.root / dataset.MANIFEST).read_text())
    size = manifest["options"]["width"]

    for scene in manifest["scenes"]["test"]:
        image = tiny_dataset.root / scene["image"]
        lines = label_path(image).read_text().splitlines()
        assert len(lines) == len(scene["digits"])
        for line, digit in zip(lines, scene["digits"], strict=True):
            class_id, box = label_to_pixels(line, size, size)
            assert class_id == digit["label"]
            np.testing.assert_allclose(box, digit["box"], atol=1e-3)


def test_dataset_is_deterministic(tiny_dataset: dataset.BuildResult, tmp_path: Path) -> None:
    again = build_tiny_dataset(tmp_path / "again")
    other_seed = build_tiny_dataset(tmp_path / "other", seed=1)

    assert again.fingerprint == tiny_dataset.fingerprint
    assert other_seed.fingerprint != tiny_dataset.fingerprint
    assert fingerprint(load_data_yaml(again.data_yaml)) == again.fingerprint


def test_dataset_builds_at_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    result = build_tiny_dataset(Path("data") / "scenes")
    data = load_data_yaml(result.data_yaml)

    assert data.root == tmp_path / "data" / "scenes"
    assert len(data.images("val")) == 8


def test_dataset_yaml_lists_digit_names(tiny_dataset: dataset.BuildResult) -> None:
    data = load_data_yaml(tiny_dataset.data_yaml)

    assert data.names == NAMES
    assert len(data.images("train")) == 32
    assert len(data.images("test")) == 8


@pytest.mark.parametrize(
    "extra",
    [
        ["--min-digits", "3", "--max-digits", "2"],
        ["--max-digit-size", "1.5"],
        ["--clean-fraction", "-0.1"],
        ["--image-size", "16"],
        ["--train", "0"],
    ],
)
def test_dataset_rejects_invalid_options(extra: list[str], tmp_path: Path) -> None:
    args = dataset.get_args_parser().parse_args(["--output", str(tmp_path / "d"), *extra])

    with pytest.raises(InvalidArgumentsError):
        dataset.main(args)
    assert not (tmp_path / "d").exists()


def test_dataset_rejects_existing_output(tiny_dataset: dataset.BuildResult) -> None:
    with pytest.raises(InvalidArgumentsError, match="--force"):
        build_tiny_dataset(tiny_dataset.root)


# --- metrics ----------------------------------------------------------------


def random_truths(rng: np.random.Generator, images: int) -> list[GroundTruth]:
    truths = []
    for _ in range(images):
        count = int(rng.integers(0, 6))
        corners = rng.uniform(0, 100, size=(count, 2))
        sizes = rng.uniform(8, 40, size=(count, 2))
        boxes = np.concatenate([corners, corners + sizes], axis=1)
        truths.append(GroundTruth(boxes, rng.integers(0, 4, size=count)))
    return truths


def perturbed_predictions(rng: np.random.Generator, truths: list[GroundTruth]) -> list[Detections]:
    """Jitter true boxes, flip some classes, drop some, add false positives, score at random."""
    predictions = []
    for truth in truths:
        keep = rng.random(len(truth.classes)) > 0.15
        boxes = truth.boxes[keep] + rng.normal(0, 2.5, size=(int(keep.sum()), 4))
        classes = truth.classes[keep].copy()
        flip = rng.random(len(classes)) < 0.1
        classes[flip] = rng.integers(0, 4, size=int(flip.sum()))
        extra = int(rng.integers(0, 3))
        corners = rng.uniform(0, 100, size=(extra, 2))
        extra_boxes = np.concatenate([corners, corners + rng.uniform(8, 40, (extra, 2))], axis=1)
        boxes = np.concatenate([boxes, extra_boxes])
        classes = np.concatenate([classes, rng.integers(0, 4, size=extra)])
        predictions.append(Detections(boxes, rng.uniform(0.001, 1.0, len(classes)), classes))
    return predictions


def ultralytics_reference(
    predictions: list[Detections], truths: list[GroundTruth]
) -> tuple[float, float, np.ndarray]:
    """Score with ultralytics' own matching and ap_per_class."""
    offline_ultralytics()
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou

    validator = SimpleNamespace(iouv=torch.linspace(0.5, 0.95, 10))
    correct, scores, predicted = [], [], []
    for detections, truth in zip(predictions, truths, strict=True):
        order = np.argsort(-detections.scores, kind="stable")
        boxes = torch.tensor(detections.boxes[order], dtype=torch.float32)
        classes = torch.tensor(detections.classes[order])
        iou = box_iou(torch.tensor(truth.boxes, dtype=torch.float32), boxes)
        matched = BaseValidator.match_predictions(
            validator, classes, torch.tensor(truth.classes), iou
        )
        correct.append(matched.numpy())
        scores.append(detections.scores[order])
        predicted.append(detections.classes[order])
    targets = np.concatenate([truth.classes for truth in truths])
    results = ap_per_class(
        np.concatenate(correct), np.concatenate(scores), np.concatenate(predicted), targets
    )
    ap = results[5]
    return float(ap[:, 0].mean()), float(ap.mean()), ap[:, 0]


def test_ground_truth_as_predictions_scores_0995() -> None:
    truths = random_truths(np.random.default_rng(1), 20)
    perfect = [
        Detections(truth.boxes, np.linspace(0.9, 0.5, len(truth.classes)), truth.classes)
        for truth in truths
    ]

    metrics = compute_metrics(perfect, truths, num_classes=4)

    # 0.995, not 1.0: the trapezoid over the 101 recall points ends with
    # precision 1 at recall 0.99 and 0 at recall 1.0, as in ultralytics.
    assert metrics.map50 == pytest.approx(0.995)
    assert metrics.map50_95 == pytest.approx(0.995)
    assert ultralytics_reference(perfect, truths)[0] == pytest.approx(0.995)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_ultralytics_on_perturbed_predictions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truths = random_truths(rng, 40)
    predictions = perturbed_predictions(rng, truths)

    metrics = compute_metrics(predictions, truths, num_classes=4)
    map50, map50_95, ap50 = ultralytics_reference(predictions, truths)

    assert 0.3 < metrics.map50 < 0.99
    assert metrics.map50 == pytest.approx(map50, abs=1e-9)
    assert metrics.map50_95 == pytest.approx(map50_95, abs=1e-9)
    present = metrics.ground_truth_counts > 0
    np.testing.assert_allclose(metrics.ap50[present], ap50, atol=1e-9)


def test_match_claims_per_iou_threshold() -> None:
    truth = GroundTruth(np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([1]))
    detections = Detections(
        boxes=np.array([[0.0, 0.0, 10.0, 8.8], [0.0, 0.0, 10.0, 10.0]]),
        scores=np.array([0.9, 0.5]),
        classes=np.array([1, 1]),
    )

    correct = match_image(detections, truth)

    # IoU 0.88: the higher score claims the box at thresholds 0.50-0.85, and
    # the exact box, scored lower, claims it at 0.90 and 0.95.
    assert correct[0, :8].all()
    assert not correct[0, 8:].any()
    assert not correct[1, :8].any()
    assert correct[1, 8:].all()


def test_wrong_class_is_false_positive() -> None:
    truth = GroundTruth(np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([1]))
    detections = Detections(np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([0.9]), np.array([2]))

    assert not match_image(detections, truth).any()


# --- training and export ----------------------------------------------------


def train_argv(data_yaml: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        *build_default.TINY_TRAIN_RECIPE,
        "--data", str(data_yaml), "--output-dir", str(output_dir), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(
    tiny_dataset: dataset.BuildResult, tmp_path_factory: pytest.TempPathFactory
) -> train.TrainResult:
    output_dir = tmp_path_factory.mktemp("runs") / "tiny"
    return train.main(
        train.get_args_parser().parse_args(train_argv(tiny_dataset.data_yaml, output_dir))
    )


@pytest.fixture(scope="module")
def tiny_export(
    tiny_run: train.TrainResult,
    tiny_dataset: dataset.BuildResult,
    tmp_path_factory: pytest.TempPathFactory,
) -> export.ExportResult:
    repository = tmp_path_factory.mktemp("models")
    argv = [
        "--weights", str(tiny_run.best_weights), "--repository", str(repository),
        "--name", "tiny", "--samples", "3",
    ]  # fmt: skip
    return export.main(export.get_args_parser().parse_args(argv))


@pytest.mark.slow
def test_training_run_keeps_results(tiny_run: train.TrainResult) -> None:
    summary = json.loads((tiny_run.run_dir / train.SUMMARY_FILE).read_text())

    assert tiny_run.best_weights.is_file()
    assert (tiny_run.run_dir / "results.csv").is_file()
    assert (tiny_run.run_dir / "args.yaml").is_file()
    assert summary["data_fingerprint"].startswith("sha256:")
    assert summary["names"] == NAMES


@pytest.mark.slow
def test_export_writes_repository_folder(tiny_export: export.ExportResult) -> None:
    version_dir = tiny_export.version_dir
    metadata = read_metadata(version_dir)

    for name in (MODEL_FILENAME, "model.json", evaluate.REPORT_FILE, "pr_curve.png"):
        assert (version_dir / name).is_file(), name
    assert version_dir.name == "1"
    assert metadata.task == "detection"
    assert metadata.labels == NAMES
    assert metadata.preprocess.resize == "letterbox"
    assert metadata.preprocess.pad_value == 114
    assert metadata.preprocess.stride == 32
    assert metadata.preprocess.height == 64
    assert metadata.detection is not None
    assert metadata.detection.conf_threshold == 0.25
    assert metadata.detection.iou_threshold == 0.45
    assert metadata.training_data_fingerprint is not None
    assert {"ultralytics", "torch", "onnx", "onnxruntime", "opset"} <= set(metadata.exporter)
    assert set(metadata.metrics["test_ap50_per_class"]) == set(NAMES)
    assert "parity_matched" in metadata.metrics


@pytest.mark.slow
def test_exported_graph_fits_service_contract(tiny_export: export.ExportResult) -> None:
    path = tiny_export.version_dir / MODEL_FILENAME
    metadata = tiny_export.metadata
    onnx.checker.check_model(str(path), full_check=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    single = session.run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})[0]
    batch = session.run(None, {"images": np.zeros((3, 3, 64, 64), np.float32)})[0]

    assert check_signature(session, metadata) is None
    assert check_preprocess(metadata) is None
    assert check_output_shape(tuple(single.shape), metadata) is None
    assert batch.shape[0] == 3
    np.testing.assert_allclose(batch[0], single[0], atol=1e-4)


@pytest.mark.slow
def test_evaluator_agrees_with_ultralytics_val(tiny_export: export.ExportResult) -> None:
    # A 1-epoch model scores near 0 on both sides. The perturbed-prediction
    # tests above check the metric itself against ultralytics to 1e-9.
    report = json.loads((tiny_export.version_dir / evaluate.REPORT_FILE).read_text())

    assert report["split"] == "test"
    assert abs(report["map50"] - report["ultralytics_val"]["map50"]) <= 0.02
    assert report["map50_difference"] <= report["tolerance"]
    assert "ultralytics_val_multi_label" in report


@pytest.mark.slow
def test_samples_list_truth_boxes(tiny_export: export.ExportResult) -> None:
    samples_dir = tiny_export.version_dir / SAMPLES_DIRNAME
    index = json.loads((samples_dir / SAMPLES_INDEX).read_text())

    assert [entry["file"] for entry in index["images"]] == [
        "test_00000.jpg",
        "test_00001.jpg",
        "test_00002.jpg",
    ]
    for entry in index["images"]:
        assert (samples_dir / entry["file"]).is_file()
        assert entry["truth"]
        assert entry["width"] == entry["height"] == 64


@pytest.mark.slow
def test_missing_weights_file_is_named(tiny_dataset: dataset.BuildResult, tmp_path: Path) -> None:
    missing = tmp_path / "yolov8n.pt"
    args = train.get_args_parser().parse_args(
        train_argv(tiny_dataset.data_yaml, tmp_path / "run", "--weights", str(missing))
    )

    with pytest.raises(DataNotFoundError, match=str(missing)):
        train.main(args)
    assert not missing.exists()
    assert not (tmp_path / "run").exists()


def test_export_rejects_missing_weights(tmp_path: Path) -> None:
    missing = tmp_path / "best.pt"
    args = export.get_args_parser().parse_args(["--weights", str(missing)])

    with pytest.raises(DataNotFoundError, match=str(missing)):
        export.main(args)


@pytest.mark.parametrize(
    "extra",
    [["--fliplr", "1.5"], ["--imgsz", "100"], ["--epochs", "0"], ["--lrf", "0"]],
)
def test_train_rejects_invalid_options(extra: list[str], tmp_path: Path) -> None:
    args = train.get_args_parser().parse_args(
        ["--data", str(tmp_path / "data.yaml"), "--output-dir", str(tmp_path / "run"), *extra]
    )

    with pytest.raises(InvalidArgumentsError):
        train.main(args)


@pytest.mark.slow
def test_parity_failure_leaves_no_version(
    tiny_run: train.TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = parity.raw_output_differences

    def shifted(*args: object, **kwargs: object) -> tuple[float, float]:
        box_difference, score_difference = real(*args, **kwargs)  # type: ignore[arg-type]
        return box_difference + 0.5, score_difference

    monkeypatch.setattr(parity, "raw_output_differences", shifted)
    argv = ["--weights", str(tiny_run.best_weights), "--repository", str(tmp_path), "--name", "t"]

    with pytest.raises(SystemExit) as exited:
        run(export.get_args_parser(), export.main, argv)

    assert exited.value.code == 1
    assert list((tmp_path / "t").iterdir()) == []


@pytest.mark.slow
def test_evaluation_mismatch_leaves_no_version(
    tiny_run: train.TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = evaluate.ultralytics_val

    def inflated(*args: object, **kwargs: object) -> evaluate.ReferenceMetrics:
        metrics = real(*args, **kwargs)  # type: ignore[arg-type]
        return evaluate.ReferenceMetrics(metrics.map50 + 0.5, metrics.map50_95, {}, metrics.weights)

    monkeypatch.setattr(evaluate, "ultralytics_val", inflated)
    args = export.get_args_parser().parse_args(
        ["--weights", str(tiny_run.best_weights), "--repository", str(tmp_path), "--name", "t"]
    )

    with pytest.raises(evaluate.EvaluationMismatchError, match=r"differs by 0\.5"):
        export.main(args)
    assert list((tmp_path / "t").iterdir()) == []


def test_parity_counts_unmatched_boxes() -> None:
    settings = parity.NmsSettings(conf_threshold=0.25, iou_threshold=0.45)
    box = np.array([[10.0, 10.0, 30.0, 30.0]])
    reference = [Detections(box, np.array([0.9]), np.array([3]))]
    shifted = [Detections(box + 2.0, np.array([0.9]), np.array([3]))]
    other_class = [Detections(box, np.array([0.9]), np.array([4]))]
    near_threshold = [Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))]
    paths = [Path("a.jpg")]

    assert parity.compare_predictions(paths, reference, reference, settings).passed
    assert parity.compare_predictions(paths, reference, shifted, settings).unmatched == 2
    assert parity.compare_predictions(paths, reference, other_class, settings).unmatched == 2
    borderline = [Detections(box, np.array([0.255]), np.array([3]))]
    result = parity.compare_predictions(paths, borderline, near_threshold, settings)
    assert result.unmatched == 0
    assert result.near_threshold == 1


@pytest.mark.slow
def test_build_default_tiny_writes_exif_portrait(tmp_path: Path) -> None:
    args = build_default.get_args_parser().parse_args(
        [
            "--tiny", "--repository", str(tmp_path / "models"),
            "--data-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs"),
        ]
    )  # fmt: skip
    result = build_default.main(args)
    assert result is not None
    samples_dir = result.version_dir / SAMPLES_DIRNAME
    index = json.loads((samples_dir / SAMPLES_INDEX).read_text())
    (portrait,) = [entry for entry in index["images"] if entry["file"] == PORTRAIT_FILE]
    decoded = decode_image((samples_dir / PORTRAIT_FILE).read_bytes(), max_pixels=10**6)

    assert portrait["exif_orientation"] == 6
    assert (decoded.width, decoded.height) == (portrait["width"], portrait["height"])
    assert portrait["height"] > portrait["width"]
    assert portrait["truth"]
    for entry in portrait["truth"]:
        x0, y0, x1, y1 = entry["box"]
        assert 0 <= x0 < x1 <= portrait["width"]
        assert 0 <= y0 < y1 <= portrait["height"]
    assert build_default.main(args) is None


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["yolov5nu", "yolo11n"])
def test_other_architectures_train_from_scratch(
    architecture: str, tiny_dataset: dataset.BuildResult, tmp_path: Path
) -> None:
    argv = train_argv(tiny_dataset.data_yaml, tmp_path / "run", "--model", architecture)

    result = train.main(train.get_args_parser().parse_args(argv))

    from ultralytics import YOLO

    trained = YOLO(str(result.best_weights), task="detect")
    assert architecture in str(trained.model.yaml.get("yaml_file"))
    assert trained.model.names == {index: str(index) for index in range(10)}


@pytest.mark.slow
def test_training_continues_from_a_weights_file(
    tiny_run: train.TrainResult, tiny_dataset: dataset.BuildResult, tmp_path: Path
) -> None:
    argv = train_argv(
        tiny_dataset.data_yaml, tmp_path / "run", "--weights", str(tiny_run.best_weights)
    )

    result = train.main(train.get_args_parser().parse_args(argv))

    summary = json.loads((result.run_dir / train.SUMMARY_FILE).read_text())
    assert summary["args"]["weights"] == str(tiny_run.best_weights)
    assert result.best_weights.is_file()
    assert result.best_weights != tiny_run.best_weights


@pytest.mark.slow
def test_export_reference_matches_service(
    tiny_export: export.ExportResult, tiny_dataset: dataset.BuildResult, tmp_path: Path
) -> None:
    # reference.json profiles the val split with the default thresholds of model.json.
    # The detector, serving the exported version, must return the same scores.
    profile = read_reference(tiny_export.version_dir)
    files = [path.read_bytes() for path in load_data_yaml(tiny_dataset.data_yaml).images("val")]
    decoded = [decode_image(data, max_pixels=50_000_000) for data in files]
    repository = tiny_export.version_dir.parent.parent
    env = model_service_env("detector", repository)
    with running_server("services.detector.app:create_app", env, tmp_path) as server:
        bodies = post_each(server.url, "/v1/detect", files)

    assert profile.model == "tiny"
    assert profile.task == "detection"
    assert profile.source.startswith("val split of ")
    check_input_features(profile, decoded)
    check_detections(profile, bodies)
