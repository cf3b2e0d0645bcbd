"""The limit: decode, preprocess and `session.run` in a plain Python loop, without HTTP.

It calls the services' own functions (`decode_image`, `preprocess`,
`letterbox_tensor`) with the arguments the services pass, and builds the
onnxruntime session with the services' `session_options()`, so the only work
it leaves out is HTTP, JSON, the worker-thread hand-off and postprocessing.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.baseline_models import BaselineModel
from bench.stats import CellStats, summarize
from bench.workload import BenchImage
from services.common.imaging import decode_image
from services.common.letterbox import letterbox_tensor
from services.common.preprocess import draft_request, preprocess
from services.common.settings import ModelServiceSettings

# The services' default pixel limit: no benchmark image comes near it.
MAX_PIXELS: int = ModelServiceSettings.model_fields["max_pixels"].default


class InProcessModel(BaselineModel):
    """A model with the services' own input preparation: bytes in, model output out."""

    def prepare(self, data: bytes) -> np.ndarray:
        """Decode and preprocess one image as the classifier or the detector service does."""
        spec = self.metadata.preprocess
        if self.metadata.task == "detection":
            # The detector decodes at full size, without JPEG draft scaling.
            decoded = decode_image(data, max_pixels=MAX_PIXELS)
            tensor, _ = letterbox_tensor(decoded.image, spec)
            return tensor
        decoded = decode_image(data, max_pixels=MAX_PIXELS, draft_size=draft_request(spec))
        return preprocess(decoded.image, spec)

    def process(self, data: bytes) -> np.ndarray:
        return self.run(self.prepare(data))


def measure_loop(
    work: Callable[[bytes], object], images: list[BenchImage], warmup: float, duration: float
) -> CellStats:
    """Call `work` on the images in turn for `warmup` + `duration` seconds; time the last part."""
    cycle = itertools.cycle(images)
    started = time.perf_counter()
    while time.perf_counter() - started < warmup:
        work(next(cycle).jpeg)

    latencies_ms = []
    window_start = time.perf_counter()
    while (now := time.perf_counter()) - window_start < duration:
        work(next(cycle).jpeg)
        latencies_ms.append((time.perf_counter() - now) * 1000.0)
    return summarize(latencies_ms, time.perf_counter() - window_start)


def measure_limit(
    version_dir: Path, images: list[BenchImage], warmup: float, duration: float
) -> CellStats:
    """Measure decode + preprocess + `session.run` of one model in this process."""
    model = InProcessModel.load(version_dir)
    return measure_loop(model.process, images, warmup, duration)
