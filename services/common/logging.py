"""JSON logging with the request id attached to every record.

Services call `configure_logging` once at start-up. Library modules only ever
call `logging.getLogger(__name__)`.
"""

from __future__ import annotations

import contextvars
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(request_id: str | None) -> contextvars.Token[str | None]:
    return _request_id.set(request_id)


def reset_request_id(token: contextvars.Token[str | None]) -> None:
    _request_id.reset(token)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        # uvicorn adds a copy of the message with ANSI colour codes for terminals.
        record.__dict__.pop("color_message", None)
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send JSON lines to stderr, replacing any handlers already on the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            # The pid shows which worker process of a service wrote the line.
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            rename_fields={"levelname": "level", "asctime": "time", "process": "pid"},
            static_fields={"service": service},
        )
    )
    handler.addFilter(_RequestIdFilter())

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library warnings (Pillow's "Corrupt EXIF data", for example) would otherwise
    # reach stderr as plain text lines between the JSON ones.
    logging.captureWarnings(True)
    # uvicorn's access log duplicates our request log line.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
