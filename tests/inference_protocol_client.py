"""tritonclient helpers shared by the Open Inference Protocol tests."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.servers import Server


def open_client(server: Server) -> triton.InferenceServerClient:
    """Return a tritonclient HTTP client for `server`, with a timeout for slow CPU inference."""
    return triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=120)


def image_input(images: list[bytes], binary: bool = True) -> triton.InferInput:
    """Return the `image` input: raw files as binary data, or base64 text in JSON."""
    if binary:
        data = np.array(images, dtype=np.object_)
    else:
        data = np.array([base64.b64encode(image) for image in images], dtype=np.object_)
    return triton.InferInput("image", [len(images)], "BYTES").set_data_from_numpy(data, binary)


def triton_error(call: Callable[[], Any]) -> InferenceServerException:
    """Return the InferenceServerException that `call` raises."""
    try:
        call()
    except InferenceServerException as error:
        return error
    raise AssertionError("the request succeeded, but an error response was expected")


def as_text(values: np.ndarray) -> list[str]:
    """Return BYTES output elements as text, whether they arrived as binary data or JSON."""
    return [value.decode() if isinstance(value, bytes) else value for value in values]
