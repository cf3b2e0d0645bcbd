"""Detector latency at batch 1: the HTTP service against a bare onnxruntime `session.run`.

    python -m bench.detector_latency --repository models --model digits-yolo \\
        --image photo.jpg --requests 50 --threads 1

It starts the detector as a local uvicorn process on a free loopback port and
sends the same image `--requests` times, one request after another. It also
runs the same model with onnxruntime in this process on the same letterboxed
tensor, with the same intra-op thread count. It prints p50, p90 and mean
latency in ms of:

- `session.run` alone (onnxruntime, this process)
- the service's own inference stage and whole pipeline (`timings_ms`)
- the HTTP round trip seen by the client

and writes them, with the settings of the run, to `--output` as JSON. The
difference between the rows is the cost of decoding, letterboxing, NMS,
HTTP and JSON. Not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image

from scripts.local_stack import running_server
from services.common.imaging import decode_image
from services.common.letterbox import letterbox_tensor
from services.common.metadata import MODEL_FILENAME, read_metadata
from services.common.repository import scan_versions, session_options

logger = logging.getLogger(__name__)

DETECTOR_APP = "services.detector.app:create_app"
MAX_PIXELS = 50_000_000


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repository", type=Path, required=True, help="model repository with a detection model"
    )
    parser.add_argument("--model", required=True, help="name of the detection model to measure")
    parser.add_argument(
        "--image",
        type=Path,
        default=None,
        help="image file to send (default: scikit-image's 600x400 coffee photo as PNG)",
    )
    parser.add_argument("--requests", type=int, default=50, help="measured requests per row")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured requests before each row")
    parser.add_argument(
        "--threads", type=int, default=1, help="onnxruntime intra-op threads on both sides"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("runs/bench/detector_latency.json"),
        help="JSON file for the results",
    )
    return parser


def load_image(path: Path | None) -> bytes:
    if path is not None:
        return path.read_bytes()
    import skimage.data  # a training dependency, so imported only for the default image

    buffer = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(buffer, "PNG")
    return buffer.getvalue()


def summarize(milliseconds: Sequence[float]) -> dict[str, float]:
    ordered = sorted(milliseconds)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


def measure_session(
    version_dir: Path, image: bytes, threads: int, warmup: int, count: int
) -> list[float]:
    """Time `session.run` on the letterboxed tensor the service would build from `image`."""
    metadata = read_metadata(version_dir)
    session = ort.InferenceSession(
        str(version_dir / MODEL_FILENAME),
        session_options(intra_op_threads=threads),
        providers=["CPUExecutionProvider"],
    )
    decoded = decode_image(image, max_pixels=MAX_PIXELS)
    tensor, _ = letterbox_tensor(decoded.image, metadata.preprocess)
    feeds = {metadata.input_name: tensor[np.newaxis]}
    outputs = [metadata.output_names[0]]

    timings = []
    for index in range(warmup + count):
        started = time.perf_counter()
        session.run(outputs, feeds)
        if index >= warmup:
            timings.append((time.perf_counter() - started) * 1000.0)
    return timings


def measure_service(
    url: str, model: str, image: bytes, warmup: int, count: int
) -> dict[str, list[float]]:
    """Send `image` to /v1/detect one request at a time and collect client and server timings."""
    timings: dict[str, list[float]] = {"round_trip": [], "inference": [], "total": []}
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for index in range(warmup + count):
            started = time.perf_counter()
            response = client.post(
                "/v1/detect",
                params={"model": model},
                content=image,
                headers={"Content-Type": "application/octet-stream"},
            )
            elapsed = (time.perf_counter() - started) * 1000.0
            response.raise_for_status()
            if index < warmup:
                continue
            stages = response.json()["timings_ms"]
            timings["round_trip"].append(elapsed)
            timings["inference"].append(stages["inference"])
            timings["total"].append(stages["total"])
    return timings


def live_version_dir(repository: Path, model: str) -> Path:
    versions = scan_versions(repository)
    if model not in versions:
        raise SystemExit(
            f"model {model!r} not found in {repository}; models: {', '.join(versions) or '(none)'}"
        )
    return repository / model / str(versions[model][-1])


def print_table(rows: dict[str, dict[str, float]]) -> None:
    width = max(len(name) for name in rows)
    print(f"{'stage':<{width}}  {'p50 ms':>9}  {'p90 ms':>9}  {'mean ms':>9}")
    for name, row in rows.items():
        print(f"{name:<{width}}  {row['p50']:>9.2f}  {row['p90']:>9.2f}  {row['mean']:>9.2f}")


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.requests < 1 or args.warmup < 0 or args.threads < 1:
        raise SystemExit("--requests and --threads must be at least 1, --warmup at least 0")
    image = load_image(args.image)
    version_dir = live_version_dir(args.repository, args.model)

    session_ms = measure_session(version_dir, image, args.threads, args.warmup, args.requests)
    env = {
        "VS_DETECTOR_MODEL_REPOSITORY": str(args.repository.resolve()),
        "VS_DETECTOR_INTRA_OP_THREADS": str(args.threads),
        "VS_DETECTOR_WORKER_THREADS": "1",
        "VS_DETECTOR_LOG_LEVEL": "WARNING",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with running_server(DETECTOR_APP, env, args.output.parent) as server:
        service_ms = measure_service(server.url, args.model, image, args.warmup, args.requests)

    rows = {
        "onnxruntime session.run": summarize(session_ms),
        "service inference stage": summarize(service_ms["inference"]),
        "service pipeline (timings_ms.total)": summarize(service_ms["total"]),
        "HTTP round trip": summarize(service_ms["round_trip"]),
    }
    print_table(rows)
    result = {
        "model": args.model,
        "version_dir": str(version_dir),
        "image_bytes": len(image),
        "requests": args.requests,
        "warmup": args.warmup,
        "intra_op_threads": args.threads,
        "onnxruntime": ort.__version__,
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "latency_ms": rows,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    # httpx logs every request at INFO, which would bury the table.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    main(get_args_parser().parse_args())
