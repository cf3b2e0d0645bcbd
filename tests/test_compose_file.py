"""docker-compose.yml checked by docker-compose's `config` command, which needs no Docker engine.

docker-compose 1.29 (Debian package docker-compose, which .ci/run installs)
validates the file against the Compose Specification schema that it ships,
so a misspelled key or condition fails here. Its schema predates some keys
of Docker Compose v2, such as the top-level `name`, so the file does not use
them. The resolved environment must also equal what tests/compose_files.py
makes of the file, which the no-Docker compose run relies on.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.compose_files import COMPOSE_FILE, ENV_EXAMPLE, load_compose, read_env_file
from tests.deploy_manifests import require_tool
from tests.servers import ROOT


@pytest.fixture(scope="module")
def resolved_config() -> dict[str, Any]:
    """Return `docker-compose config` of the compose file with the values of .env.example."""
    docker_compose = require_tool(
        "docker-compose", "install the Debian package docker-compose (.ci/run does)"
    )
    completed = subprocess.run(
        [
            docker_compose, "--project-directory", str(ROOT), "--env-file", str(ENV_EXAMPLE),
            "-f", str(COMPOSE_FILE), "config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return dict(yaml.safe_load(completed.stdout))


def test_compose_file_valid(resolved_config: dict[str, Any]) -> None:
    assert set(resolved_config["services"]) == {
        "redis",
        "pushgateway",
        "prometheus",
        "grafana",
        "models-classifiers",
        "models-detector",
        "classifier",
        "detector",
        "gateway",
        "monitor",
    }


def test_environment_matches_local_reading(resolved_config: dict[str, Any]) -> None:
    local = load_compose(read_env_file(ENV_EXAMPLE))["services"]
    for name, service in resolved_config["services"].items():
        expected = {key: str(value) for key, value in service.get("environment", {}).items()}
        actual = {key: str(value) for key, value in local[name].get("environment", {}).items()}
        assert actual == expected, name
