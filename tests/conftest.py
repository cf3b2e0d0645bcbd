"""Session-wide fixtures: offline settings and the default models built once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Set before anything imports ultralytics or a Hugging Face client, so no test
# reaches for the network.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# onnxruntime 1.32 on Linux otherwise starts a telemetry uploader that contacts
# a Microsoft collector. It reads the variable at import, and the services that
# tests start inherit it.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
# Gateways under test stop at SIGTERM without the production drain period, so
# that every fixture teardown does not wait for it. The graceful-shutdown test
# sets its own.
os.environ.setdefault("VS_GATEWAY_SHUTDOWN_DRAIN_SECONDS", "0")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def default_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a model repository holding the two default classifiers, built from scratch.

    Builds `imagenet-efficientnet-lite0` from the packaged ImageNet weights and
    trains `digits-cnn`, the same way `make demo` does.
    """
    repository = tmp_path_factory.mktemp("models")
    command = [
        sys.executable, "-m", "training.classification.build_defaults",
        "--repository", str(repository),
    ]  # fmt: skip
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if completed.returncode != 0:
        raise RuntimeError(
            f"building the default models failed:\n{completed.stdout}\n{completed.stderr}"
        )
    return repository
