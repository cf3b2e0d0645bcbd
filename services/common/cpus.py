"""The number of CPUs this process may use: its affinity mask and its cgroup CPU quota.

`os.cpu_count()` counts the host's CPUs. A container limited to 1.5 CPUs, or a
process started with `taskset -c 0`, would then run more threads than it has
CPU time for, and they would wait for each other. The thread defaults of the
model services come from `threads_per_worker` instead.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Set
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 mounts the cpu controller on its own or together with cpuacct.
_V1_CPU_FOLDERS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def affinity_cpus() -> set[int]:
    """Return the ids of the CPUs this process may run on, or every CPU where there is no mask."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> int | None:
    """Return the cgroup CPU quota as whole CPUs (quota / period rounded up, at least 1).

    Reads cgroup v2 `cpu.max` in `root`, else cgroup v1 `cpu.cfs_quota_us` and
    `cpu.cfs_period_us` in `root/cpu` (or `root` itself). Returns None when
    there is no quota or no file to read it from.

    NOTE: only the cgroup at `root` is read. That is the process's own cgroup
    inside a container with a cgroup namespace (Docker and Kubernetes by
    default). A process in a nested cgroup on a host does not see its quota here.
    """
    try:
        v2_file = root / "cpu.max"
        if v2_file.is_file():
            return _parse_cpu_max(v2_file)
        for folder in (root, *(root / name for name in _V1_CPU_FOLDERS)):
            quota_file = folder / "cpu.cfs_quota_us"
            if quota_file.is_file():
                return _parse_cfs_files(quota_file, folder / "cpu.cfs_period_us")
    except OSError as error:
        logger.warning("ignoring the cgroup CPU quota: reading it failed: %s", error)
    return None


def usable_cpus(*, cgroup_root: Path = CGROUP_ROOT, affinity: Set[int] | None = None) -> int:
    """Return the CPUs this process may use: its affinity mask or its cgroup quota, the smaller.

    `affinity` replaces the process's own affinity mask, for tests.
    """
    allowed = len(affinity if affinity is not None else affinity_cpus())
    limit = cgroup_cpu_limit(cgroup_root)
    return max(1, min(allowed, limit) if limit is not None else allowed)


def threads_per_worker(
    workers: int, *, cgroup_root: Path = CGROUP_ROOT, affinity: Set[int] | None = None
) -> int:
    """Return this process's share of the usable CPUs when `workers` processes share them.

    At least 1, so each worker runs even when there are more workers than CPUs.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return max(1, usable_cpus(cgroup_root=cgroup_root, affinity=affinity) // workers)


def _parse_cpu_max(path: Path) -> int | None:
    # One line, "<quota> <period>" in microseconds, or "max <period>" for no quota.
    fields = _read(path).split()
    if not fields or fields[0] == "max":
        return None
    period = fields[1] if len(fields) > 1 else "100000"
    return _quota_cpus(fields[0], period, path)


def _parse_cfs_files(quota_file: Path, period_file: Path) -> int | None:
    quota = _read(quota_file)
    # -1 means no quota.
    if quota.startswith("-") or not period_file.is_file():
        return None
    return _quota_cpus(quota, _read(period_file), quota_file)


def _quota_cpus(quota: str, period: str, source: Path) -> int | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        logger.warning(
            "ignoring the CPU quota in %s: %r / %r is not a number", source, quota, period
        )
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return max(1, math.ceil(quota_us / period_us))


def _read(path: Path) -> str:
    return path.read_text(encoding="ascii", errors="replace").strip()
