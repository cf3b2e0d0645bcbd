"""A corpus of hostile and unusual uploads, with the response each gateway route must return.

Every input is built in memory, so no binary file is stored in the repository.
`test_bad_inputs.py` sends each case to every route of a real gateway in front
of the real classifier and detector. Run this module to do the same against a
stack it starts itself and print the expected and measured answers as a
Markdown table (the table in docs/reliability.md comes from it):

    python -m tests.bad_inputs > /tmp/bad-inputs.md

A case is either an image, which the single-image routes get as the raw body
and /v1/classify/batch as the one file field of a form, or a whole request
(body and content type) that every route gets as it is.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from tests.images import (
    RED,
    encode,
    png_header_only,
    solid_png,
    truncated_jpeg,
    truncated_png,
    without_jpeg_segment,
)

ROUTES = ("classify", "classify/batch", "detect", "detect/render", "analyze")
SINGLE_ROUTES = ("classify", "detect", "detect/render", "analyze")
EXIF_ORIENTATION_TAG = 0x0112
# Stored size of the EXIF test photos; orientations 5 to 8 swap the sides.
EXIF_STORED_SIZE = (40, 20)


@dataclass(frozen=True)
class Expected:
    """The response a route must return: status, error code and a fragment of the message.

    On /v1/classify/batch an image that fails to decode does not fail the
    request: `entry` marks an expectation about the image's entry in a 200
    response. `size` is the width and height that a 200 response must report.
    """

    status: int
    code: str | None = None
    fragment: str = ""
    entry: bool = False
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class Case:
    """One bad or unusual input and the response each route must return."""

    name: str
    description: str
    expected: dict[str, Expected]
    image: bytes | None = None
    content_type: str = "application/octet-stream"
    # A whole request instead of an image: a raw body, or multipart files.
    body: bytes | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    params: dict[str, dict[str, str]] = field(default_factory=dict)


def every_route(expected: Expected, **overrides: Expected) -> dict[str, Expected]:
    """Return `expected` for every route, except the routes named in `overrides`.

    Keyword names use underscores for slashes: classify_batch, detect_render.
    """
    table = dict.fromkeys(ROUTES, expected)
    table.update({name.replace("_", "/"): value for name, value in overrides.items()})
    return table


def image_rejected(status: int, code: str, fragment: str) -> dict[str, Expected]:
    """Return the responses to an image that every route rejects (on the batch, its entry)."""
    return every_route(
        Expected(status, code, fragment),
        classify_batch=Expected(200, code, fragment, entry=True),
    )


def served(size: tuple[int, int]) -> dict[str, Expected]:
    return every_route(Expected(200, size=size))


# Inputs -------------------------------------------------------------------------


def gradient(size: tuple[int, int]) -> Image.Image:
    """A smooth RGB image, which compresses well even at 12 megapixels."""
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack(
        [np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
         np.full((height, width), 96, dtype=np.float32)],
        axis=-1,
    )  # fmt: skip
    return Image.fromarray(pixels.astype(np.uint8))


def random_bytes() -> bytes:
    data = np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    # No image signature may start the data by chance.
    return b"\x00" + data


def cmyk_jpeg(*, adobe_marker: bool) -> bytes:
    """A red CMYK JPEG. Pillow writes Adobe-inverted values with the APP14 marker."""
    data = encode(Image.new("CMYK", (48, 32), (0, 255, 255, 0)), "JPEG", quality=95)
    return data if adobe_marker else without_jpeg_segment(data, 0xEE)


def gray16_png() -> bytes:
    pixels = np.linspace(0, 65535, 48 * 32).astype("<u2")
    return encode(Image.frombytes("I;16", (48, 32), pixels.tobytes()), "PNG")


def palette_png_with_transparency() -> bytes:
    image = Image.new("P", (48, 32), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 24, 32))
    return encode(image, "PNG", transparency=1)


def la_png() -> bytes:
    return encode(Image.new("LA", (48, 32), (128, 200)), "PNG")


def rgba_png() -> bytes:
    return encode(Image.new("RGBA", (48, 32), (255, 0, 0, 128)), "PNG")


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (48, 32), colour) for colour in (RED, (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def multipage_tiff() -> bytes:
    pages = [Image.new("RGB", (48, 32), RED), Image.new("RGB", (24, 16), (0, 0, 255))]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def exif_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    return encode(Image.new("RGB", EXIF_STORED_SIZE, RED), "JPEG", quality=95, exif=exif)


def displayed_size(orientation: int) -> tuple[int, int]:
    width, height = EXIF_STORED_SIZE
    return (height, width) if orientation >= 5 else (width, height)


# The corpus ---------------------------------------------------------------------


def build_cases() -> list[Case]:
    """Return every case, built afresh."""
    png = solid_png(RED)
    not_accepted = "is not accepted"
    cases = [
        Case(
            "empty_body",
            "empty body with an image content type",
            every_route(
                Expected(400, "empty_body", "the request body is empty"),
                classify_batch=Expected(415, "unsupported_media_type", not_accepted),
            ),
            body=b"",
            content_type="image/jpeg",
        ),
        Case(
            "empty_file_part",
            "multipart form whose file part has zero bytes",
            every_route(
                Expected(400, "empty_body", "the form field 'file' is empty"),
                classify_batch=Expected(200, "empty_body", "empty", entry=True),
            ),
            files=[("file", ("empty.png", b"", "image/png"))],
        ),
        Case(
            "truncated_jpeg",
            "JPEG cut in the middle of its pixel data",
            image_rejected(400, "corrupt_image", "truncated"),
            image=truncated_jpeg(),
            content_type="image/jpeg",
        ),
        Case(
            "truncated_png",
            "PNG cut in the middle of its IDAT chunk",
            image_rejected(400, "corrupt_image", "truncated"),
            image=truncated_png(),
            content_type="image/png",
        ),
        Case(
            "random_bytes",
            "4 KiB of random bytes sent as image/png",
            image_rejected(415, "unsupported_media_type", "not a supported image"),
            image=random_bytes(),
            content_type="image/png",
        ),
        Case(
            "text_file",
            "a text file sent as text/plain",
            every_route(Expected(415, "unsupported_media_type", not_accepted)),
            body=b"just some text, not pixels\n",
            content_type="text/plain",
        ),
        Case(
            "png_declares_50000x50000",
            "PNG whose header declares 50000x50000 pixels but carries one row",
            image_rejected(413, "payload_too_large", "50000x50000"),
            image=png_header_only(50_000, 50_000),
            content_type="image/png",
        ),
        Case(
            "jpeg_12_megapixels",
            "valid 4000x3000 JPEG",
            served((4000, 3000)),
            image=encode(gradient((4000, 3000)), "JPEG", quality=85),
            content_type="image/jpeg",
        ),
        Case(
            "cmyk_jpeg_plain",
            "CMYK JPEG without the Adobe APP14 marker",
            served((48, 32)),
            image=cmyk_jpeg(adobe_marker=False),
            content_type="image/jpeg",
        ),
        Case(
            "cmyk_jpeg_adobe",
            "Adobe-inverted CMYK JPEG (APP14 marker)",
            served((48, 32)),
            image=cmyk_jpeg(adobe_marker=True),
            content_type="image/jpeg",
        ),
        Case(
            "gray16_png",
            "16-bit grayscale PNG",
            served((48, 32)),
            image=gray16_png(),
            content_type="image/png",
        ),
        Case(
            "palette_png_transparent",
            "palette PNG with a transparent palette entry",
            served((48, 32)),
            image=palette_png_with_transparency(),
            content_type="image/png",
        ),
        Case(
            "la_png",
            "grayscale PNG with alpha (LA)",
            served((48, 32)),
            image=la_png(),
            content_type="image/png",
        ),
        Case(
            "rgba_png",
            "RGBA PNG, half transparent",
            served((48, 32)),
            image=rgba_png(),
            content_type="image/png",
        ),
        Case(
            "animated_gif",
            "animated GIF of 3 frames (the first is used)",
            served((48, 32)),
            image=animated_gif(),
            content_type="image/gif",
        ),
        Case(
            "multipage_tiff",
            "TIFF of 2 pages (the first is used)",
            served((48, 32)),
            image=multipage_tiff(),
            content_type="image/tiff",
        ),
        *[
            Case(
                f"exif_orientation_{orientation}",
                f"JPEG stored as 40x20 with EXIF orientation {orientation}",
                served(displayed_size(orientation)),
                image=exif_jpeg(orientation),
                content_type="image/jpeg",
            )
            for orientation in range(1, 9)
        ],
        Case(
            "png_sent_as_text_plain",
            "valid PNG with the content type text/plain",
            every_route(Expected(415, "unsupported_media_type", "'text/plain' is not accepted")),
            body=png,
            content_type="text/plain",
        ),
        Case(
            "png_sent_as_jpeg",
            "valid PNG with the content type image/jpeg (the bytes decide the format)",
            served((64, 48)),
            image=png,
            content_type="image/jpeg",
        ),
        Case(
            "base64_in_json",
            "base64 text of a PNG inside a JSON body",
            every_route(
                Expected(415, "unsupported_media_type", "'application/json' is not accepted")
            ),
            body=json.dumps({"image": base64.b64encode(png).decode()}).encode(),
            content_type="application/json",
        ),
        Case(
            "form_without_file_field",
            "multipart form whose only part is named 'image'",
            every_route(Expected(400, "invalid_request", "no field named 'file'")),
            files=[("image", ("red.png", png, "image/png"))],
        ),
        Case(
            "parameter_out_of_range",
            "valid PNG with a query parameter out of its range",
            every_route(
                Expected(422, "invalid_parameter", "'conf' must be between 0 and 1"),
                classify=Expected(422, "invalid_parameter", "top_k"),
                classify_batch=Expected(422, "invalid_parameter", "top_k"),
                analyze=Expected(422, "invalid_parameter", "'margin' must be between 0 and 1"),
            ),
            image=png,
            content_type="image/png",
            params={
                "classify": {"top_k": "0"},
                "classify/batch": {"top_k": "0"},
                "detect": {"conf": "1.5"},
                "detect/render": {"conf": "1.5"},
                "analyze": {"margin": "2"},
            },
        ),
        Case(
            "unknown_model",
            "valid PNG naming a model that is not served",
            every_route(
                Expected(404, "model_not_found", "'no-such-model' not found"),
            ),
            image=png,
            content_type="image/png",
            params={
                route: {"classifier_model" if route == "analyze" else "model": "no-such-model"}
                for route in ROUTES
            },
        ),
    ]
    return cases


# Sending and checking -----------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """What a route answered: status, error code, message and the reported image size."""

    status: int
    code: str | None = None
    message: str = ""
    size: tuple[int, int] | None = None

    def summary(self) -> str:
        if self.code:
            return f"{self.status} `{self.code}`"
        if self.size:
            return f"{self.status}, {self.size[0]}x{self.size[1]}"
        return str(self.status)


def send(client: httpx.Client, gateway_url: str, case: Case, route: str) -> httpx.Response:
    """Send `case` to one gateway route, as the route takes it."""
    url = f"{gateway_url}/v1/{route}"
    params = case.params.get(route, {})
    if case.files is not None:
        return client.post(url, params=params, files=case.files)
    if case.body is not None:
        headers = {"Content-Type": case.content_type}
        return client.post(url, params=params, content=case.body, headers=headers)
    assert case.image is not None  # a case has an image, a body or files
    if route == "classify/batch":
        part = ("file", ("image", case.image, case.content_type))
        return client.post(url, params=params, files=[part])
    headers = {"Content-Type": case.content_type}
    return client.post(url, params=params, content=case.image, headers=headers)


def measure(response: httpx.Response, route: str) -> Measured:
    """Read the status, the error (of the first entry, on the batch route) and the size."""
    if response.status_code != 200:
        error = response.json()["error"]
        return Measured(response.status_code, error["code"], error["message"])
    if route == "detect/render":
        with Image.open(io.BytesIO(response.content)) as rendered:
            return Measured(200, size=rendered.size)
    body: dict[str, Any] = response.json()
    if route == "classify/batch":
        body = body["results"][0]
        if body["error"] is not None:
            return Measured(200, body["error"]["code"], body["error"]["message"])
    return Measured(200, size=(body["image"]["width"], body["image"]["height"]))


def mismatches(expected: Expected, measured: Measured) -> list[str]:
    """Return how `measured` differs from `expected`, or nothing when it matches."""
    problems = []
    if measured.status != expected.status:
        problems.append(f"status {measured.status}, expected {expected.status}")
    if measured.code != expected.code:
        problems.append(f"code {measured.code}, expected {expected.code}")
    if expected.fragment not in measured.message:
        problems.append(f"message {measured.message!r} lacks {expected.fragment!r}")
    if expected.size is not None and measured.size != expected.size:
        problems.append(f"size {measured.size}, expected {expected.size}")
    return problems


# Report -------------------------------------------------------------------------


def expected_summary(expected: Expected) -> str:
    if expected.code is None:
        size = f", {expected.size[0]}x{expected.size[1]}" if expected.size else ""
        return f"{expected.status}{size}"
    entry = " (entry)" if expected.entry else ""
    return f"{expected.status} `{expected.code}`{entry}"


def markdown_table(results: dict[tuple[str, str], Measured], cases: list[Case]) -> str:
    """Return one row per case: each route's expected and measured answer, and a verdict."""
    routes = " | ".join(f"`{route}`" for route in ROUTES)
    lines = [
        f"| case | message contains | {routes} | result |",
        "| --- " * (len(ROUTES) + 3) + "|",
    ]
    for case in cases:
        cells = []
        differences = []
        for route in ROUTES:
            expected = case.expected[route]
            measured = results[(case.name, route)]
            cells.append(f"{expected_summary(expected)} → {measured.summary()}")
            differences += [f"{route}: {problem}" for problem in mismatches(expected, measured)]
        fragments = sorted(
            {f"`{item.fragment}`" for item in case.expected.values() if item.fragment}
        )
        verdict = "; ".join(differences) if differences else "as expected"
        lines.append(
            f"| {case.description} | {', '.join(fragments)} | {' | '.join(cells)} | {verdict} |"
        )
    return "\n".join(lines)


@contextmanager
def local_stack(log_dir: Path) -> Iterator[str]:
    """Start the classifier, the detector (tiny colour models) and the gateway; yield its URL."""
    from tests.detection_models import build_colour_detector_repository
    from tests.onnx_models import build_colour_repository
    from tests.servers import GATEWAY_OPEN_ACCESS_ENV, running_server

    classifiers = build_colour_repository(log_dir / "classifiers")
    detectors = build_colour_detector_repository(log_dir / "detectors")
    with ExitStack() as stack:
        classifier = stack.enter_context(
            running_server(
                "services.classifier.app:create_app",
                {"VS_CLASSIFIER_MODEL_REPOSITORY": str(classifiers)},
                log_dir,
            )
        )
        detector = stack.enter_context(
            running_server(
                "services.detector.app:create_app",
                {"VS_DETECTOR_MODEL_REPOSITORY": str(detectors)},
                log_dir,
            )
        )
        gateway = stack.enter_context(
            running_server(
                "services.gateway.app:create_app",
                {
                    **GATEWAY_OPEN_ACCESS_ENV,
                    "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
                    "VS_GATEWAY_DETECTOR_URL": detector.url,
                    "VS_GATEWAY_SHUTDOWN_DRAIN_SECONDS": "0",
                },
                log_dir,
            )
        )
        yield gateway.url


def main() -> int:
    cases = build_cases()
    with (
        tempfile.TemporaryDirectory() as folder,
        local_stack(Path(folder)) as gateway_url,
        httpx.Client(timeout=120.0) as client,
    ):
        results = {
            (case.name, route): measure(send(client, gateway_url, case, route), route)
            for case in cases
            for route in ROUTES
        }
    print(markdown_table(results, cases))
    failed = sum(
        1 for case in cases for route in ROUTES
        if mismatches(case.expected[route], results[(case.name, route)])
    )  # fmt: skip
    print(f"\n{len(results) - failed} of {len(results)} responses as expected", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
