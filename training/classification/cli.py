"""Entry point shared by the command-line tools: logging set-up and error exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from training.classification.errors import InvalidArgumentsError, TrainingError

logger = logging.getLogger("training.classification")


# The ONNX exporter's graph passes log every step at INFO.
_QUIET_LOGGERS = ("onnxscript", "onnx_ir")


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def run(
    parser: argparse.ArgumentParser,
    main: Callable[[argparse.Namespace], Any],
    argv: Sequence[str] | None = None,
) -> None:
    """Parse `argv`, call `main` and exit.

    Exit status 2 for invalid arguments (as argparse does), 1 for any other
    TrainingError, with the message on stderr and no traceback.
    """
    configure_logging()
    args = parser.parse_args(argv)
    try:
        main(args)
    except InvalidArgumentsError as error:
        parser.error(str(error))
    except TrainingError as error:
        logger.error("%s", error)
        sys.exit(1)
