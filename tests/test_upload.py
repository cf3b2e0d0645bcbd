"""Tests of `read_image_body` with an ASGI receive channel that counts what was read."""

from __future__ import annotations

import anyio
import pytest
from starlette.requests import Request

from services.common.errors import EmptyBody, PayloadTooLarge, ServiceError
from services.common.upload import read_image_body

CHUNK = b"\x00" * 100_000
LIMIT = 250_000


class CountingReceive:
    """An ASGI receive callable that sends `chunks` as separate messages and counts them."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.sent = 0

    async def __call__(self) -> dict[str, object]:
        body = self.chunks[self.sent] if self.sent < len(self.chunks) else b""
        self.sent += 1
        return {"type": "http.request", "body": body, "more_body": self.sent < len(self.chunks)}


def make_request(headers: dict[str, str], receive: CountingReceive) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/classify",
        "headers": [(key.lower().encode(), value.encode()) for key, value in headers.items()],
    }
    return Request(scope, receive)  # type: ignore[arg-type]


def read(request: Request, limit: int = LIMIT) -> bytes:
    async def main() -> bytes:
        return await read_image_body(request, max_body_bytes=limit)

    return anyio.run(main)


def multipart(payload: bytes, field: str = "file") -> tuple[dict[str, str], bytes]:
    boundary = "visionserve-test-boundary"
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="image.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body


def test_raw_body_is_returned() -> None:
    receive = CountingReceive([b"abc", b"def"])

    assert read(make_request({"Content-Type": "image/png"}, receive)) == b"abcdef"


def test_raw_body_limit_stops_reading_early() -> None:
    receive = CountingReceive([CHUNK] * 10)

    with pytest.raises(PayloadTooLarge, match=f"limit of {LIMIT} bytes"):
        read(make_request({"Content-Type": "image/jpeg"}, receive))

    assert receive.sent == 3


def test_declared_length_rejected_before_reading() -> None:
    receive = CountingReceive([CHUNK] * 10)
    headers = {"Content-Type": "image/jpeg", "Content-Length": str(len(CHUNK) * 10)}

    with pytest.raises(PayloadTooLarge):
        read(make_request(headers, receive))

    assert receive.sent == 0


def test_multipart_limit_stops_reading_early() -> None:
    headers, body = multipart(CHUNK * 10)
    chunks = [body[start : start + len(CHUNK)] for start in range(0, len(body), len(CHUNK))]
    receive = CountingReceive(chunks)

    with pytest.raises(PayloadTooLarge):
        read(make_request(headers, receive))

    assert receive.sent == 3


def test_multipart_file_is_returned() -> None:
    headers, body = multipart(b"\x89PNG-bytes")

    assert read(make_request(headers, CountingReceive([body]))) == b"\x89PNG-bytes"


def test_content_type_parameters_are_ignored() -> None:
    receive = CountingReceive([b"abc"])

    assert read(make_request({"Content-Type": "IMAGE/PNG; charset=binary"}, receive)) == b"abc"


def test_empty_raw_body_is_rejected() -> None:
    with pytest.raises(EmptyBody):
        read(make_request({"Content-Type": "image/png"}, CountingReceive([b""])))


def test_multipart_without_boundary_is_rejected() -> None:
    headers = {"Content-Type": "multipart/form-data"}

    with pytest.raises(ServiceError, match="multipart body is invalid") as caught:
        read(make_request(headers, CountingReceive([b"--x\r\n"])))

    assert caught.value.status_code == 400
