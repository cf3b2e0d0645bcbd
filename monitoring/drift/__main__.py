"""Command line of the drift job: `python -m monitoring.drift [--once | --loop [--interval S]]`.

Exit status: 0 after a run or a stopped loop, also when Redis, the
Pushgateway or Prometheus were unreachable (the report lists those errors),
and 2 when the settings or the arguments are invalid.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from monitoring.drift.job import run_once
from monitoring.drift.settings import MonitorSettings
from services.common.logging import configure_logging
from services.common.settings import InvalidSettingsError, load_settings

logger = logging.getLogger("monitoring.drift")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.drift",
        description="Compare the prediction log of each model version with its reference profile.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one check and exit (the default)")
    mode.add_argument(
        "--loop", action="store_true", help="repeat the check until SIGTERM or SIGINT"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds between checks in --loop mode (default: VS_MONITOR_INTERVAL_SECONDS, 300)",
    )
    arguments = parser.parse_args(argv)
    if arguments.interval is not None and arguments.interval <= 0:
        parser.error(f"--interval must be positive, got {arguments.interval}")
    return arguments


def run_loop(settings: MonitorSettings, interval: float, stop: threading.Event) -> None:
    """Run checks every `interval` seconds until `stop` is set.

    A run that fails in an unexpected way is logged and the loop goes on, so
    that one bad record or report cannot end monitoring.
    """
    logger.info("drift loop started", extra={"interval_seconds": interval})
    while not stop.is_set():
        try:
            run_once(settings)
        except Exception:
            logger.exception("drift run failed; retrying after the interval")
        stop.wait(interval)
    logger.info("drift loop stopped")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        settings = load_settings(MonitorSettings)
    except InvalidSettingsError as error:
        print(f"python -m monitoring.drift: {error}", file=sys.stderr)
        return 2
    configure_logging("drift-monitor", settings.log_level)
    # httpx logs every request at INFO; the job logs its own Prometheus errors.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    if not arguments.loop:
        run_once(settings)
        return 0

    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("stop requested", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    run_loop(settings, arguments.interval or settings.interval_seconds, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
