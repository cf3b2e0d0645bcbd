"""Soak run: a long, bounded load through the gateway that counts errors and watches memory.

    python -m bench.soak --repository models --requests 20000 --concurrency 8

It starts the classifier, the detector and the gateway as local uvicorn
processes on free loopback ports, then sends `--requests` requests through
the gateway from `--concurrency` threads: classify, classify/batch, detect
and analyze, in turn, with JPEG and PNG images of sizes from 64x48 to
1920x1080 built in memory. Every `--sample-seconds` it reads the resident
memory (VmRSS in /proc/<pid>/status) of each service process.

It prints, and writes to `--output` as JSON, the responses by status, and the
RSS of each service at the start, after the first `--warmup-requests`
requests, and at the end. The run passes when no request failed and no
service grew by `--max-growth-mb` or more after the warm-up; the exit code is
1 otherwise. Not a test: it takes minutes, and memory depends on the machine.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import os
import platform
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from scripts.local_stack import GATEWAY_OPEN_ACCESS_ENV, Server, running_server

logger = logging.getLogger(__name__)

IMAGE_SIZES = ((64, 48), (320, 240), (640, 480), (1280, 960), (1920, 1080))
ROUTES = ("classify", "classify/batch", "detect", "analyze")
MEBIBYTE = 1024 * 1024


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repository", type=Path, default=Path("models"), help="model repository to serve"
    )
    parser.add_argument("--classifier-model", default="digits-cnn", help="classifier to call")
    parser.add_argument("--detector-model", default="digits-yolov8n", help="detector to call")
    parser.add_argument("--requests", type=int, default=20_000, help="requests to send in all")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument(
        "--warmup-requests",
        type=int,
        default=2_000,
        help="requests after which RSS is taken as the baseline for growth",
    )
    parser.add_argument(
        "--sample-seconds", type=float, default=5.0, help="seconds between RSS samples"
    )
    parser.add_argument(
        "--max-growth-mb",
        type=float,
        default=50.0,
        help="largest RSS growth after the warm-up, in MiB, that passes",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("runs/soak/soak.json"), help="JSON report to write"
    )
    return parser


def build_images() -> list[tuple[str, bytes, str]]:
    """Return (name, bytes, content type) for a JPEG and a PNG of every size in IMAGE_SIZES."""
    rng = np.random.default_rng(0)
    images = []
    for width, height in IMAGE_SIZES:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        # Smooth the noise a little, so that the files have realistic sizes.
        picture = Image.fromarray(pixels).resize((width // 4 or 1, height // 4 or 1))
        picture = picture.resize((width, height), Image.Resampling.BILINEAR)
        for image_format, content_type in (("JPEG", "image/jpeg"), ("PNG", "image/png")):
            buffer = io.BytesIO()
            picture.save(buffer, image_format)
            images.append(
                (f"{width}x{height}.{image_format.lower()}", buffer.getvalue(), content_type)
            )
    return images


def rss_bytes(pid: int) -> int:
    """Return the resident set size of process `pid`, from VmRSS in /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")


@dataclass
class MemoryLog:
    """RSS samples of every service: (seconds since start, requests done, RSS bytes)."""

    pids: dict[str, int]
    samples: dict[str, list[tuple[float, int, int]]] = field(default_factory=dict)

    def sample(self, elapsed: float, done: int) -> None:
        for name, pid in self.pids.items():
            self.samples.setdefault(name, []).append((elapsed, done, rss_bytes(pid)))

    def summary(self, warmup_requests: int) -> dict[str, dict[str, float]]:
        result = {}
        for name, samples in self.samples.items():
            after_warmup = [rss for _, done, rss in samples if done >= warmup_requests]
            baseline = after_warmup[0] if after_warmup else samples[-1][2]
            result[name] = {
                "start_mb": samples[0][2] / MEBIBYTE,
                "after_warmup_mb": baseline / MEBIBYTE,
                "end_mb": samples[-1][2] / MEBIBYTE,
                "max_after_warmup_mb": max(after_warmup or [baseline]) / MEBIBYTE,
                "growth_after_warmup_mb": (samples[-1][2] - baseline) / MEBIBYTE,
            }
        return result


class Load:
    """Sends the requests and counts the responses by route and status."""

    def __init__(self, gateway_url: str, args: argparse.Namespace) -> None:
        self._url = gateway_url
        self._args = args
        self._images = build_images()
        self._lock = threading.Lock()
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self.done = 0

    def send(self, index: int, client: httpx.Client) -> None:
        route = ROUTES[index % len(ROUTES)]
        name, data, content_type = self._images[(index // len(ROUTES)) % len(self._images)]
        try:
            response = self._post(client, route, data, content_type)
            status = str(response.status_code)
        except httpx.HTTPError as error:
            status = type(error).__name__
            response = None
        with self._lock:
            self.done += 1
            self.answers[f"{route} {status}"] += 1
            if status != "200" and len(self.failures) < 20:
                detail = response.text[:200] if response is not None else status
                self.failures.append(f"{route} {name}: {status} {detail}")

    def _post(
        self, client: httpx.Client, route: str, data: bytes, content_type: str
    ) -> httpx.Response:
        url = f"{self._url}/v1/{route}"
        if route == "classify/batch":
            files = [("file", (f"image-{i}", data, content_type)) for i in range(4)]
            return client.post(url, params={"model": self._args.classifier_model}, files=files)
        params = {"model": self._args.detector_model}
        if route == "classify":
            params = {"model": self._args.classifier_model}
        if route == "analyze":
            params["classifier_model"] = self._args.classifier_model
        headers = {"Content-Type": content_type}
        return client.post(url, params=params, content=data, headers=headers)


@contextmanager
def services(repository: Path, log_dir: Path) -> Iterator[dict[str, Server]]:
    """Run the classifier, the detector and the gateway until the block exits."""
    with ExitStack() as stack:
        model_env = {"MODEL_REPOSITORY": str(repository.resolve())}
        classifier = stack.enter_context(
            running_server(
                "services.classifier.app:create_app",
                {f"VS_CLASSIFIER_{key}": value for key, value in model_env.items()},
                log_dir,
            )
        )
        detector = stack.enter_context(
            running_server(
                "services.detector.app:create_app",
                {f"VS_DETECTOR_{key}": value for key, value in model_env.items()},
                log_dir,
            )
        )
        gateway_env = {
            **GATEWAY_OPEN_ACCESS_ENV,
            "VS_GATEWAY_CLASSIFIER_URL": classifier.url,
            "VS_GATEWAY_DETECTOR_URL": detector.url,
            "VS_GATEWAY_SHUTDOWN_DRAIN_SECONDS": "0",
            "VS_GATEWAY_LOG_LEVEL": "WARNING",
        }
        gateway = stack.enter_context(
            running_server("services.gateway.app:create_app", gateway_env, log_dir)
        )
        yield {"classifier": classifier, "detector": detector, "gateway": gateway}


def run(args: argparse.Namespace, servers: dict[str, Server]) -> dict[str, Any]:
    pids = {name: server.process.pid for name, server in servers.items() if server.process}
    memory = MemoryLog(pids)
    load = Load(servers["gateway"].url, args)
    started = time.monotonic()
    memory.sample(0.0, 0)
    stop = threading.Event()

    def sample_until_stopped() -> None:
        while not stop.wait(args.sample_seconds):
            memory.sample(time.monotonic() - started, load.done)

    sampler = threading.Thread(target=sample_until_stopped, daemon=True)
    sampler.start()
    indexes = itertools.count()
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=60.0) as client:
            while True:
                with lock:
                    index = next(indexes)
                if index >= args.requests:
                    return
                load.send(index, client)

    with ThreadPoolExecutor(max_workers=args.concurrency) as executor:
        for future in [executor.submit(worker) for _ in range(args.concurrency)]:
            future.result()
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    memory.sample(elapsed, load.done)

    errors = sum(count for key, count in load.answers.items() if not key.endswith(" 200"))
    memory_summary = memory.summary(args.warmup_requests)
    worst_growth = max(item["growth_after_warmup_mb"] for item in memory_summary.values())
    return {
        "command": "python -m bench.soak "
        + " ".join(f"--{key.replace('_', '-')} {value}" for key, value in vars(args).items()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
        "requests": load.done,
        "seconds": round(elapsed, 1),
        "requests_per_second": round(load.done / elapsed, 1),
        "answers": dict(sorted(load.answers.items())),
        "errors": errors,
        "first_failures": load.failures,
        "memory": memory_summary,
        "memory_samples": memory.samples,
        "passed": errors == 0 and worst_growth < args.max_growth_mb,
    }


def print_report(report: dict[str, Any]) -> None:
    print(
        f"{report['requests']} requests in {report['seconds']} s "
        f"({report['requests_per_second']} requests/s), errors: {report['errors']}"
    )
    for key, count in report["answers"].items():
        print(f"  {key}: {count}")
    for failure in report["first_failures"]:
        print(f"  failed: {failure}")
    print("RSS in MiB: start, after warm-up, end, max after warm-up, growth after warm-up")
    for name, item in report["memory"].items():
        print(
            f"  {name}: {item['start_mb']:.1f}, {item['after_warmup_mb']:.1f}, "
            f"{item['end_mb']:.1f}, {item['max_after_warmup_mb']:.1f}, "
            f"{item['growth_after_warmup_mb']:+.1f}"
        )
    print("passed" if report["passed"] else "FAILED")


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        raise SystemExit("--requests and --concurrency must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # httpx logs every request at INFO, which would bury the report.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with (
        tempfile.TemporaryDirectory() as log_dir,
        services(args.repository, Path(log_dir)) as running,
    ):
        report = run(args, running)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str))
    print_report(report)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
