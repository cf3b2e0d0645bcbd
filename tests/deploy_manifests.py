"""The deployment files under test: Kustomize builds, Dockerfiles and the tools that check them.

A missing tool fails the test that needs it with the command that installs
it, instead of skipping: these checks are the only validation the
deployment files get on machines without Docker or a cluster.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers import ROOT

K8S_DIR = ROOT / "deploy" / "k8s"
OVERLAYS = ("local", "aws")
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


def require_tool(name: str, install_hint: str) -> str:
    """Return the path of program `name`, next to this Python first, or fail the test."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found; {install_hint}", pytrace=False)
    return found


@functools.cache
def kustomize_build(path: str) -> str:
    """Return the output of `kubectl kustomize` for a folder under deploy/k8s."""
    kubectl = require_tool(
        "kubectl",
        "install kubectl 1.27 or newer, which contains kustomize (.ci/run checks for it)",
    )
    completed = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR / path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        pytest.fail(f"kubectl kustomize {path} failed:\n{completed.stderr}", pytrace=False)
    return completed.stdout


def overlay_objects(overlay: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(kustomize_build(f"overlays/{overlay}")) if doc]


def find_object(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for item in objects:
        if item["kind"] == kind and item["metadata"]["name"] == name:
            return item
    raise KeyError(f"no {kind} named {name}")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """Return the pod spec of a Deployment, Job or CronJob."""
    if workload["kind"] == "CronJob":
        return dict(workload["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(workload["spec"]["template"]["spec"])


def workloads(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in objects:
        if item["kind"] in {"Deployment", "Job", "CronJob", "StatefulSet", "DaemonSet"}:
            yield item


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers", [])) + list(spec["containers"])
