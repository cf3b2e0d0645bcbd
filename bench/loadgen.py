"""Closed-loop HTTP load generator, run in its own process so that it shares no event loop
with the server under test.

    python -m bench.loadgen --url http://127.0.0.1:8000/v1/classify --param model=NAME \\
        --image a.jpg --image b.jpg --concurrency 8 --warmup 5 --duration 20

`--concurrency` tasks on one asyncio loop each send a request, wait for the
response and send the next one, taking the images in turn. Each image goes
as a multipart form with one file field, the form every compared server
accepts. Requests that complete during the first `--warmup` seconds are not
counted. Throughput is the number of requests completed inside the measured
window divided by its length, and the latencies are those of the successful
ones among them. The result is printed as one JSON object on stdout.
`run_load` is the parent-side call that starts this process and parses it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from scripts.local_stack import ROOT

# Maximum characters of a failed response body kept in the result, to show why it failed.
_ERROR_SNIPPET_CHARS = 300


@dataclass(frozen=True)
class LoadSpec:
    """One cell of load: where to send, what, how many at a time and for how long."""

    url: str
    images: Sequence[Path]
    concurrency: int
    warmup: float
    duration: float
    params: dict[str, str] = field(default_factory=dict)
    file_field: str = "file"


@dataclass(frozen=True)
class LoadResult:
    """Measurements of the window after the warm-up."""

    latencies_ms: list[float]
    window_seconds: float
    status_counts: dict[str, int]
    errors: int
    client_cpu_seconds: float
    first_error: str | None


def run_load(spec: LoadSpec, timeout_margin: float = 120.0) -> LoadResult:
    """Run the load generator in a child process with the same interpreter and return its result."""
    command = [
        sys.executable, "-m", "bench.loadgen",
        "--url", spec.url,
        "--concurrency", str(spec.concurrency),
        "--warmup", str(spec.warmup),
        "--duration", str(spec.duration),
        "--file-field", spec.file_field,
    ]  # fmt: skip
    for name, value in spec.params.items():
        command += ["--param", f"{name}={value}"]
    for path in spec.images:
        command += ["--image", str(path)]
    completed = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=spec.warmup + spec.duration + timeout_margin,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the load generator failed for {spec.url}:\n{completed.stderr}")
    return LoadResult(**json.loads(completed.stdout))


@dataclass
class _Recorder:
    window_start: float
    window_end: float
    latencies_ms: list[float] = field(default_factory=list)
    status_counts: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None

    def record(self, started: float, finished: float, status: str, error_text: str) -> None:
        if not self.window_start <= finished <= self.window_end:
            return
        self.status_counts[status] += 1
        if status == "200":
            self.latencies_ms.append((finished - started) * 1000.0)
        elif self.first_error is None:
            self.first_error = f"{status}: {error_text[:_ERROR_SNIPPET_CHARS]}"


async def _send_until(
    client: httpx.AsyncClient,
    spec: LoadSpec,
    bodies: itertools.cycle[tuple[str, bytes]],
    recorder: _Recorder,
) -> None:
    while time.perf_counter() < recorder.window_end:
        name, content = next(bodies)
        started = time.perf_counter()
        try:
            response = await client.post(
                spec.url,
                params=spec.params,
                files={spec.file_field: (name, content, "image/jpeg")},
            )
            status, error_text = str(response.status_code), response.text
        except httpx.HTTPError as exc:
            status, error_text = type(exc).__name__, str(exc)
        recorder.record(started, time.perf_counter(), status, error_text)


async def generate_load(spec: LoadSpec) -> dict[str, Any]:
    """Send requests as `spec` describes and return the measured window as a JSON-ready dict."""
    bodies = itertools.cycle([(path.name, path.read_bytes()) for path in spec.images])
    limits = httpx.Limits(
        max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency
    )
    cpu_started = time.process_time()
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0)) as client:
        start = time.perf_counter()
        recorder = _Recorder(start + spec.warmup, start + spec.warmup + spec.duration)
        await asyncio.gather(
            *(_send_until(client, spec, bodies, recorder) for _ in range(spec.concurrency))
        )
    status_counts = dict(recorder.status_counts)
    return {
        "latencies_ms": recorder.latencies_ms,
        "window_seconds": spec.duration,
        "status_counts": status_counts,
        "errors": sum(count for status, count in status_counts.items() if status != "200"),
        "client_cpu_seconds": time.process_time() - cpu_started,
        "first_error": recorder.first_error,
    }


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="full URL of the endpoint to POST to")
    parser.add_argument(
        "--image", type=Path, action="append", required=True, help="JPEG file; repeat for more"
    )
    parser.add_argument(
        "--param", action="append", default=[], help="query parameter NAME=VALUE; repeatable"
    )
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--file-field", default="file", help="multipart field name of the image")
    return parser


def parse_spec(args: argparse.Namespace) -> LoadSpec:
    params = {}
    for item in args.param:
        name, separator, value = item.partition("=")
        if not separator:
            raise SystemExit(f"--param {item!r} is not NAME=VALUE")
        params[name] = value
    if args.concurrency < 1 or args.duration <= 0 or args.warmup < 0:
        raise SystemExit("--concurrency must be at least 1, --duration above 0, --warmup >= 0")
    return LoadSpec(
        url=args.url,
        images=args.image,
        concurrency=args.concurrency,
        warmup=args.warmup,
        duration=args.duration,
        params=params,
        file_field=args.file_field,
    )


if __name__ == "__main__":
    result = asyncio.run(generate_load(parse_spec(get_args_parser().parse_args())))
    json.dump(result, sys.stdout)
