"""Rate limits of the gateway, counted in the shared Redis under a key prefix per test.

Gateways and the classifier run as real uvicorn processes. Until the auth
layer identifies callers, every request comes from the anonymous client of
the "default" tier. So other tiers and client keys are tested on the limiter
itself, against the same Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from services.common.errors import TooManyRequests
from services.gateway.rate_limits import RateLimiter
from services.gateway.redis_metrics import RedisMetrics
from services.gateway.redis_state import RedisState
from services.gateway.settings import GatewaySettings
from tests.images import RED, solid_png
from tests.onnx_models import build_colour_repository
from tests.redis_servers import SHARED_REDIS_URL, shared_redis_prefix
from tests.scraping import metric
from tests.servers import GATEWAY_OPEN_ACCESS_ENV, Server, running_server

pytestmark = pytest.mark.slow

CLASSIFIER_APP = "services.classifier.app:create_app"
GATEWAY_APP = "services.gateway.app:create_app"
# Long windows, so that no request is refilled while a test runs.
HOUR = 3600
RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rate-limit-logs")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[Server]:
    repository = build_colour_repository(tmp_path_factory.mktemp("models"))
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(repository), "VS_CLASSIFIER_INTRA_OP_THREADS": "1"}
    with running_server(CLASSIFIER_APP, env, log_dir) as server:
        yield server


@pytest.fixture
def prefix() -> Iterator[str]:
    with shared_redis_prefix("rate-limits") as value:
        yield value


def tiers(**limits: int) -> str:
    return json.dumps(
        {tier: {"requests": count, "per_seconds": HOUR} for tier, count in limits.items()}
    )


@contextmanager
def gateway(classifier: Server, log_dir: Path, prefix: str, rate_limits: str) -> Iterator[Server]:
    env = {
        **GATEWAY_OPEN_ACCESS_ENV,
        "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
        "VS_GATEWAY_DETECTOR_URL": "",
        "VS_GATEWAY_REDIS_URL": SHARED_REDIS_URL,
        "VS_GATEWAY_REDIS_KEY_PREFIX": prefix,
        "VS_GATEWAY_RATE_LIMITS": rate_limits,
    }
    with running_server(GATEWAY_APP, env, log_dir) as server:
        yield server


def classify(server: Server, path: str = "/v1/classify") -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}",
        content=solid_png(RED),
        headers={"Content-Type": "image/png"},
        timeout=30.0,
    )


def test_request_over_the_limit_gets_429(classifier: Server, log_dir: Path, prefix: str) -> None:
    with gateway(classifier, log_dir, prefix, tiers(default=3)) as server:
        allowed = [classify(server) for _ in range(3)]
        rejected = classify(server)
        rejections = metric(server, "visionserve_rate_limit_rejections_total", tier="default")

    assert [response.status_code for response in allowed] == [200, 200, 200]
    assert [response.headers["RateLimit-Limit"] for response in allowed] == ["3", "3", "3"]
    assert [response.headers["RateLimit-Remaining"] for response in allowed] == ["2", "1", "0"]
    assert all(int(response.headers["RateLimit-Reset"]) > 0 for response in allowed)
    assert all("Retry-After" not in response.headers for response in allowed)
    assert rejected.status_code == 429
    assert rejected.json()["error"]["code"] == "rate_limited"
    assert "3 requests per 3600 s" in rejected.json()["error"]["message"]
    assert rejected.headers["RateLimit-Limit"] == "3"
    assert rejected.headers["RateLimit-Remaining"] == "0"
    # One request comes back every 1200 s, the window divided by the limit.
    assert 1 <= int(rejected.headers["Retry-After"]) <= 1200
    assert int(rejected.headers["RateLimit-Reset"]) > 0
    assert rejections == 1


def test_limit_covers_every_image_route(classifier: Server, log_dir: Path, prefix: str) -> None:
    image_routes = ["/v1/classify", "/v1/detect", "/v1/detect/render", "/v1/analyze"]
    with gateway(classifier, log_dir, prefix, tiers(default=4)) as server:
        responses = [classify(server, path) for path in image_routes]
        rejected = classify(server, "/v1/detect")
        other_routes = [httpx.get(f"{server.url}{path}") for path in ("/healthz", "/v1/models")]

    # This gateway has no detector, so the detection routes return 503 after counting.
    assert [response.status_code for response in responses] == [200, 503, 503, 503]
    assert [response.headers["RateLimit-Remaining"] for response in responses] == [
        "3",
        "2",
        "1",
        "0",
    ]
    assert rejected.status_code == 429
    assert [response.status_code for response in other_routes] == [200, 200]
    for response in other_routes:
        assert not any(name in response.headers for name in RATE_LIMIT_HEADERS)


def test_two_gateways_share_one_limit(classifier: Server, log_dir: Path, prefix: str) -> None:
    with (
        gateway(classifier, log_dir, prefix, tiers(default=5)) as first,
        gateway(classifier, log_dir, prefix, tiers(default=5)) as second,
    ):
        responses = [classify(server) for _ in range(5) for server in (first, second)]

    allowed = [response for response in responses if response.status_code == 200]
    rejected = [response for response in responses if response.status_code == 429]
    assert len(allowed) == 5
    assert len(rejected) == 5
    assert [response.headers["RateLimit-Remaining"] for response in allowed] == [
        "4", "3", "2", "1", "0"
    ]  # fmt: skip
    # The fifth request through each gateway: the limit ran out through both.
    assert responses[8].status_code == 429
    assert responses[9].status_code == 429


def test_default_tier_applies_to_unlisted_tiers(
    classifier: Server, log_dir: Path, prefix: str
) -> None:
    with gateway(classifier, log_dir, prefix, tiers(default=2, standard=50)) as server:
        statuses = [classify(server).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


def test_clients_of_a_tier_without_limit_pass(
    classifier: Server, log_dir: Path, prefix: str
) -> None:
    with gateway(classifier, log_dir, prefix, tiers(standard=1)) as server:
        responses = [classify(server) for _ in range(3)]

    assert [response.status_code for response in responses] == [200, 200, 200]
    for response in responses:
        assert not any(name in response.headers for name in RATE_LIMIT_HEADERS)


@dataclass(frozen=True)
class Client:
    key_id: str
    tier: str


async def count_allowed(limiter: RateLimiter, client: Client, attempts: int) -> int:
    allowed = 0
    for _ in range(attempts):
        try:
            await limiter.check(client)
        except TooManyRequests:
            continue
        allowed += 1
    return allowed


def test_limiter_applies_tier_per_key(prefix: str) -> None:
    settings = GatewaySettings(
        redis_url=SHARED_REDIS_URL,
        redis_key_prefix=prefix,
        rate_limits=json.loads(tiers(default=2, standard=4)),
    )
    clients = [
        Client("key-a", "default"),
        Client("key-b", "standard"),
        Client("key-c", "standard"),
        Client("key-d", "unlisted-tier"),
    ]

    async def scenario() -> list[int]:
        state = RedisState(settings, RedisMetrics("gateway", CollectorRegistry()))
        await state.check()
        try:
            limiter = RateLimiter(state)
            return [await count_allowed(limiter, client, attempts=6) for client in clients]
        finally:
            await state.aclose()

    assert asyncio.run(scenario()) == [2, 4, 4, 2]


def test_rate_limit_per_key_tier(classifier: Server, log_dir: Path, prefix: str) -> None:
    keys = {
        "team-a": ("key-a-0123456789abcdef", "basic"),
        "team-b": ("key-b-0123456789abcdef", "pro"),
    }
    entries = [
        {"id": key_id, "sha256": hashlib.sha256(key.encode()).hexdigest(), "tier": tier}
        for key_id, (key, tier) in keys.items()
    ]
    env = {
        "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
        "VS_GATEWAY_DETECTOR_URL": "",
        "VS_GATEWAY_REDIS_URL": SHARED_REDIS_URL,
        "VS_GATEWAY_REDIS_KEY_PREFIX": prefix,
        "VS_GATEWAY_RATE_LIMITS": tiers(basic=2, pro=4),
        "VS_GATEWAY_API_KEYS": json.dumps(entries),
    }

    def statuses(key: str, count: int) -> list[int]:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/png"}
        return [
            httpx.post(
                f"{server.url}/v1/classify", content=solid_png(RED), headers=headers
            ).status_code
            for _ in range(count)
        ]

    with running_server(GATEWAY_APP, env, log_dir) as server:
        team_a = statuses(keys["team-a"][0], 3)
        team_b = statuses(keys["team-b"][0], 5)
        basic = metric(server, "visionserve_rate_limit_rejections_total", tier="basic")

    assert team_a == [200, 200, 429]
    assert team_b == [200, 200, 200, 200, 429]
    assert basic == 1
