"""Run one VisionServe service under uvicorn, with one or several worker processes.

    python -m services.serve classifier --port 8001 --workers 2

Each worker is a separate process with its own models and onnxruntime sessions.
The launcher sets `VS_<SERVICE>_WORKERS` to the worker count, so that a model
service divides the usable CPUs among its workers for its thread defaults.
With several workers it also turns on prometheus_client's multiprocess mode:
`PROMETHEUS_MULTIPROC_DIR` points at a folder that is emptied before the
workers start, and `/metrics` reports the totals of all workers. The launcher
also caps glibc's malloc arenas at 2 (`MALLOC_ARENA_MAX`) unless the
environment sets a value.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from services.classifier.settings import ClassifierSettings
from services.common.logging import configure_logging
from services.common.multiprocess_metrics import (
    MULTIPROC_DIR_ENV,
    DeadWorkerReaper,
    clear_directory,
    multiprocess_directory,
)
from services.common.settings import InvalidSettingsError, ServiceSettings, load_settings
from services.detector.settings import DetectorSettings
from services.gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

MALLOC_ARENA_VARIABLE = "MALLOC_ARENA_MAX"
DEFAULT_MALLOC_ARENAS = "2"


@dataclass(frozen=True)
class ServiceEntry:
    app: str
    settings_class: type[ServiceSettings]
    default_port: int


SERVICES = {
    "classifier": ServiceEntry("services.classifier.app:create_app", ClassifierSettings, 8001),
    "detector": ServiceEntry("services.detector.app:create_app", DetectorSettings, 8002),
    "gateway": ServiceEntry("services.gateway.app:create_app", GatewaySettings, 8000),
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.serve", description="Run a VisionServe service under uvicorn."
    )
    parser.add_argument("service", choices=sorted(SERVICES), help="service to run")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=_positive_int,
        help="TCP port to listen on (default: 8000 gateway, 8001 classifier, 8002 detector)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        help="number of worker processes (default: VS_<SERVICE>_WORKERS, else 1)",
    )
    parser.add_argument(
        "--metrics-dir",
        type=Path,
        help=(
            "folder for the metric files of two or more workers; emptied of *.db files at start "
            f"(default: {MULTIPROC_DIR_ENV} if set, else a temporary folder removed at exit)"
        ),
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    entry = SERVICES[args.service]
    workers_variable = f"{entry.settings_class.model_config.get('env_prefix', '')}WORKERS"
    if args.workers is not None:
        os.environ[workers_variable] = str(args.workers)
    # Checked here once, so that an invalid value stops the launcher instead
    # of every worker failing on its own.
    try:
        settings = load_settings(entry.settings_class)
    except InvalidSettingsError as error:
        print(f"{args.service}: {error}", file=sys.stderr)
        return 2
    configure_logging(args.service, settings.log_level)
    os.environ[workers_variable] = str(settings.workers)
    port = args.port or entry.default_port

    if settings.workers == 1:
        if args.metrics_dir is not None:
            logger.warning("--metrics-dir is ignored with one worker; pass --workers 2 or more")
        _run_uvicorn(entry.app, args.host, port, workers=1)
        return 0
    with _metrics_directory(args.metrics_dir, args.service) as directory:
        os.environ[MULTIPROC_DIR_ENV] = str(directory)
        reaper = DeadWorkerReaper(directory)
        reaper.start()
        logger.info(
            "starting %d workers",
            settings.workers,
            extra={"app": entry.app, "port": port, "metrics_dir": str(directory)},
        )
        try:
            _run_uvicorn(entry.app, args.host, port, workers=settings.workers)
        finally:
            reaper.stop()
    return 0


def _run_uvicorn(app: str, host: str, port: int, *, workers: int) -> None:
    # log_config=None keeps the JSON logging that configure_logging installed.
    uvicorn.run(app, factory=True, host=host, port=port, workers=workers, log_config=None)


@contextmanager
def _metrics_directory(requested: Path | None, service: str) -> Iterator[Path]:
    """Yield an emptied folder for multiprocess metrics, and remove it after if it was made here."""
    configured = requested or multiprocess_directory()
    if configured is not None:
        clear_directory(configured)
        yield configured
        return
    temporary = Path(tempfile.mkdtemp(prefix=f"visionserve-{service}-metrics-"))
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _exec_with_malloc_arena_cap() -> None:
    """Run this command again with MALLOC_ARENA_MAX set, unless the environment sets it.

    glibc reads the variable once, at process start, so it cannot be set from
    inside. Without a cap, glibc gives threads that allocate at the same time
    their own arenas and keeps the freed memory mapped. In a 20 000-request
    soak run the gateway's memory settled 56 MiB higher than with 2 arenas
    (docs/reliability.md).
    """
    if MALLOC_ARENA_VARIABLE in os.environ:
        return
    os.environ[MALLOC_ARENA_VARIABLE] = DEFAULT_MALLOC_ARENAS
    os.execv(sys.executable, [sys.executable, "-m", "services.serve", *sys.argv[1:]])


if __name__ == "__main__":
    _exec_with_malloc_arena_cap()
    sys.exit(main())
