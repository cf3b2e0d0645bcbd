"""The three services, a Pushgateway and Prometheus scraping them, and traffic for every metric.

The classifier serves the colour model of `tests.onnx_models` twice: as
`colours`, and as `colours-burst` with a batch queue of one request, so that a
burst of requests is rejected with 503 queue_full. The detector serves the
colour detector. The model services publish their live versions to the shared
Redis under a key prefix of the test's own, so that the gateway caches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from tests.detection_models import COLOUR_DETECTOR, build_colour_detector_repository
from tests.drift_runs import (
    run_drift_job,
    wait_for_drift_results,
    write_reference,
)
from tests.images import BLUE, GREEN, RED, encode, solid_png
from tests.onnx_models import (
    COLOUR_MODEL,
    build_colour_repository,
    colour_classifier,
    colour_metadata,
    write_model_version,
)
from tests.prometheus_servers import (
    Prometheus,
    finite_values,
    poll,
    running_prometheus,
    running_pushgateway,
)
from tests.redis_servers import SHARED_REDIS_URL, shared_redis_prefix
from tests.scraping import metric_total
from tests.servers import GATEWAY_OPEN_ACCESS_ENV, Server, running_server

CLASSIFIER_APP = "services.classifier.app:create_app"
DETECTOR_APP = "services.detector.app:create_app"
GATEWAY_APP = "services.gateway.app:create_app"
BURST_MODEL = "colours-burst"
ADMIN_TOKEN = "monitoring-test-admin-token-0123456789"
# A client key of the `basic` tier, which may send one request per hour.
LIMITED_KEY = "monitoring-test-limited-key-0123456789"
GREY = (114, 114, 114)
BURST_SIZE = 6


@dataclass
class MonitoredStack:
    services: dict[str, Server]
    pushgateway: Server
    prometheus: Prometheus
    classifier_repository: Path
    detector_repository: Path
    redis_key_prefix: str
    work_dir: Path


def model_service_env(service: str, repository: Path, prefix: str) -> dict[str, str]:
    variables = {
        "MODEL_REPOSITORY": str(repository),
        "INTRA_OP_THREADS": "1",
        "REDIS_URL": SHARED_REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "ADMIN_TOKEN": ADMIN_TOKEN,
    }
    return {f"VS_{service.upper()}_{name}": value for name, value in variables.items()}


def gateway_env(classifier: Server, detector: Server, prefix: str) -> dict[str, str]:
    api_keys = [
        {
            "id": "limited",
            "sha256": hashlib.sha256(LIMITED_KEY.encode()).hexdigest(),
            "tier": "basic",
        }
    ]
    return {
        **GATEWAY_OPEN_ACCESS_ENV,
        "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
        "VS_GATEWAY_DETECTOR_URL": detector.url,
        "VS_GATEWAY_REDIS_URL": SHARED_REDIS_URL,
        "VS_GATEWAY_REDIS_KEY_PREFIX": prefix,
        # Anonymous callers are in the `default` tier, which has no limit here.
        "VS_GATEWAY_RATE_LIMITS": json.dumps({"basic": {"requests": 1, "per_seconds": 3600}}),
        "VS_GATEWAY_API_KEYS": json.dumps(api_keys),
        # The queue_full burst must not open the circuit, which would reject the
        # requests of later tests and raise the circuit alert.
        "VS_GATEWAY_CIRCUIT_FAILURE_THRESHOLD": "1000",
        "VS_GATEWAY_CIRCUIT_FAILURE_RATIO": "1",
    }


@contextmanager
def monitored_stack(work_dir: Path) -> Iterator[MonitoredStack]:
    """Run the services, a Pushgateway and Prometheus until the block exits."""
    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True)
    classifier_repository = build_colour_repository(work_dir / "classifiers")
    write_model_version(
        classifier_repository, colour_classifier(), colour_metadata(name=BURST_MODEL)
    )
    detector_repository = build_colour_detector_repository(work_dir / "detectors")
    write_references(classifier_repository, detector_repository)

    with ExitStack() as stack:
        prefix = stack.enter_context(shared_redis_prefix("monitoring"))
        classifier_env = model_service_env("classifier", classifier_repository, prefix)
        # Requests to the burst model wait up to 500 ms for a batch, and only one may wait.
        classifier_env["VS_CLASSIFIER_MODEL_BATCHING"] = json.dumps(
            {BURST_MODEL: {"max_queue_size": 1, "max_queue_delay_ms": 500}}
        )
        classifier = stack.enter_context(running_server(CLASSIFIER_APP, classifier_env, log_dir))
        detector = stack.enter_context(
            running_server(
                DETECTOR_APP, model_service_env("detector", detector_repository, prefix), log_dir
            )
        )
        gateway = stack.enter_context(
            running_server(
                GATEWAY_APP, gateway_env(classifier, detector, prefix), log_dir, "/healthz"
            )
        )
        pushgateway = stack.enter_context(running_pushgateway(log_dir))
        services = {"gateway": gateway, "classifier": classifier, "detector": detector}
        targets = {name: f"127.0.0.1:{server.port}" for name, server in services.items()}
        targets["pushgateway"] = f"127.0.0.1:{pushgateway.port}"
        prometheus = stack.enter_context(running_prometheus(targets, work_dir / "prometheus"))
        yield MonitoredStack(
            services,
            pushgateway,
            prometheus,
            classifier_repository,
            detector_repository,
            prefix,
            work_dir,
        )


def colour_images() -> list[bytes]:
    """Return the images that the traffic sends to the colour model."""
    return [solid_png(colour) for colour in (RED, GREEN, BLUE)]


def write_references(classifier_repository: Path, detector_repository: Path) -> None:
    """Write reference profiles from the images of the traffic, so that they do not drift."""
    source = "the images that tests/monitored_stack.py sends"
    write_reference(classifier_repository / COLOUR_MODEL / "1", colour_images(), source)
    write_reference(classifier_repository / BURST_MODEL / "1", [solid_png(GREEN)], source)
    write_reference(detector_repository / COLOUR_DETECTOR / "1", [two_squares()], source)


def two_squares() -> bytes:
    image = Image.new("RGB", (200, 120), GREY)
    image.paste(RED, (20, 20, 60, 60))
    image.paste(BLUE, (120, 50, 180, 110))
    return encode(image, "PNG")


def post_image(
    client: httpx.Client,
    path: str,
    image: bytes,
    headers: dict[str, str] | None = None,
    **params: str,
) -> httpx.Response:
    return client.post(
        path, params=params, content=image, headers={"Content-Type": "image/png", **(headers or {})}
    )


def send_traffic(stack: MonitoredStack) -> None:
    """Send requests that leave a sample in every metric the dashboards and alerts read.

    Successful classifications and detections, with cache hits and client
    errors, go out twice with a scrape in between. A counter series appears
    at its first increment, and rate() counts only the increments after
    Prometheus' first sample of it. Then a 429, a successful and a failed
    reload, and a burst that overflows the burst model's queue, which also
    makes the gateway retry.
    """
    wait_until_scraped(stack)
    for _ in range(2):
        send_model_requests(stack.services["gateway"])
        wait_until_scraped(stack)

    with httpx.Client(base_url=stack.services["gateway"].url, timeout=60.0) as client:
        limited = {"Authorization": f"Bearer {LIMITED_KEY}"}
        statuses = [
            post_image(client, "/v1/classify", solid_png(RED), limited, model=COLOUR_MODEL)
            for _ in range(2)
        ]
    assert [response.status_code for response in statuses] == [200, 429]

    reload_classifier_twice(stack)
    overflow_burst_queue(stack)
    check_drift(stack)


def send_model_requests(gateway: Server) -> None:
    """Classify each colour twice and detect twice, so that the second of each is a cache hit."""
    with httpx.Client(base_url=gateway.url, timeout=60.0) as client:
        for _ in range(2):
            for image in colour_images():
                response = post_image(client, "/v1/classify", image, model=COLOUR_MODEL)
                assert response.status_code == 200, response.text
            response = post_image(client, "/v1/detect", two_squares())
            assert response.status_code == 200, response.text

        assert post_image(client, "/v1/classify", b"", model=COLOUR_MODEL).status_code == 400
        assert post_image(client, "/v1/detect", two_squares(), conf="3").status_code == 422


def wait_until_scraped(stack: MonitoredStack) -> None:
    """Wait until Prometheus has scraped each service's current count of image requests."""
    routes = {"gateway": "/v1/classify", "classifier": "/v1/classify", "detector": "/v1/detect"}
    for service, route in routes.items():
        expected = metric_total(stack.services[service], "visionserve_requests_total", route=route)
        expression = (
            f'sum(visionserve_requests_total{{job="{service}", route="{route}"}}) or vector(0)'
        )

        def scraped(expression: str = expression, expected: float = expected) -> bool | None:
            values = finite_values(stack.prometheus.query(expression))
            return True if values and values[0] >= expected else None

        poll(scraped, timeout=30.0, description=f"a scrape of {service} with {expected} requests")


def reload_classifier_twice(stack: MonitoredStack) -> None:
    """Reload a valid version 2 of the colour model, then reject a corrupt version 3."""
    classifier = stack.services["classifier"]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    reload_url = f"{classifier.url}/v1/models/{COLOUR_MODEL}/reload"

    version_dir = write_model_version(
        stack.classifier_repository, colour_classifier(), colour_metadata(version=2)
    )
    write_reference(version_dir, colour_images(), "the colour images of the traffic")
    response = httpx.post(reload_url, headers=admin, timeout=60.0)
    assert response.status_code == 200, response.text

    corrupt = write_model_version(
        stack.classifier_repository, colour_classifier(), colour_metadata(version=3)
    )
    (corrupt / "model.onnx").write_bytes(b"not an onnx graph")
    assert httpx.post(reload_url, headers=admin, timeout=60.0).status_code == 422


def overflow_burst_queue(stack: MonitoredStack) -> None:
    """Send bursts to the burst model until the classifier and the gateway saw queue_full."""
    targets = [stack.services["classifier"], stack.services["gateway"]]

    def one_burst() -> bool | None:
        with ThreadPoolExecutor(BURST_SIZE * len(targets)) as pool:
            list(
                pool.map(
                    lambda server: httpx.post(
                        f"{server.url}/v1/classify",
                        params={"model": BURST_MODEL},
                        content=solid_png(GREEN),
                        headers={"Content-Type": "image/png"},
                        timeout=60.0,
                    ),
                    targets * BURST_SIZE,
                )
            )
        classifier = stack.services["classifier"]
        gateway = stack.services["gateway"]
        rejected = metric_total(classifier, "visionserve_queue_rejected_total", model=BURST_MODEL)
        retried = metric_total(gateway, "visionserve_backend_retries_total", backend="classifier")
        return True if rejected > 0 and retried > 0 else None

    poll(one_burst, 30.0, "queue_full rejections and gateway retries", interval=0)


def check_drift(stack: MonitoredStack) -> None:
    """Run the drift job for each model service and wait until Prometheus has its results.

    The traffic leaves only a few records per model version, so a minimum of
    three samples lets the job compute scores from them.
    """
    repositories = {
        "classifier": (stack.classifier_repository, COLOUR_MODEL),
        "detector": (stack.detector_repository, COLOUR_DETECTOR),
    }
    for service, (repository, model) in repositories.items():
        started = run_drift_job(
            stack.prometheus,
            stack.pushgateway.url,
            stack.redis_key_prefix,
            service,
            repository,
            stack.work_dir / "drift-reports" / service,
            min_samples="3",
        )
        wait_for_drift_results(stack.prometheus, model, started)
