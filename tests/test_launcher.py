"""`python -m services.serve` caps glibc's malloc arenas unless the environment sets a value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.launched_servers import launched_server
from tests.onnx_models import build_colour_repository

pytestmark = pytest.mark.slow


def process_environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (entry.decode(errors="replace").partition("=") for entry in entries if entry)
    return {name: value for name, _, value in pairs}


@pytest.mark.parametrize(("configured", "expected"), [(None, "2"), ("4", "4")])
def test_launcher_sets_malloc_arena_max(
    configured: str | None, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    env = {"VS_CLASSIFIER_MODEL_REPOSITORY": str(build_colour_repository(tmp_path / "models"))}
    if configured is not None:
        env["MALLOC_ARENA_MAX"] = configured

    with launched_server("classifier", env, tmp_path, workers=1) as server:
        assert server.process is not None
        environment = process_environment(server.process.pid)

    assert environment.get("MALLOC_ARENA_MAX") == expected
    assert "MALLOC_ARENA_MAX" not in os.environ
