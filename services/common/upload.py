"""Reading an uploaded image from an HTTP request, with the body size enforced while it streams.

Clients send the image either as a multipart form with a file field named
`file` or as the raw request body with an image content type. The byte limit
covers the whole request body, multipart framing included.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from services.common.errors import (
    EmptyBody,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)

FILE_FIELD = "file"
MULTIPART_CONTENT_TYPE = "multipart/form-data"
RAW_CONTENT_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/bmp",
    "image/tiff",
    "image/gif",
    "application/octet-stream",
)
ACCEPTED_CONTENT_TYPES = (MULTIPART_CONTENT_TYPE, *RAW_CONTENT_TYPES)

# A form carries one image and perhaps a few small text fields. Text fields are
# held in memory, so they get a small cap. The file part is spooled by Starlette
# and bounded by max_body_bytes.
_MAX_FORM_FILES = 1
_MAX_FORM_FIELDS = 16
_MAX_TEXT_FIELD_BYTES = 64 * 1024


async def read_image_body(request: Request, *, max_body_bytes: int) -> bytes:
    """Return the image bytes of a multipart `file` field or of a raw image body.

    Raises PayloadTooLarge as soon as the declared Content-Length or the bytes
    received so far exceed `max_body_bytes`, before the rest is read.
    UnsupportedMediaType for any other content type, InvalidRequest for a
    malformed form or one without a `file` field, and EmptyBody for zero bytes.
    """
    content_type = _media_type(request)
    if content_type not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"content type {content_type or '(missing)'!r} is not accepted; send a "
            f"{MULTIPART_CONTENT_TYPE} form with a {FILE_FIELD!r} field, or the raw image "
            f"with one of: {', '.join(RAW_CONTENT_TYPES)}"
        )
    _check_declared_length(request, max_body_bytes)

    if content_type == MULTIPART_CONTENT_TYPE:
        (upload,) = await _read_multipart_files(request, max_body_bytes, max_files=_MAX_FORM_FILES)
        if not upload:
            raise EmptyBody(f"the form field {FILE_FIELD!r} is empty; send the image bytes")
        return upload
    return await _read_whole_body(request, max_body_bytes, "the image bytes")


def _media_type(request: Request) -> str:
    header = request.headers.get("content-type", "")
    return header.split(";", 1)[0].strip().lower()


def _too_large(max_body_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than the limit of {max_body_bytes} bytes; send a smaller image"
    )


def _check_declared_length(request: Request, max_body_bytes: int) -> None:
    declared = request.headers.get("content-length")
    # A value that is not a number is ignored here. The count while streaming
    # still applies to it.
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise _too_large(max_body_bytes)


async def _limited_stream(request: Request, max_body_bytes: int) -> AsyncGenerator[bytes, None]:
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body_bytes:
                raise _too_large(max_body_bytes)
            yield chunk
    except ClientDisconnect as exc:
        raise InvalidRequest("the client disconnected before sending the whole body") from exc


async def read_image_files(request: Request, *, max_body_bytes: int, max_files: int) -> list[bytes]:
    """Return the bytes of every `file` field of a multipart form, in form order.

    Empty parts are returned as empty bytes, so that the caller can reject
    them one by one. Raises UnsupportedMediaType for any content type but
    multipart/form-data, PayloadTooLarge as in `read_image_body`, and
    InvalidRequest for a malformed form, more than `max_files` files or no
    `file` field.
    """
    content_type = _media_type(request)
    if content_type != MULTIPART_CONTENT_TYPE:
        raise UnsupportedMediaType(
            f"content type {content_type or '(missing)'!r} is not accepted; send a "
            f"{MULTIPART_CONTENT_TYPE} form with one {FILE_FIELD!r} file field per image"
        )
    _check_declared_length(request, max_body_bytes)
    return await _read_multipart_files(request, max_body_bytes, max_files=max_files)


async def _read_multipart_files(
    request: Request, max_body_bytes: int, *, max_files: int
) -> list[bytes]:
    # Starlette's request.form() would read the whole body before any limit
    # applies. Feeding the parser the limited stream rejects an oversized body
    # while it arrives.
    parser = MultiPartParser(
        request.headers,
        _limited_stream(request, max_body_bytes),
        max_files=max_files,
        max_fields=_MAX_FORM_FIELDS,
        max_part_size=_MAX_TEXT_FIELD_BYTES,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequest(
            f"the multipart body is invalid: {exc.message} "
            f"Send at most {max_files} image(s), each as a file field {FILE_FIELD!r}."
        ) from exc

    try:
        uploads = form.getlist(FILE_FIELD)
        if not uploads:
            raise InvalidRequest(
                f"the multipart form has no field named {FILE_FIELD!r}; "
                f"send the image as the file field {FILE_FIELD!r}"
            )
        if not all(isinstance(upload, UploadFile) for upload in uploads):
            raise InvalidRequest(
                f"the form field {FILE_FIELD!r} is a text field; send the image as a file "
                "(a part with a filename in its Content-Disposition header)"
            )
        return [await upload.read() for upload in uploads if isinstance(upload, UploadFile)]
    finally:
        await form.close()


async def read_body(request: Request, *, max_body_bytes: int, content: str) -> bytes:
    """Return the whole request body, whatever its content type, within `max_body_bytes`.

    Raises PayloadTooLarge as `read_image_body` does, and EmptyBody naming
    the expected `content` for zero bytes.
    """
    _check_declared_length(request, max_body_bytes)
    return await _read_whole_body(request, max_body_bytes, content)


async def _read_whole_body(request: Request, max_body_bytes: int, content: str) -> bytes:
    data = bytearray()
    async for chunk in _limited_stream(request, max_body_bytes):
        data += chunk
    if not data:
        raise EmptyBody(f"the request body is empty; send {content}")
    return bytes(data)
