"""The file parts of a multipart/form-data body that the gateway has already read into memory.

The gateway forwards the body unchanged. It parses the form only to count
its files and to read their image headers, so it keeps the file contents and
drops the text fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from services.common.errors import InvalidRequest
from services.common.upload import FILE_FIELD

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks


class _FileCollector:
    """Multipart parser callbacks that keep the content of every part with a filename."""

    def __init__(self, max_files: int) -> None:
        self.files: list[bytearray] = []
        self._max_files = max_files
        self._current: bytearray | None = None
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._on_part_begin,
            "on_part_data": self._on_part_data,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
        }

    def _on_part_begin(self) -> None:
        self._current = None
        self._disposition = b""

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def _on_headers_finished(self) -> None:
        # Starlette, which the backends use, treats a part with a filename as a file.
        _, options = parse_options_header(self._disposition)
        if b"filename" not in options:
            return
        if len(self.files) == self._max_files:
            # Raised from inside the parser, so the rest of the body is not parsed.
            raise InvalidRequest(
                f"the form has more files than this route takes ({self._max_files}); send "
                f"{self._max_files} per request, each as the file field {FILE_FIELD!r}"
            )
        self._current = bytearray()
        self.files.append(self._current)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._current += data[start:end]


def form_files(body: bytes, content_type: str, *, max_files: int) -> list[bytes] | None:
    """Return the content of every file part of a multipart form, in form order.

    Returns None when the body is not a well-formed multipart form, so that
    the caller can leave the verdict to the backend. Raises InvalidRequest
    (400) as soon as the form has more than `max_files` files.
    """
    _, parameters = parse_options_header(content_type)
    boundary = parameters.get(b"boundary")
    if not boundary:
        return None
    collector = _FileCollector(max_files)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        parser.write(body)
        parser.finalize()
    except FormParserError:
        return None
    return [bytes(content) for content in collector.files]
