"""Cache queries of the gateway routes: the image digest and the canonical request parameters.

Two requests share a cache entry only when their parameters have the same
canonical spelling. A parameter without one (a repeated value, a number that
is not a number, an unknown model name) makes the request bypass the cache,
and the backend decides on it as usual.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import AsyncGenerator, Callable

import httpx
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from services.common.redis_keys import canonical_number
from services.common.upload import FILE_FIELD, MULTIPART_CONTENT_TYPE
from services.gateway.response_cache import CacheQuery, ModelSlot

# The model services' rule for model names (services.common.repository).
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# The spellings that FastAPI (pydantic 2) reads as booleans, lower-cased.
TRUE_SPELLINGS = frozenset({"1", "on", "t", "true", "y", "yes"})
FALSE_SPELLINGS = frozenset({"0", "off", "f", "false", "n", "no"})
_MAX_FORM_FIELDS = 16
_MAX_TEXT_FIELD_BYTES = 64 * 1024


class NotCacheable(Exception):
    """A request parameter has no canonical spelling, so the request bypasses the cache."""


def image_sha256(image: bytes) -> str:
    return hashlib.sha256(image).hexdigest()


async def uploaded_image(body: bytes, content_type: str | None) -> bytes | None:
    """Return the image bytes of a request body: the `file` part of a form, else the body.

    Returns None for a form without exactly one `file` part, which the
    backend rejects anyway.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != MULTIPART_CONTENT_TYPE:
        return body

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(
        Headers({"content-type": content_type or ""}),
        chunks(),
        max_files=1,
        max_fields=_MAX_FORM_FIELDS,
        max_part_size=_MAX_TEXT_FIELD_BYTES,
    )
    try:
        form = await parser.parse()
    except MultiPartException:
        return None
    try:
        files = form.getlist(FILE_FIELD)
        if len(files) != 1 or not isinstance(files[0], UploadFile):
            return None
        return await files[0].read()
    finally:
        await form.close()


async def classify_query(
    body: bytes, content_type: str | None, model: str | None, top_k: int | None
) -> CacheQuery | None:
    """Return the cache query of a /v1/classify request, or None when it bypasses the cache."""
    image = await uploaded_image(body, content_type)
    if image is None:
        return None
    try:
        slot = ModelSlot(
            "classifier",
            _model_name(model),
            {"top_k": None if top_k is None else str(top_k)},
            body_field="model",
        )
    except NotCacheable:
        return None
    return CacheQuery("classify", image_sha256(image), {}, (slot,))


async def detect_query(
    body: bytes, content_type: str | None, params: httpx.QueryParams
) -> CacheQuery | None:
    """Return the cache query of a /v1/detect request, or None when it bypasses the cache."""
    image = await uploaded_image(body, content_type)
    if image is None:
        return None
    try:
        parameters = _detection_parameters(params)
        slot = ModelSlot("detector", _model_name(params.get("model")), parameters, "model")
    except NotCacheable:
        return None
    return CacheQuery("detect", image_sha256(image), {}, (slot,))


def analyze_query(
    image: bytes, detector_params: httpx.QueryParams, classifier_model: str | None, margin: float
) -> CacheQuery | None:
    """Return the cache query of a /v1/analyze request, or None when it bypasses the cache.

    `detector_params` are the parameters the gateway sends to the detector,
    max_det always among them. The classifier always runs with top_k 1, so
    the route name covers it.
    """
    try:
        detection = _detection_parameters(detector_params)
        detector_model = _model_name(detector_params.get("model"))
        detector = ModelSlot("detector", detector_model, detection, "detector_model")
        classifier = ModelSlot("classifier", _model_name(classifier_model), {}, "classifier_model")
    except NotCacheable:
        return None
    route_parameters = {"margin": canonical_number(margin)}
    return CacheQuery("analyze", image_sha256(image), route_parameters, (detector, classifier))


def _detection_parameters(params: httpx.QueryParams) -> dict[str, str | None]:
    classes = params.get_list("classes")
    return {
        "conf": _single(params, "conf", _fraction),
        "iou": _single(params, "iou", _fraction),
        "classes": _class_ids(classes) if classes else None,
        "agnostic_nms": _single(params, "agnostic_nms", _boolean),
        "max_det": _single(params, "max_det", _whole_number),
    }


def _model_name(value: str | None) -> str | None:
    if value is None:
        return None
    if not MODEL_NAME.match(value):
        raise NotCacheable
    return value


def _single(params: httpx.QueryParams, name: str, canonical: Callable[[str], str]) -> str | None:
    values = params.get_list(name)
    if not values:
        return None
    if len(values) > 1:
        # FastAPI would use one of them, and the cache does not guess which.
        raise NotCacheable
    return canonical(values[0])


def _fraction(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        raise NotCacheable from None
    if not math.isfinite(number):
        raise NotCacheable
    return canonical_number(number)


def _whole_number(value: str) -> str:
    if not (value.isascii() and value.isdigit()):
        raise NotCacheable
    return str(int(value))


def _boolean(value: str) -> str:
    spelling = value.lower()
    if spelling in TRUE_SPELLINGS:
        return "true"
    if spelling in FALSE_SPELLINGS:
        return "false"
    raise NotCacheable


def _class_ids(values: list[str]) -> str:
    """Return the sorted, unique class ids of comma-separated or repeated values."""
    tokens = [token.strip() for value in values for token in value.split(",")]
    if not all(token.isascii() and token.isdigit() for token in tokens):
        raise NotCacheable
    return ",".join(str(class_id) for class_id in sorted({int(token) for token in tokens}))
