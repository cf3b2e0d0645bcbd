"""Reading request bodies with a size limit that applies before the whole body arrives."""

from __future__ import annotations

from fastapi import Request
from starlette.requests import ClientDisconnect

from services.common.errors import InvalidRequest, PayloadTooLarge


async def read_limited_body(request: Request, max_bytes: int) -> bytes:
    """Read the whole request body, raising PayloadTooLarge as soon as it exceeds `max_bytes`.

    A declared Content-Length above the limit is rejected before any body byte is
    read. A chunked upload is rejected at the first chunk that crosses the limit.

    The gateway buffers the body before calling a backend, so a slow upload occupies no
    backend connection and a failed connection can be retried. The cost is up to
    `max_bytes` of memory per request in flight.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        _reject_declared_length(declared, max_bytes)

    body = bytearray()
    try:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > max_bytes:
                raise _too_large(max_bytes)
    except ClientDisconnect as error:
        raise InvalidRequest("the client disconnected before sending the whole body") from error
    return bytes(body)


def _reject_declared_length(declared: str, max_bytes: int) -> None:
    if not declared.isdigit():
        raise InvalidRequest(
            f"invalid Content-Length header {declared[:32]!r}; expected a byte count"
        )
    if int(declared) > max_bytes:
        raise _too_large(max_bytes)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body exceeds the gateway limit of {max_bytes} bytes; send a smaller image"
    )
