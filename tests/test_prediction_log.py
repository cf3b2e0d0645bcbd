"""The prediction log: real classifier and detector processes appending to Redis streams.

The services write to the shared Redis below a key prefix of this module,
except the outage test, which stops a private redis-server of its own. Each
request carries its own X-Request-ID, so a test finds its records among
those of the other tests in the same stream.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from services.classifier.settings import ClassifierSettings
from services.common.imaging import decode_image
from services.common.input_stats import measure_input
from services.common.prediction_record import PredictionRecord, prediction_log_key
from services.common.settings import InvalidSettingsError, load_settings
from tests.detection_models import COLOUR_DETECTOR, build_colour_detector_repository
from tests.images import BLUE, GREEN, RED, encode, noise_image, solid_png
from tests.inference_protocol_client import image_input, open_client
from tests.launched_servers import log_records, records_with
from tests.onnx_models import COLOUR_MODEL, build_colour_repository
from tests.redis_servers import SHARED_REDIS_URL, private_redis, shared_redis_prefix
from tests.reference_checks import model_service_env
from tests.scraping import metric
from tests.servers import Server, running_server

pytestmark = pytest.mark.slow

CLASSIFIER_APP = "services.classifier.app:create_app"
DETECTOR_APP = "services.detector.app:create_app"
RECORDS_METRIC = "visionserve_prediction_log_records_total"
# Maximum seconds to wait for the background writer to reach Redis.
WRITE_TIMEOUT = 30.0
GREY = (114, 114, 114)
OUTAGE_WARNING_START = "dropped "


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prediction-log")


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    with shared_redis_prefix("predictions") as value:
        yield value


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    try:
        yield client
    finally:
        client.close()


def logging_env(
    service: str, repository: Path, redis_url: str, prefix: str, **settings: str
) -> dict[str, str]:
    """Return the environment of a model service that writes the prediction log."""
    return model_service_env(
        service, repository, REDIS_URL=redis_url, REDIS_KEY_PREFIX=prefix, **settings
    )


@pytest.fixture(scope="module")
def classifier(
    tmp_path_factory: pytest.TempPathFactory, log_dir: Path, prefix: str
) -> Iterator[Server]:
    repository = build_colour_repository(tmp_path_factory.mktemp("classifiers"))
    env = logging_env("classifier", repository, SHARED_REDIS_URL, prefix)
    with running_server(CLASSIFIER_APP, env, log_dir) as server:
        yield server


@pytest.fixture(scope="module")
def detector(
    tmp_path_factory: pytest.TempPathFactory, log_dir: Path, prefix: str
) -> Iterator[Server]:
    repository = build_colour_detector_repository(tmp_path_factory.mktemp("detectors"))
    env = logging_env("detector", repository, SHARED_REDIS_URL, prefix)
    with running_server(DETECTOR_APP, env, log_dir) as server:
        yield server


def new_request_id() -> str:
    return f"predlog-{uuid.uuid4().hex}"


def tinted_noise(color: tuple[int, int, int], seed: int) -> bytes:
    """A PNG of noise blended into a solid colour, so pixel statistics differ per seed."""
    base = Image.new("RGB", (96, 64), color)
    return encode(Image.blend(base, noise_image((96, 64), seed), 0.3), "PNG")


def squares_scene(offset: int) -> bytes:
    """A grey PNG with a red and a green square, the red one moved by `offset` pixels."""
    image = Image.new("RGB", (220, 140), GREY)
    image.paste(RED, (20 + offset, 30, 64 + offset, 74))
    image.paste(GREEN, (130, 60, 190, 120))
    return encode(image, "PNG")


def post_image(server: Server, path: str, image: bytes, request_id: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}",
        content=image,
        headers={"Content-Type": "image/png", "X-Request-ID": request_id},
        timeout=60.0,
    )


def stream_records(client: redis.Redis, key: str) -> list[PredictionRecord]:
    return [PredictionRecord.from_fields(fields) for _, fields in client.xrange(key)]


def wait_for_records(
    client: redis.Redis, key: str, request_ids: set[str], expected: int
) -> list[PredictionRecord]:
    """Poll the stream until it contains `expected` records of `request_ids`, and return them."""
    deadline = time.monotonic() + WRITE_TIMEOUT
    while True:
        found = [r for r in stream_records(client, key) if r.request_id in request_ids]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def wait_for_metric(server: Server, minimum: float, **labels: str) -> float:
    """Poll the records counter until it reaches `minimum`, and return its last value."""
    deadline = time.monotonic() + WRITE_TIMEOUT
    while True:
        value = metric(server, RECORDS_METRIC, **labels)
        if value >= minimum or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def expected_stats(image: bytes) -> dict[str, float]:
    return measure_input(decode_image(image, max_pixels=50_000_000)).as_dict()


def test_classify_appends_one_record_per_request(
    classifier: Server, shared_redis: redis.Redis, prefix: str
) -> None:
    key = prediction_log_key(prefix, "classifier", COLOUR_MODEL)
    written_before = metric(classifier, RECORDS_METRIC, model=COLOUR_MODEL, result="written")
    images = {new_request_id(): tinted_noise(color, seed) for seed, color in
              enumerate([RED, GREEN, BLUE, RED, GREEN])}  # fmt: skip
    responses = {}
    for request_id, image in images.items():
        response = post_image(classifier, "/v1/classify", image, request_id)
        assert response.status_code == 200, response.text
        assert response.headers["X-Request-ID"] == request_id
        responses[request_id] = response.json()

    records = wait_for_records(shared_redis, key, set(images), len(images))

    assert sorted(record.request_id for record in records) == sorted(images)
    for record in records:
        top = responses[record.request_id]["predictions"][0]
        assert record.service == "classifier"
        assert record.model == COLOUR_MODEL
        assert record.version == 1
        assert record.task == "classification"
        assert record.labels == (top["label"],)
        assert record.scores[0] == pytest.approx(top["probability"], abs=1e-6)
        assert record.inputs.as_dict() == pytest.approx(expected_stats(images[record.request_id]))
        assert record.inputs.width == 96
        assert record.inputs.height == 64
        assert 0.0 < record.inputs.brightness < 1.0
        assert record.inputs.sharpness > 0.0
    written = wait_for_metric(
        classifier, written_before + len(images), model=COLOUR_MODEL, result="written"
    )
    assert written >= written_before + len(images)


def test_classify_batch_appends_record_per_image(
    classifier: Server, shared_redis: redis.Redis, prefix: str
) -> None:
    key = prediction_log_key(prefix, "classifier", COLOUR_MODEL)
    request_id = new_request_id()
    images = [solid_png(RED), solid_png(BLUE), b"not an image", solid_png(GREEN)]
    files = [("file", (f"image-{index}.png", data, "image/png")) for index, data in
             enumerate(images)]  # fmt: skip

    response = httpx.post(
        f"{classifier.url}/v1/classify/batch",
        files=files,
        headers={"X-Request-ID": request_id},
        timeout=60.0,
    )
    assert response.status_code == 200, response.text
    records = wait_for_records(shared_redis, key, {request_id}, 3)

    # The undecodable image gets an error entry and no record.
    assert len(records) == 3
    assert sorted(record.labels[0] for record in records) == ["blue", "green", "red"]
    assert all(record.inputs.saturation == pytest.approx(1.0) for record in records)


def test_v2_image_input_appends_record(
    classifier: Server, shared_redis: redis.Redis, prefix: str
) -> None:
    key = prediction_log_key(prefix, "classifier", COLOUR_MODEL)
    request_id = new_request_id()
    image = tinted_noise(BLUE, seed=40)

    with open_client(classifier) as client:
        result = client.infer(
            COLOUR_MODEL, [image_input([image])], headers={"X-Request-ID": request_id}
        )
    records = wait_for_records(shared_redis, key, {request_id}, 1)

    probabilities = result.as_numpy("probabilities")[0]
    assert len(records) == 1
    assert records[0].labels == ("blue",)
    assert records[0].scores[0] == pytest.approx(float(np.max(probabilities)), abs=1e-6)
    assert records[0].inputs.as_dict() == pytest.approx(expected_stats(image))


def test_detect_record_lists_every_box(
    detector: Server, shared_redis: redis.Redis, prefix: str
) -> None:
    key = prediction_log_key(prefix, "detector", COLOUR_DETECTOR)
    request_ids = [new_request_id() for _ in range(3)]
    responses = {}
    for offset, request_id in enumerate(request_ids):
        image = squares_scene(offset * 10)
        response = post_image(detector, "/v1/detect", image, request_id)
        assert response.status_code == 200, response.text
        responses[request_id] = (response.json(), image)

    records = wait_for_records(shared_redis, key, set(request_ids), len(request_ids))

    assert len(records) == len(request_ids)
    for record in records:
        body, image = responses[record.request_id]
        detections = body["detections"]
        assert len(detections) >= 2
        assert record.task == "detection"
        assert record.model == COLOUR_DETECTOR
        assert record.box_count == len(detections)
        assert list(record.labels) == [item["label"] for item in detections]
        assert list(record.scores) == pytest.approx([item["score"] for item in detections])
        assert record.inputs.as_dict() == pytest.approx(expected_stats(image))


def test_redis_outage_drops_records_not_requests(
    tmp_path_factory: pytest.TempPathFactory, log_dir: Path
) -> None:
    repository = build_colour_repository(tmp_path_factory.mktemp("outage-models"))
    with private_redis(log_dir) as server:
        env = logging_env("classifier", repository, server.url, "vs-test-outage")
        with running_server(CLASSIFIER_APP, env, log_dir) as classifier:
            client = redis.Redis.from_url(server.url)
            key = prediction_log_key("vs-test-outage", "classifier", COLOUR_MODEL)
            before = new_request_id()
            assert post_image(classifier, "/v1/classify", solid_png(RED), before).status_code == 200
            assert len(wait_for_records(client, key, {before}, 1)) == 1

            server.stop()
            during = [new_request_id() for _ in range(6)]
            statuses = [
                post_image(classifier, "/v1/classify", tinted_noise(RED, seed), request_id)
                for seed, request_id in enumerate(during)
            ]
            dropped = wait_for_metric(classifier, 1, model=COLOUR_MODEL, result="dropped")

            server.start()
            after = new_request_id()
            assert post_image(classifier, "/v1/classify", solid_png(BLUE), after).status_code == 200
            records_after = wait_for_records(client, key, {after}, 1)
            client.close()
            warnings = [
                record
                for record in log_records(classifier)
                if record.get("message", "").startswith(OUTAGE_WARNING_START)
            ]
            recovered = records_with(classifier, "writing the prediction log to Redis works again")

    assert [response.status_code for response in statuses] == [200] * len(during)
    assert dropped >= 1
    assert len(records_after) == 1
    # One warning for the whole outage, not one per record.
    assert len(warnings) == 1
    assert warnings[0]["level"] == "WARNING"
    assert len(recovered) == 1


def test_max_length_trims_stream(
    tmp_path_factory: pytest.TempPathFactory,
    log_dir: Path,
    shared_redis: redis.Redis,
    prefix: str,
) -> None:
    repository = build_colour_repository(tmp_path_factory.mktemp("trim-models"))
    trim_prefix = f"{prefix}-trim"
    env = logging_env(
        "classifier", repository, SHARED_REDIS_URL, trim_prefix, PREDICTION_LOG_MAX_LENGTH="20"
    )
    key = prediction_log_key(trim_prefix, "classifier", COLOUR_MODEL)
    sent = 400
    try:
        with running_server(CLASSIFIER_APP, env, log_dir) as classifier:
            with httpx.Client(base_url=classifier.url, timeout=60.0) as client:
                for index in range(sent):
                    response = client.post(
                        "/v1/classify",
                        content=solid_png((255 - index % 200, 0, 0)),
                        headers={"Content-Type": "image/png"},
                    )
                    assert response.status_code == 200
            written = wait_for_metric(classifier, sent, model=COLOUR_MODEL, result="written")
        length = shared_redis.xlen(key)
    finally:
        shared_redis.delete(key)

    assert written == sent
    # MAXLEN ~ trims whole stream nodes (100 entries each by default), never below 20.
    assert 20 <= length < sent


def test_log_setting_follows_redis_url() -> None:
    assert ClassifierSettings(redis_url="").prediction_log_active is False
    assert ClassifierSettings(redis_url=SHARED_REDIS_URL).prediction_log_active is True
    assert (
        ClassifierSettings(
            redis_url=SHARED_REDIS_URL, prediction_log_enabled=False
        ).prediction_log_active
        is False
    )


def test_log_enabled_without_redis_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VS_CLASSIFIER_REDIS_URL", "")
    monkeypatch.setenv("VS_CLASSIFIER_PREDICTION_LOG_ENABLED", "true")

    with pytest.raises(InvalidSettingsError, match="prediction_log_enabled is true"):
        load_settings(ClassifierSettings)
