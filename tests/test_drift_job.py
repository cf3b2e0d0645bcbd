"""The drift job against real parts: Redis, a classifier process, the Pushgateway and Prometheus.

The classifier serves the colour model of tests/onnx_models.py and writes its
prediction log to the shared Redis, below a test key prefix. The tests send
random crops of scikit-image photos to it and copy the records it logged into
a stream of their own, so that each test controls what the drift job reads.
`training.reference`, which the exporters use, profiles other random crops of
the same photos as the reference. Darkened, blurred and rotated copies of the
live crops must drift.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from PIL import Image, ImageEnhance, ImageFilter
from prometheus_client.parser import text_string_to_metric_families
from skimage import data as skimage_data

from monitoring.drift import __main__ as drift_cli
from monitoring.drift.job import DriftRun, run_once
from monitoring.drift.report import HTML_REPORT, JSON_REPORT
from monitoring.drift.settings import MonitorSettings
from services.common.input_stats import INPUT_FEATURES
from services.common.prediction_record import PredictionRecord, prediction_log_key
from services.common.reference_profile import ReferenceProfile, read_reference
from tests.drift_servers import (
    needs_prometheus,
    running_prometheus,
    running_pushgateway,
)
from tests.images import encode
from tests.onnx_models import COLOUR_MODEL, build_colour_repository, colour_metadata
from tests.redis_servers import SHARED_REDIS_URL, shared_redis_prefix
from tests.servers import ROOT, Server, free_port, running_server
from training.reference import ReferenceImages, png_bytes, write_reference_profile

pytestmark = pytest.mark.slow

APP = "services.classifier.app:create_app"
PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
    "hubble_deep_field", "camera", "coins", "moon",
)  # fmt: skip
REFERENCE_IMAGES = 400
LIVE_IMAGES = 200
MIN_SAMPLES = 100
BATCH_IMAGES = 32
STAGES = {"queue", "decode", "preprocess", "inference", "postprocess"}
TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "darkened": lambda image: ImageEnhance.Brightness(image).enhance(0.4),
    "blurred": lambda image: image.filter(ImageFilter.GaussianBlur(3)),
    "rotated": lambda image: image.transpose(Image.Transpose.ROTATE_90),
}


@functools.cache
def photos() -> list[Image.Image]:
    return [Image.fromarray(getattr(skimage_data, name)()).convert("RGB") for name in PHOTOS]


def photo_crops(count: int, seed: int) -> list[Image.Image]:
    """Return `count` landscape crops, 120 to 240 px wide, of random scikit-image photos."""
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        photo = photos()[int(rng.integers(len(PHOTOS)))]
        width = int(rng.integers(120, 241))
        height = int(width / rng.uniform(1.2, 1.6))
        left = int(rng.integers(0, photo.width - width + 1))
        top = int(rng.integers(0, photo.height - height + 1))
        crops.append(photo.crop((left, top, left + width, top + height)))
    return crops


def served_records(
    server: Server, log_key: str, images: list[Image.Image]
) -> list[PredictionRecord]:
    """Classify `images` on the real classifier and return the records its prediction log wrote."""
    pngs = [encode(image, "PNG") for image in images]
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    try:
        logged_before = client.xlen(log_key)
        for start in range(0, len(pngs), BATCH_IMAGES):
            chunk = pngs[start : start + BATCH_IMAGES]
            files = [
                ("file", (f"image-{index}.png", data, "image/png"))
                for index, data in enumerate(chunk)
            ]
            response = httpx.post(f"{server.url}/v1/classify/batch", files=files, timeout=60.0)
            assert response.status_code == 200, response.text

        # A background thread of the service writes the records.
        deadline = time.monotonic() + 30
        while client.xlen(log_key) < logged_before + len(images):
            assert time.monotonic() < deadline, (
                f"the classifier logged too few records:\n{server.log()}"
            )
            time.sleep(0.1)
        entries = client.xrevrange(log_key, count=len(images)) or []
    finally:
        client.close()
    return [PredictionRecord.from_fields(fields or {}) for _entry_id, fields in reversed(entries)]


def write_stream(prefix: str, records: list[PredictionRecord], model: str | None = None) -> str:
    """Append `records` to their prediction log, renamed to `model` if given; return the key."""
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    key = ""
    try:
        for record in records:
            if model is not None:
                record = dataclasses.replace(record, model=model)
            key = prediction_log_key(prefix, record.service, record.model)
            client.xadd(key, record.to_fields())  # type: ignore[arg-type]
    finally:
        client.close()
    return key


def report_json(run: DriftRun) -> dict[str, Any]:
    return json.loads(run.report_paths[0].read_text())


def only_version(run: DriftRun) -> Any:
    assert len(run.results) == 1, [result.model for result in run.results]
    return run.results[0]


def pushed_samples(pushgateway: Server) -> list[Any]:
    text = httpx.get(f"{pushgateway.url}/metrics", timeout=10.0).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def pushed_value(pushgateway: Server, name: str, **labels: str) -> float | None:
    for sample in pushed_samples(pushgateway):
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("drift")


@pytest.fixture(scope="module")
def repository(work_dir: Path) -> Path:
    return build_colour_repository(work_dir / "models")


@pytest.fixture(scope="module")
def log_prefix() -> Iterator[str]:
    """Key prefix of the classifier's own prediction log."""
    with shared_redis_prefix("drift-log") as key_prefix:
        yield key_prefix


@pytest.fixture(scope="module")
def log_key(log_prefix: str) -> str:
    return prediction_log_key(log_prefix, "classifier", COLOUR_MODEL)


@pytest.fixture(scope="module")
def classifier(repository: Path, work_dir: Path, log_prefix: str) -> Iterator[Server]:
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(repository),
        "VS_CLASSIFIER_INTRA_OP_THREADS": "1",
        "VS_CLASSIFIER_REDIS_URL": SHARED_REDIS_URL,
        "VS_CLASSIFIER_REDIS_KEY_PREFIX": log_prefix,
    }
    with running_server(APP, env, work_dir) as server:
        yield server


@pytest.fixture(scope="module")
def reference(repository: Path) -> ReferenceProfile:
    """Profile other crops of the same photos, as the exporter profiles the validation split."""
    version_dir = repository / COLOUR_MODEL / "1"
    images = ReferenceImages(
        files=[png_bytes(image) for image in photo_crops(REFERENCE_IMAGES, 1)],
        source="random crops of scikit-image photos",
    )
    write_reference_profile(version_dir, colour_metadata(), images)
    return read_reference(version_dir)


@pytest.fixture(scope="module")
def live_images() -> list[Image.Image]:
    return photo_crops(LIVE_IMAGES, 2)


@pytest.fixture(scope="module")
def live_records(
    classifier: Server, log_key: str, live_images: list[Image.Image]
) -> list[PredictionRecord]:
    return served_records(classifier, log_key, live_images)


@pytest.fixture
def prefix() -> Iterator[str]:
    with shared_redis_prefix("drift") as key_prefix:
        yield key_prefix


def monitor_settings(
    prefix: str, repository: Path, report_dir: Path, **options: Any
) -> MonitorSettings:
    return MonitorSettings(
        redis_url=SHARED_REDIS_URL,
        redis_key_prefix=prefix,
        model_repository=repository,
        services=["classifier"],
        min_samples=MIN_SAMPLES,
        report_dir=report_dir,
        **options,
    )


def test_in_distribution_has_no_drift(
    reference: ReferenceProfile,
    live_records: list[PredictionRecord],
    repository: Path,
    prefix: str,
    tmp_path: Path,
) -> None:
    write_stream(prefix, live_records)
    run = run_once(monitor_settings(prefix, repository, tmp_path))
    result = only_version(run)
    assert result.verdict == "no drift", result.message
    assert result.samples == LIVE_IMAGES
    scored = {feature.feature for feature in result.features if feature.scores}
    assert scored == {*INPUT_FEATURES, "confidence"}
    assert result.labels is not None
    assert result.labels.scores[0].statistic == "js"
    assert run.errors == []


@pytest.mark.parametrize(
    ("change", "expected", "unchanged"),
    [("darkened", "brightness", "aspect"), ("blurred", "sharpness", "aspect"),
     ("rotated", "aspect", "brightness")],
)  # fmt: skip
def test_changed_images_drift(
    reference: ReferenceProfile,
    classifier: Server,
    log_key: str,
    live_images: list[Image.Image],
    repository: Path,
    prefix: str,
    tmp_path: Path,
    change: str,
    expected: str,
    unchanged: str,
) -> None:
    changed = [TRANSFORMS[change](image) for image in live_images]
    write_stream(prefix, served_records(classifier, log_key, changed))
    result = only_version(run_once(monitor_settings(prefix, repository, tmp_path)))
    assert result.verdict == "drift"
    assert expected in result.drifting_features
    assert unchanged not in result.drifting_features
    scores = {s.statistic: s for f in result.features if f.feature == expected for s in f.scores}
    assert scores["psi"].value > scores["psi"].threshold
    assert scores["ks"].value > scores["ks"].threshold


def test_malformed_entries_are_skipped(
    reference: ReferenceProfile,
    live_records: list[PredictionRecord],
    repository: Path,
    prefix: str,
    tmp_path: Path,
) -> None:
    key = write_stream(prefix, live_records)
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    try:
        client.xadd(key, {"task": "classification", "labels": "["})
        client.xadd(key, {"note": "not a prediction record"})
    finally:
        client.close()
    run = run_once(monitor_settings(prefix, repository, tmp_path))
    assert only_version(run).samples == LIVE_IMAGES
    assert [stream.malformed for stream in run.streams] == [2]
    assert report_json(run)["streams"][0]["malformed"] == 2


def test_window_caps_records(
    reference: ReferenceProfile,
    live_records: list[PredictionRecord],
    repository: Path,
    prefix: str,
    tmp_path: Path,
) -> None:
    write_stream(prefix, live_records)
    settings = monitor_settings(prefix, repository, tmp_path, window_max_records=120)
    assert only_version(run_once(settings)).samples == 120


def test_too_few_records_give_no_score(
    reference: ReferenceProfile,
    live_records: list[PredictionRecord],
    repository: Path,
    prefix: str,
    tmp_path: Path,
) -> None:
    write_stream(prefix, live_records[:20])
    run = run_once(monitor_settings(prefix, repository, tmp_path))
    result = only_version(run)
    assert result.verdict == "not enough data"
    assert result.features == []
    assert "20 records, need at least 100" in result.message
    assert report_json(run)["versions"][0]["verdict"] == "not enough data"


def test_missing_reference_is_reported(
    live_records: list[PredictionRecord], prefix: str, tmp_path: Path
) -> None:
    write_stream(prefix, live_records)
    empty_repository = tmp_path / "models"
    empty_repository.mkdir()
    run = run_once(monitor_settings(prefix, empty_repository, tmp_path / "report"))
    result = only_version(run)
    assert result.verdict == "missing reference"
    version_dir = empty_repository / COLOUR_MODEL / "1"
    assert f"no reference.json in {version_dir}" in result.message
    assert result.reference_path == str(version_dir / "reference.json")
    assert report_json(run)["versions"][0]["verdict"] == "missing reference"


def test_reports_parse_and_are_self_contained(
    reference: ReferenceProfile,
    live_records: list[PredictionRecord],
    repository: Path,
    prefix: str,
    tmp_path: Path,
) -> None:
    write_stream(prefix, live_records)
    run = run_once(monitor_settings(prefix, repository, tmp_path))
    assert run.report_paths == [tmp_path / JSON_REPORT, tmp_path / HTML_REPORT]
    report = report_json(run)
    version = report["versions"][0]
    brightness = next(f for f in version["features"] if f["feature"] == "brightness")
    assert set(brightness["scores"]) == {"psi", "ks"}
    assert 0.0 <= brightness["scores"]["ks"]["p_value"] <= 1.0
    assert sum(brightness["histogram"]["reference"]) == pytest.approx(1.0, abs=1e-3)
    assert sum(brightness["histogram"]["live"]) == pytest.approx(1.0, abs=1e-3)
    assert version["predicted_class"]["scores"]["js"]["threshold"] == 0.1

    page = (tmp_path / HTML_REPORT).read_text()
    assert page.count("<svg") == len(version["features"]) + 1
    for external in ("<script", "<link", " src=", "url("):
        assert external not in page
    assert not list(tmp_path.glob(".*.tmp")), "a temporary report file was left behind"
    for path in run.report_paths:
        assert path.stat().st_mode & 0o777 == 0o644, path


@needs_prometheus
def test_service_stream_drift_reaches_pushgateway(
    reference: ReferenceProfile,
    classifier: Server,
    log_prefix: str,
    log_key: str,
    live_images: list[Image.Image],
    live_records: list[PredictionRecord],
    repository: Path,
    tmp_path: Path,
) -> None:
    # The job reads the classifier's own stream here, whose newest records
    # are the darkened crops sent now.
    served_records(classifier, log_key, [TRANSFORMS["darkened"](i) for i in live_images])
    write_stream(log_prefix, live_records[:20], model="colours-small")
    with running_pushgateway(tmp_path) as pushgateway:
        settings = monitor_settings(
            log_prefix,
            repository,
            tmp_path,
            pushgateway_url=pushgateway.url,
            window_max_records=LIVE_IMAGES,
        )
        run = run_once(settings)
        assert run.errors == []

        colours = {"job": "visionserve_drift", "service": "classifier", "model": COLOUR_MODEL}
        version = {**colours, "version": "1"}
        assert pushed_value(pushgateway, "visionserve_drift_detected", **version) == 1.0
        assert pushed_value(pushgateway, "visionserve_drift_samples", **version) == LIVE_IMAGES
        last_run = pushed_value(
            pushgateway, "visionserve_drift_last_run_timestamp_seconds", **version
        )
        assert last_run == pytest.approx(run.started_at)
        psi = pushed_value(
            pushgateway, "visionserve_drift_score", **version, feature="brightness", statistic="psi"
        )
        assert psi is not None
        assert psi > 0.2
        js = pushed_value(
            pushgateway, "visionserve_drift_score", **version, feature="predicted_class"
        )
        assert js is not None
        assert pushed_value(pushgateway, "visionserve_drift_threshold", statistic="psi") == 0.2
        assert pushed_value(pushgateway, "visionserve_drift_threshold", statistic="ks") == 0.2
        assert pushed_value(pushgateway, "visionserve_drift_threshold", statistic="js") == 0.1

        # Missing reference and too few records: samples, but no score.
        small = {**version, "model": "colours-small"}
        assert pushed_value(pushgateway, "visionserve_drift_samples", **small) == 20
        assert pushed_value(pushgateway, "visionserve_drift_detected", **small) == 0.0
        assert pushed_value(pushgateway, "visionserve_drift_score", **small) is None

        # A later run that reads only the other model replaces only that model's group.
        with shared_redis_prefix("drift-other") as other_prefix:
            write_stream(other_prefix, live_records[:30], model="colours-small")
            rerun = monitor_settings(
                other_prefix, repository, tmp_path, pushgateway_url=pushgateway.url
            )
            run_once(rerun)
        assert pushed_value(pushgateway, "visionserve_drift_samples", **small) == 30
        assert pushed_value(pushgateway, "visionserve_drift_detected", **version) == 1.0


def run_cli(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitoring.drift", *arguments],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_rejects_invalid_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VS_MONITOR_JS_THRESHOLD", "2")
    assert drift_cli.main(["--once"]) == 2
    assert "VS_MONITOR_JS_THRESHOLD" in capsys.readouterr().err


def test_cli_once_survives_unreachable_services(tmp_path: Path) -> None:
    closed_port = free_port()
    env = {
        "VS_MONITOR_REDIS_URL": f"redis://127.0.0.1:{closed_port}/0",
        "VS_MONITOR_PUSHGATEWAY_URL": f"http://127.0.0.1:{free_port()}",
        "VS_MONITOR_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        "VS_MONITOR_REPORT_DIR": str(tmp_path),
    }
    completed = run_cli(env, "--once")
    assert completed.returncode == 0, completed.stderr
    report = json.loads((tmp_path / JSON_REPORT).read_text())
    assert report["bottlenecks"]["note"].startswith("failed: query")
    errors = report["errors"]
    assert any("reading the prediction log failed" in error for error in errors)
    assert any("pushing the drift thresholds failed" in error for error in errors)
    assert "reading the prediction log failed" in completed.stderr


def test_loop_keeps_running_without_redis(tmp_path: Path) -> None:
    env = {
        "VS_MONITOR_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "VS_MONITOR_REPORT_DIR": str(tmp_path),
    }
    log_path = tmp_path / "loop.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "monitoring.drift", "--loop", "--interval", "0.2"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while log_path.read_text().count('"drift run finished"') < 2:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
    assert returncode == 0
    log = log_path.read_text()
    assert log.count('"reading the prediction log failed"') >= 2
    assert '"drift loop stopped"' in log


@needs_prometheus
def test_bottleneck_section_names_stage(
    classifier: Server,
    log_key: str,
    live_images: list[Image.Image],
    prefix: str,
    repository: Path,
    tmp_path: Path,
) -> None:
    target = classifier.url.removeprefix("http://")
    with running_prometheus("classifier", target, tmp_path) as prometheus:
        rate = 'sum(rate(visionserve_stage_duration_seconds_count{service="classifier"}[1m]))'
        deadline = time.monotonic() + 60
        # Prometheus must scrape before and after the traffic to see a rate.
        while not query(prometheus, 'up{job="classifier"} == 1'):
            assert time.monotonic() < deadline, prometheus.log()
            time.sleep(0.5)
        while not query(prometheus, f"{rate} > 0"):
            served_records(classifier, log_key, live_images[:BATCH_IMAGES])
            assert time.monotonic() < deadline, prometheus.log()
            time.sleep(1.0)

        settings = monitor_settings(
            prefix, repository, tmp_path, prometheus_url=prometheus.url, bottleneck_window="1m"
        )
        run = run_once(settings)
    assert run.errors == []
    [bottleneck] = report_json(run)["bottlenecks"]["models"]
    assert (bottleneck["service"], bottleneck["model"]) == ("classifier", COLOUR_MODEL)
    assert bottleneck["dominant_stage"] in STAGES
    assert {stage["stage"] for stage in bottleneck["stages"]} <= STAGES
    assert sum(stage["share"] for stage in bottleneck["stages"]) == pytest.approx(1.0)
    assert bottleneck["stages"][0]["stage"] == bottleneck["dominant_stage"]
    assert "Dominant stage" in (tmp_path / HTML_REPORT).read_text()


def test_bottleneck_section_skipped_without_prometheus(prefix: str, tmp_path: Path) -> None:
    run = run_once(monitor_settings(prefix, tmp_path, tmp_path))
    bottlenecks = report_json(run)["bottlenecks"]
    assert bottlenecks["models"] == []
    assert "VS_MONITOR_PROMETHEUS_URL is not set" in bottlenecks["note"]


def query(prometheus: Server, expression: str) -> list[Any]:
    response = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": expression}, timeout=10)
    result: list[Any] = response.json()["data"]["result"]
    return result
