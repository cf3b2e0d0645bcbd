"""Sampling profiles of running servers with py-spy, summarized as the hottest functions.

`py-spy record --format raw` writes collapsed stacks, one line per distinct
stack: `frame;frame;...;leaf COUNT`, each frame `function (file:line)`. The
summary counts, per function with the line number dropped, the samples where
it is the leaf (self), and for the project's own functions (files under
`services/` and `bench/`) the samples where it is anywhere on the stack
(total). py-spy skips idle threads by default, so the counts are of busy time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOP_FUNCTIONS = 15
_LINE_NUMBER = re.compile(r":\d+\)$")
_PROJECT_PREFIXES = ("services/", "bench/")


@dataclass(frozen=True)
class Profile:
    """The hottest functions of one process: any by self samples, the project's by total."""

    process: str
    samples: int
    collapsed_path: str
    top_self: list[tuple[str, int]]
    top_total: list[tuple[str, int]]

    def to_json(self) -> dict[str, Any]:
        return {
            "process": self.process,
            "samples": self.samples,
            "collapsed_stacks": self.collapsed_path,
            "top_self": [{"function": name, "samples": count} for name, count in self.top_self],
            "top_total": [{"function": name, "samples": count} for name, count in self.top_total],
        }


def py_spy_path() -> str | None:
    """Return py-spy beside this interpreter (an unactivated venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def summarize_collapsed(process: str, path: Path) -> Profile:
    """Count self and total samples per function in a collapsed-stacks file."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        samples += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            if _is_project_frame(frame):
                total_counts[frame] += count
    return Profile(
        process=process,
        samples=samples,
        collapsed_path=str(path),
        top_self=self_counts.most_common(TOP_FUNCTIONS),
        top_total=total_counts.most_common(TOP_FUNCTIONS),
    )


def _is_project_frame(frame: str) -> bool:
    _, _, location = frame.rpartition("(")
    return location.startswith(_PROJECT_PREFIXES)


@contextmanager
def recording(pids: dict[str, int], seconds: int, output_dir: Path) -> Iterator[dict[str, Profile]]:
    """Record each process in `pids` for `seconds` while the block runs; fill the dict on exit.

    Raises FileNotFoundError when py-spy is not installed. `--nonblocking`
    reads the stacks without pausing the process, so the server runs at
    almost full speed while it is sampled.
    """
    executable = py_spy_path()
    if executable is None:
        raise FileNotFoundError("py-spy is not installed; pip install py-spy into the venv")
    output_dir.mkdir(parents=True, exist_ok=True)
    recorders = {}
    for name, pid in pids.items():
        path = output_dir / f"{name}-{pid}.collapsed.txt"
        command = [
            executable, "record", "--pid", str(pid), "--duration", str(seconds),
            "--rate", "100", "--nonblocking", "--format", "raw", "--output", str(path),
        ]  # fmt: skip
        log = (output_dir / f"{name}-{pid}.py-spy.log").open("wb")
        recorders[name] = (path, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))

    profiles: dict[str, Profile] = {}
    try:
        yield profiles
    finally:
        for name, (path, process) in recorders.items():
            process.wait(timeout=seconds + 60)
            if path.exists():
                profiles[name] = summarize_collapsed(name, path)
