"""API keys, open access and the admin reload route of the gateway, on real processes.

The gateway runs as a uvicorn process in front of the real classifier and
detector, which serve the tiny colour models of `tests.onnx_models` and
`tests.detection_models`. The keys are made by the key tool, and only their
SHA-256 digests reach the gateway's environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.gateway.auth import key_digest
from services.gateway.keys import generate_key
from tests.detection_models import (
    COLOUR_DETECTOR,
    build_colour_detector_repository,
    colour_detector,
    detection_metadata,
    write_detector_version,
)
from tests.detection_models import COLOUR_INPUT_SIZE as DETECTOR_INPUT_SIZE
from tests.detection_models import COLOUR_LABELS as DETECTOR_LABELS
from tests.images import RED, solid_png
from tests.onnx_models import (
    COLOUR_MODEL,
    build_colour_repository,
    colour_classifier,
    colour_metadata,
    write_model_version,
)
from tests.servers import ROOT, Server, free_port, running_server

pytestmark = pytest.mark.slow

CLASSIFIER_APP = "services.classifier.app:create_app"
DETECTOR_APP = "services.detector.app:create_app"
GATEWAY_APP = "services.gateway.app:create_app"

TEAM_A_KEY = generate_key()
TEAM_B_KEY = generate_key()
ADMIN_KEY = generate_key()
CLASSIFIER_TOKEN = "classifier-admin-token-for-tests"
DETECTOR_TOKEN = "detector-admin-token-for-tests"
API_KEYS = [
    {"id": "team-a", "sha256": key_digest(TEAM_A_KEY), "tier": "standard"},
    {"id": "team-b", "sha256": key_digest(TEAM_B_KEY), "tier": "premium"},
]
# Version 2 of the colour classifier returns these labels, so a response
# shows which version made it.
V2_LABELS = ("red-v2", "green-v2", "blue-v2")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def gateway_env(classifier: Server, detector_url: str = "", **settings: str) -> dict[str, str]:
    return {
        "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
        "VS_GATEWAY_DETECTOR_URL": detector_url,
        "VS_GATEWAY_API_KEYS": json.dumps(API_KEYS),
        "VS_GATEWAY_ADMIN_KEY_SHA256": key_digest(ADMIN_KEY),
        "VS_GATEWAY_CLASSIFIER_ADMIN_TOKEN": CLASSIFIER_TOKEN,
        "VS_GATEWAY_DETECTOR_ADMIN_TOKEN": DETECTOR_TOKEN,
        **{f"VS_GATEWAY_{name.upper()}": value for name, value in settings.items()},
    }


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway-auth-logs")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_repository(tmp_path_factory.mktemp("classifiers"))


@pytest.fixture(scope="module")
def detector_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_detector_repository(tmp_path_factory.mktemp("detectors"))


@pytest.fixture(scope="module")
def classifier(repository: Path, log_dir: Path) -> Iterator[Server]:
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(repository),
        "VS_CLASSIFIER_INTRA_OP_THREADS": "1",
        "VS_CLASSIFIER_ADMIN_TOKEN": CLASSIFIER_TOKEN,
    }
    with running_server(CLASSIFIER_APP, env, log_dir) as server:
        yield server


@pytest.fixture(scope="module")
def detector(detector_repository: Path, log_dir: Path) -> Iterator[Server]:
    env = {
        "VS_DETECTOR_MODEL_REPOSITORY": str(detector_repository),
        "VS_DETECTOR_INTRA_OP_THREADS": "1",
        "VS_DETECTOR_ADMIN_TOKEN": DETECTOR_TOKEN,
    }
    with running_server(DETECTOR_APP, env, log_dir) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(classifier: Server, detector: Server, log_dir: Path) -> Iterator[Server]:
    with running_server(GATEWAY_APP, gateway_env(classifier, detector.url), log_dir) as server:
        yield server


def classify(server: Server, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/classify",
        params={"top_k": 1},
        content=solid_png(RED),
        headers={"Content-Type": "image/png", **(headers or {})},
        timeout=30.0,
    )


def reload(
    server: Server, service: str, model: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/admin/models/{service}/{model}/reload", headers=headers, timeout=60.0
    )


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def access_records(server: Server, route: str) -> list[dict[str, Any]]:
    """Return the gateway's "request finished" log records of `route`."""
    records = []
    for line in server.log().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("message") == "request finished" and record.get("route") == route:
            records.append(record)
    return records


def wait_for_access_records(server: Server, route: str) -> list[dict[str, Any]]:
    """Return the access records of `route`, waiting for the first one.

    The access line is written after the response is sent, so a client can
    read the log before the line arrives.
    """
    deadline = time.monotonic() + 10
    while not (records := access_records(server, route)):
        assert time.monotonic() < deadline, f"no access log line for {route}"
        time.sleep(0.05)
    return records


@contextmanager
def gateway_with(classifier: Server, tmp_path: Path, **settings: str) -> Iterator[Server]:
    """Run a second gateway in front of the module's classifier, with changed settings."""
    with running_server(GATEWAY_APP, gateway_env(classifier, **settings), tmp_path) as server:
        yield server


def test_missing_key_returns_401(gateway: Server) -> None:
    response = classify(gateway)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert error_of(response)["code"] == "unauthorized"
    assert "X-API-Key" in error_of(response)["message"]


@pytest.mark.parametrize(
    "headers",
    [bearer(generate_key()), {"X-API-Key": generate_key()}, {"X-API-Key": key_digest(TEAM_A_KEY)}],
    ids=["bearer", "x-api-key", "digest-as-key"],
)
def test_wrong_key_returns_401(gateway: Server, headers: dict[str, str]) -> None:
    response = classify(gateway, headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert error_of(response)["message"].startswith("invalid API key")


@pytest.mark.parametrize(
    "headers", [bearer(TEAM_A_KEY), {"X-API-Key": TEAM_A_KEY}], ids=["bearer", "x-api-key"]
)
def test_valid_key_classifies(gateway: Server, headers: dict[str, str]) -> None:
    response = classify(gateway, headers)

    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] == "red"


def test_other_authorization_scheme_returns_401(gateway: Server) -> None:
    response = classify(gateway, {"Authorization": f"Basic {TEAM_A_KEY}"})

    assert response.status_code == 401
    assert "Bearer <key>" in error_of(response)["message"]


def test_different_keys_in_both_headers_return_400(gateway: Server) -> None:
    response = classify(gateway, {**bearer(TEAM_A_KEY), "X-API-Key": TEAM_B_KEY})

    assert response.status_code == 400
    assert "different keys" in error_of(response)["message"]


def test_same_key_in_both_headers_is_accepted(gateway: Server) -> None:
    response = classify(gateway, {**bearer(TEAM_A_KEY), "X-API-Key": TEAM_A_KEY})

    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"])
def test_open_routes_need_no_key(gateway: Server, path: str) -> None:
    response = httpx.get(f"{gateway.url}{path}", timeout=10.0)

    assert response.status_code == 200


def test_access_log_names_key_id_never_key(gateway: Server) -> None:
    wrong_key = generate_key()
    assert classify(gateway, bearer(TEAM_A_KEY)).status_code == 200
    assert classify(gateway, {"X-API-Key": TEAM_B_KEY}).status_code == 200
    assert classify(gateway, bearer(wrong_key)).status_code == 401
    assert reload(gateway, "classifier", COLOUR_MODEL, bearer(ADMIN_KEY)).status_code == 200

    # The reload's line comes last, so once it is there the others are too.
    reloads = wait_for_access_records(gateway, "/v1/admin/models/{service}/{name}/reload")
    log = gateway.log()
    for secret in (TEAM_A_KEY, TEAM_B_KEY, ADMIN_KEY, wrong_key, CLASSIFIER_TOKEN):
        assert secret not in log
    clients = [record.get("client_key_id") for record in access_records(gateway, "/v1/classify")]
    assert "team-a" in clients
    assert "team-b" in clients
    assert reloads[-1]["client_key_id"] == "admin"
    assert reloads[-1]["status"] == 200


def test_no_keys_rejects_every_request(classifier: Server, tmp_path: Path) -> None:
    with gateway_with(classifier, tmp_path, api_keys="[]") as gateway:
        response = classify(gateway, bearer(TEAM_A_KEY))
        ready = httpx.get(f"{gateway.url}/readyz", timeout=10.0)

    assert response.status_code == 401
    assert ready.status_code == 200
    assert "no API keys configured" in gateway.log()


def test_open_access_serves_anonymous_clients(classifier: Server, tmp_path: Path) -> None:
    with gateway_with(classifier, tmp_path, environment="development", open_access="true") as gw:
        keyless = classify(gw)
        with_key = classify(gw, bearer(TEAM_A_KEY))
        wrong_key = classify(gw, bearer(generate_key()))
        admin_keyless = reload(gw, "classifier", COLOUR_MODEL)

    assert keyless.status_code == 200
    assert with_key.status_code == 200
    assert wrong_key.status_code == 401
    assert admin_keyless.status_code == 401
    clients = [record.get("client_key_id") for record in access_records(gw, "/v1/classify")]
    assert clients[:2] == ["anonymous", "team-a"]


def test_open_access_in_production_exits(classifier: Server, tmp_path: Path) -> None:
    env = gateway_env(classifier, open_access="true")
    server = Server(app=GATEWAY_APP, port=free_port(), env=env, log_path=tmp_path / "gw.log")

    try:
        with pytest.raises(RuntimeError, match="exited early"):
            server.start(timeout=60.0)
    finally:
        server.stop()

    assert "VS_GATEWAY_OPEN_ACCESS" in server.log()
    assert "VS_GATEWAY_ENVIRONMENT=development" in server.log()


def test_key_tool_output_configures_gateway(classifier: Server, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "services.gateway.keys", "new", "--id", "cli-team"]
    created = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    key, entry = created.stdout.splitlines()
    hashed = subprocess.run(
        [sys.executable, "-m", "services.gateway.keys", "hash"],
        cwd=ROOT,
        input=key + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert json.loads(entry)["sha256"] == hashed.stdout.strip()
    assert key not in created.stderr
    with gateway_with(classifier, tmp_path, api_keys=f"[{entry}]") as gateway:
        response = classify(gateway, {"X-API-Key": key})
    assert response.status_code == 200
    assert access_records(gateway, "/v1/classify")[-1]["client_key_id"] == "cli-team"


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), (bearer(generate_key()), 401), (bearer(TEAM_A_KEY), 403)],
    ids=["no-key", "wrong-key", "api-key"],
)
def test_admin_route_rejects_non_admin_keys(
    gateway: Server, headers: dict[str, str], status: int
) -> None:
    response = reload(gateway, "classifier", COLOUR_MODEL, headers)

    assert response.status_code == status
    assert error_of(response)["code"] == ("forbidden" if status == 403 else "unauthorized")


def test_admin_route_is_off_without_admin_key(classifier: Server, tmp_path: Path) -> None:
    with gateway_with(classifier, tmp_path, admin_key_sha256="") as gateway:
        response = reload(gateway, "classifier", COLOUR_MODEL, bearer(ADMIN_KEY))

    assert response.status_code == 403
    assert "VS_GATEWAY_ADMIN_KEY_SHA256" in error_of(response)["message"]


def test_admin_reload_serves_new_version(tmp_path: Path) -> None:
    repository = build_colour_repository(tmp_path / "models")
    env = {
        "VS_CLASSIFIER_MODEL_REPOSITORY": str(repository),
        "VS_CLASSIFIER_INTRA_OP_THREADS": "1",
        "VS_CLASSIFIER_ADMIN_TOKEN": CLASSIFIER_TOKEN,
    }
    with (
        running_server(CLASSIFIER_APP, env, tmp_path) as classifier,
        gateway_with(classifier, tmp_path) as gateway,
    ):
        before = classify(gateway, bearer(TEAM_A_KEY)).json()
        metadata = colour_metadata(version=2, labels=V2_LABELS)
        write_model_version(repository, colour_classifier(), metadata)

        response = reload(gateway, "classifier", COLOUR_MODEL, bearer(ADMIN_KEY))
        after = classify(gateway, bearer(TEAM_A_KEY)).json()

    assert before["model"] == {"name": COLOUR_MODEL, "version": 1}
    assert response.status_code == 200, response.text
    assert response.json() == {
        "model": COLOUR_MODEL, "previous_version": 1, "version": 2, "reloaded": True
    }  # fmt: skip
    assert after["model"] == {"name": COLOUR_MODEL, "version": 2}
    assert after["predictions"][0]["label"] == "red-v2"


def test_admin_reload_reaches_detector(gateway: Server, detector_repository: Path) -> None:
    metadata = detection_metadata(COLOUR_DETECTOR, DETECTOR_LABELS, DETECTOR_INPUT_SIZE, version=2)
    write_detector_version(detector_repository, colour_detector(), metadata)

    response = reload(gateway, "detector", COLOUR_DETECTOR, {"X-API-Key": ADMIN_KEY})
    detected = httpx.post(
        f"{gateway.url}/v1/detect",
        content=solid_png(RED),
        headers={"Content-Type": "image/png", **bearer(TEAM_A_KEY)},
        timeout=30.0,
    )

    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2
    assert detected.status_code == 200, detected.text
    assert detected.json()["model"] == {"name": COLOUR_DETECTOR, "version": 2}


def test_admin_unknown_model_returns_404(gateway: Server) -> None:
    response = reload(gateway, "classifier", "no-such-model", bearer(ADMIN_KEY))

    assert response.status_code == 404
    assert error_of(response)["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("model", "message"),
    [("m" * 65, "VS_GATEWAY_MAX_MODEL_NAME_CHARS"), ("%2E%2E", "model name in the path")],
    ids=["too-long", "dot-dot"],
)
def test_admin_reload_rejects_bad_model_name(gateway: Server, model: str, message: str) -> None:
    response = reload(gateway, "classifier", model, bearer(ADMIN_KEY))

    assert response.status_code == 422
    assert message in error_of(response)["message"]


def test_admin_unknown_service_returns_422(gateway: Server) -> None:
    response = reload(gateway, "gateway", COLOUR_MODEL, bearer(ADMIN_KEY))

    assert response.status_code == 422
    assert "classifier" in error_of(response)["message"]


def test_wrong_service_token_returns_502(classifier: Server, tmp_path: Path) -> None:
    wrong = "wrong-classifier-token-for-tests"
    with gateway_with(classifier, tmp_path, classifier_admin_token=wrong) as gateway:
        response = reload(gateway, "classifier", COLOUR_MODEL, bearer(ADMIN_KEY))

    assert response.status_code == 502
    assert "admin token" in error_of(response)["message"]
    assert "rejected the gateway's admin token with status 401" in gateway.log()
    assert wrong not in gateway.log()


def test_missing_service_token_returns_403(classifier: Server, tmp_path: Path) -> None:
    detector_url = f"http://127.0.0.1:{free_port()}"
    with running_server(
        GATEWAY_APP,
        gateway_env(classifier, detector_url, detector_admin_token=""),
        tmp_path,
        ready_path="/healthz",
    ) as gateway:
        response = reload(gateway, "detector", COLOUR_DETECTOR, bearer(ADMIN_KEY))

    assert response.status_code == 403
    assert "VS_GATEWAY_DETECTOR_ADMIN_TOKEN" in error_of(response)["message"]


def test_reload_without_detector_returns_503(classifier: Server, tmp_path: Path) -> None:
    with gateway_with(classifier, tmp_path) as gateway:
        response = reload(gateway, "detector", COLOUR_DETECTOR, bearer(ADMIN_KEY))

    assert response.status_code == 503
    assert "VS_GATEWAY_DETECTOR_URL" in error_of(response)["message"]
