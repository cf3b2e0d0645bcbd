"""docker-compose.yml run without Docker: its commands, environment and health checks, for real.

The services start as local processes (tests/compose_stack.py) with the
values of .env.example and one API key. The model volume is filled first
with the small colour models under the default model names, so the init
steps must find them and skip training, as they do on a second
`docker compose up`. Then an image goes through the gateway to each model
service.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from PIL import Image

from services.common.prediction_record import prediction_log_key
from services.common.redis_keys import DEFAULT_KEY_PREFIX, live_version_key
from tests.compose_files import ENV_EXAMPLE, ComposeService, load_compose, read_env_file
from tests.compose_stack import ComposeRun
from tests.detection_models import (
    COLOUR_INPUT_SIZE,
    colour_detector,
    detection_metadata,
    write_detector_version,
)
from tests.detection_models import COLOUR_LABELS as DETECTOR_LABELS
from tests.images import RED, encode, solid_png
from tests.onnx_models import colour_classifier, colour_metadata, write_model_version

pytestmark = pytest.mark.slow

# The names that the init steps build, so that they find a version and skip it.
CLASSIFIER_MODELS = ("imagenet-efficientnet-lite0", "digits-cnn")
DETECTOR_MODEL = "digits-yolov8n"
# Every service except Grafana, which has no local stand-in. .ci/run installs
# the Debian programs that stand in for Prometheus and the Pushgateway.
REQUIRED_SERVICES = {
    "redis",
    "models-classifiers",
    "models-detector",
    "classifier",
    "detector",
    "gateway",
    "pushgateway",
    "prometheus",
    "monitor",
}
# Not in the compose file: gateways under test stop without the production
# drain period, so that the teardown does not wait for it.
TEST_ENV = {"VS_GATEWAY_SHUTDOWN_DRAIN_SECONDS": "0"}
GREY = (128, 128, 128)
# prometheus.yml scrapes every 15 s, and the first scrape of a target comes
# at a random offset within that interval.
SCRAPE_TIMEOUT_SECONDS = 60
# The monitor's first check starts right away, and reads little with these few requests.
REPORT_TIMEOUT_SECONDS = 60
REDIS_WRITE_TIMEOUT_SECONDS = 30


def fill_model_volume(models: Path) -> None:
    for name in CLASSIFIER_MODELS:
        write_model_version(models, colour_classifier(), colour_metadata(name=name))
    metadata = detection_metadata(DETECTOR_MODEL, DETECTOR_LABELS, COLOUR_INPUT_SIZE)
    write_detector_version(models, colour_detector(), metadata)


def version_folders(models: Path) -> dict[str, list[str]]:
    return {
        model.name: sorted(entry.name for entry in model.iterdir() if entry.is_dir())
        for model in sorted(models.iterdir())
        if model.is_dir()
    }


@pytest.fixture(scope="module")
def api_key() -> str:
    return "vs_" + secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, api_key: str) -> Iterator[ComposeRun]:
    work_dir = tmp_path_factory.mktemp("compose")
    entry = {"id": "compose-test", "sha256": hashlib.sha256(api_key.encode()).hexdigest()}
    variables = {**read_env_file(ENV_EXAMPLE), "GATEWAY_API_KEYS": json.dumps([entry])}
    compose = load_compose(variables)
    services = {name: ComposeService(name, spec) for name, spec in compose["services"].items()}
    run = ComposeRun(services, work_dir, extra_env=TEST_ENV)
    fill_model_volume(run.mounts(services["classifier"])["/models"])
    try:
        run.start()
        run.wait_healthy("gateway", timeout=300)
        yield run
    finally:
        run.stop()


def test_required_services_started(stack: ComposeRun) -> None:
    missing = REQUIRED_SERVICES - set(stack.servers)
    assert not missing, f"not started: {sorted(missing)}; reasons: {stack.skipped}"
    assert set(stack.skipped) == {"grafana"}, stack.skipped


def test_init_steps_skip_existing_models(stack: ComposeRun) -> None:
    models = stack.mounts(stack.services["classifier"])["/models"]
    assert version_folders(models) == {
        "digits-cnn": ["1"],
        "digits-yolov8n": ["1"],
        "imagenet-efficientnet-lite0": ["1"],
    }
    classifiers_log = stack.servers["models-classifiers"].log()
    for name in CLASSIFIER_MODELS:
        assert f"skipping {name}" in classifiers_log, classifiers_log
    detector_log = stack.servers["models-detector"].log()
    assert DETECTOR_MODEL in detector_log, detector_log


def test_gateway_rejects_request_without_key(stack: ComposeRun) -> None:
    response = httpx.post(
        f"{stack.url('gateway')}/v1/classify",
        content=solid_png(RED),
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert response.status_code == 401, response.text


def test_classify_through_gateway(stack: ComposeRun, api_key: str) -> None:
    response = httpx.post(
        f"{stack.url('gateway')}/v1/classify",
        content=solid_png(RED),
        headers={"Content-Type": "image/png", "X-API-Key": api_key},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"] == "imagenet-efficientnet-lite0", body
    assert body["predictions"][0]["label"] == "red", body


def test_detect_through_gateway(stack: ComposeRun, api_key: str) -> None:
    image = Image.new("RGB", (128, 96), GREY)
    image.paste(RED, (16, 16, 48, 48))
    response = httpx.post(
        f"{stack.url('gateway')}/v1/detect",
        content=encode(image, "PNG"),
        params={"conf": 0.5},
        headers={"Content-Type": "image/png", "X-API-Key": api_key},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    labels = {box["label"] for box in response.json()["detections"]}
    assert labels == {"red"}, response.json()


def test_prometheus_scrapes_services(stack: ComposeRun) -> None:
    expected = {"gateway", "classifier", "detector", "pushgateway"}
    deadline = time.monotonic() + SCRAPE_TIMEOUT_SECONDS
    while True:
        response = httpx.get(f"{stack.url('prometheus')}/api/v1/query", params={"query": "up"})
        results = response.json()["data"]["result"]
        up = {result["metric"]["job"] for result in results if result["value"][1] == "1"}
        if up >= expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert up >= expected, results


def test_monitor_writes_report(stack: ComposeRun) -> None:
    monitor = stack.services["monitor"]
    reports = stack.mounts(monitor)[monitor.environment["VS_MONITOR_REPORT_DIR"]]
    deadline = time.monotonic() + REPORT_TIMEOUT_SECONDS
    while not any(reports.iterdir()) and time.monotonic() < deadline:
        time.sleep(1)
    assert any(reports.iterdir()), stack.servers["monitor"].log()


def test_model_services_publish_to_redis(stack: ComposeRun) -> None:
    client = redis.Redis(port=stack.local_port("redis"), socket_timeout=5)
    expected = set()
    for service, model in (("classifier", CLASSIFIER_MODELS[0]), ("detector", DETECTOR_MODEL)):
        expected.add(live_version_key(DEFAULT_KEY_PREFIX, service, model))
        expected.add(prediction_log_key(DEFAULT_KEY_PREFIX, service, model))
    # The prediction log is written by a background task, shortly after the response.
    deadline = time.monotonic() + REDIS_WRITE_TIMEOUT_SECONDS
    try:
        while True:
            keys = {key.decode() for key in client.scan_iter(match=f"{DEFAULT_KEY_PREFIX}:*")}
            if expected <= keys or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        client.close()
    assert expected <= keys, sorted(keys)


def test_services_still_running(stack: ComposeRun) -> None:
    long_running = [name for name in stack.servers if not name.startswith("models-")]
    for name in long_running:
        process = stack.servers[name].process
        assert process is not None
        assert process.poll() is None, f"{name} exited; log:\n{stack.servers[name].log()}"
