"""Serving benchmark: VisionServe against the in-process limit, a naive baseline and BentoML.

    python -m bench.serving --repository models --output runs/bench/serving.json
    python -m bench.serving --quick --targets limit,naive     # a smoke run of a minute

Every server runs on this machine on 127.0.0.1 and gets the same JPEG photos
(`bench.workload`), each as a multipart upload from a load generator in its
own process (`bench.loadgen`). The compared rows are:

- `limit` (a): decode, preprocess and `session.run` in a plain loop, no HTTP.
- `service` and `gateway` (b): the classifier or detector called directly,
  and through the gateway, with dynamic batching off and on.
- `naive` (c): a minimal FastAPI app (`bench.naive_app`).
- `bentoml` (d): BentoML serving the same ONNX files (`bench.bentoml_service`),
  from the virtualenv that `make bench-bentoml-venv` creates.

The limit always runs, because every ratio in the table refers to it. The
size sweep sends single requests of each image size through the gateway, to
compare a 12-megapixel JPEG with a 640x480 one. The command prints the
table and the targets, and writes everything with the machine, the load
average and the versions to `--output` as JSON.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import environment, workload
from bench.baseline_models import live_version_dir
from bench.limit import measure_limit
from bench.profiling import py_spy_path
from bench.report import (
    BENTOML,
    GATEWAY,
    LIMIT,
    NAIVE,
    SERVICE,
    TargetCheck,
    evaluate_targets,
    format_cells,
    format_targets,
    write_json,
)
from bench.runner import HttpTarget, Runner, RunSettings, size_label
from bench.servers import ModelNames, bentoml_server, naive_server, visionserve_stack

logger = logging.getLogger("bench.serving")

TARGET_CHOICES = (LIMIT, "visionserve", NAIVE, BENTOML)
TASK_CHOICES = ("classify", "detect")
DEFAULT_BENTOML_VENV = Path("bench/.venv-bentoml")
LARGE_SIZE = (4000, 3000)
# Maximum characters of a start-up failure (it ends with the server's log) kept in the JSON.
_ERROR_TAIL_CHARS = 2000


def comma_list(choices: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}; got {text!r}")
        return items

    return parse


def concurrency_list(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,8,32; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels must be at least 1; got {text!r}")
    return values


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--repository", type=Path, default=Path("models"), help="model repository")
    add("--classifier-model", default="imagenet-efficientnet-lite0", help="classification model")
    add("--detector-model", default="digits-yolov8n", help="detection model")

    # What runs: the rows of the grid.
    add(
        "--targets",
        type=comma_list(TARGET_CHOICES),
        default=list(TARGET_CHOICES),
        help=f"comma-separated servers from {','.join(TARGET_CHOICES)} (default: all)",
    )
    add(
        "--tasks",
        type=comma_list(TASK_CHOICES),
        default=list(TASK_CHOICES),
        help="comma-separated tasks from classify,detect (default: both)",
    )
    add(
        "--batching",
        type=comma_list(("off", "on")),
        default=["off", "on"],
        help="VisionServe batching modes to run (default: off,on)",
    )
    add(
        "--concurrency",
        type=concurrency_list,
        default=[1, 8, 32],
        help="requests in flight per cell, comma-separated (default: 1,8,32)",
    )

    # How long each cell runs, and the extras.
    add("--warmup", type=float, default=None, help="unmeasured seconds per cell (5; quick: 1)")
    add("--duration", type=float, default=None, help="measured seconds per cell (20; quick: 3)")
    add("--quick", action="store_true", help="short cells and two sweep sizes, for a smoke run")
    add("--no-sweep", dest="sweep", action="store_false", help="skip the image size sweep")
    add(
        "--profile",
        action="store_true",
        help="also record the classifier, detector and gateway with py-spy at concurrency 8",
    )
    add(
        "--bentoml-venv",
        type=Path,
        default=DEFAULT_BENTOML_VENV,
        help=f"virtualenv with BentoML (default: {DEFAULT_BENTOML_VENV})",
    )
    add("--output", type=Path, default=Path("runs/bench/serving.json"), help="JSON result file")
    return parser


def resolve_settings(args: argparse.Namespace) -> RunSettings:
    warmup, duration = (1.0, 3.0) if args.quick else (5.0, 20.0)
    if args.warmup is not None:
        warmup = args.warmup
    if args.duration is not None:
        duration = args.duration
    if warmup < 0 or duration <= 0:
        raise SystemExit("--warmup must be at least 0 and --duration above 0")
    sizes = (workload.GRID_SIZE, LARGE_SIZE) if args.quick else workload.SWEEP_SIZES
    return RunSettings(
        warmup=warmup,
        duration=duration,
        concurrencies=args.concurrency,
        tasks=args.tasks,
        sweep_sizes=sizes if args.sweep else (),
    )


def run_visionserve(runner: Runner, args: argparse.Namespace) -> None:
    for mode in args.batching:
        logger.info("starting VisionServe with batching %s", mode)
        with visionserve_stack(args.repository, runner.log_dir, batching=mode == "on") as servers:
            service_urls = {
                "classify": servers["classifier"].url,
                "detect": servers["detector"].url,
            }
            for task in runner.settings.tasks:
                direct = HttpTarget(SERVICE, service_urls[task], metrics_url=service_urls[task])
                via_gateway = HttpTarget(
                    GATEWAY, servers["gateway"].url, metrics_url=service_urls[task]
                )
                for target in (direct, via_gateway):
                    runner.run_grid(target, task, batching=mode)
            runner.run_sweep(HttpTarget(GATEWAY, servers["gateway"].url), batching=mode)
            if args.profile:
                runner.run_profiles(servers, batching=mode)


def run_baselines(runner: Runner, args: argparse.Namespace, models: ModelNames) -> None:
    if NAIVE in args.targets:
        logger.info("starting the naive baseline")
        with naive_server(args.repository, models, runner.log_dir) as server:
            for task in runner.settings.tasks:
                runner.run_grid(HttpTarget(NAIVE, server.url, versioned=False), task)
    if BENTOML not in args.targets:
        return
    if not (args.bentoml_venv / "bin" / "bentoml").exists():
        reason = f"no BentoML in {args.bentoml_venv}; create it with `make bench-bentoml-venv`"
        logger.warning("skipping BentoML: %s", reason)
        runner.skipped[BENTOML] = reason
        return
    logger.info("starting BentoML")
    try:
        with bentoml_server(args.bentoml_venv, args.repository, models, runner.log_dir) as server:
            for task in runner.settings.tasks:
                runner.run_grid(HttpTarget(BENTOML, server.url, versioned=False), task)
    except (RuntimeError, TimeoutError) as error:
        # The other rows are still worth reporting, so the run goes on without BentoML's.
        logger.error("BentoML failed, its remaining rows are skipped: %s", error)
        runner.skipped[BENTOML] = f"failed: {str(error)[-_ERROR_TAIL_CHARS:]}"
        return
    runner.network[BENTOML] = server.outside_connections()


def main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    settings = resolve_settings(args)
    if args.profile and py_spy_path() is None:
        raise SystemExit("--profile needs py-spy; install it with `pip install py-spy`")
    models = ModelNames(classifier=args.classifier_model, detector=args.detector_model)
    version_dirs = {
        "classify": live_version_dir(args.repository, models.classifier),
        "detect": live_version_dir(args.repository, models.detector),
    }
    machine_before = environment.describe_machine()
    log_dir = args.output.parent / "serving-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    sizes = tuple(dict.fromkeys((workload.GRID_SIZE, *settings.sweep_sizes)))
    logger.info("building the benchmark images (%s)", ", ".join(f"{w}x{h}" for w, h in sizes))
    images = workload.build_images(sizes)

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as folder:
        runner = Runner(settings, models, images, Path(folder), log_dir)
        for task in settings.tasks:
            logger.info("measuring the limit (a) for %s", task)
            stats = measure_limit(
                version_dirs[task], images[workload.GRID_SIZE], settings.warmup, settings.duration
            )
            runner.add_limit(task, stats)
        runner.run_limit_sweep(version_dirs["classify"])
        if "visionserve" in args.targets:
            run_visionserve(runner, args)
        run_baselines(runner, args, models)

    checks = evaluate_targets(
        runner.cells,
        runner.sweep,
        settings.tasks,
        args.batching,
        size_label(workload.GRID_SIZE),
        size_label(LARGE_SIZE),
    )
    print_summary(runner, checks)
    total_seconds = round(time.monotonic() - started, 1)
    meta = {
        "command": " ".join(sys.argv),
        "machine_before": machine_before,
        "machine_after": environment.describe_machine(),
        "versions": {
            **environment.package_versions(),
            "bentoml": environment.bentoml_version(args.bentoml_venv),
        },
        "commit": environment.git_commit(),
        "models": {task: str(path) for task, path in version_dirs.items()},
        "settings": settings.to_json(),
        "total_seconds": total_seconds,
        "batching_setting_present": runner.batching_setting_present(),
    }
    document = {
        "meta": meta,
        "images": {size_label(size): workload.describe(batch) for size, batch in images.items()},
        "cells": [cell.to_json() for cell in runner.cells],
        "sweep": [cell.to_json() for cell in runner.sweep],
        "targets": [check.to_json() for check in checks],
        "profiles": runner.profiles,
        "outside_network_attempts": runner.network,
        "skipped": runner.skipped,
    }
    write_json(args.output, document)
    print(f"\nwrote {args.output} in {total_seconds} s")
    return document


def print_summary(runner: Runner, checks: list[TargetCheck]) -> None:
    print(format_cells(runner.cells))
    if runner.sweep:
        print("\nImage size sweep, classify at concurrency 1:")
        print(format_cells(runner.sweep))
    print("\nTargets:")
    print(format_targets(checks))
    for name, reason in runner.skipped.items():
        print(f"skipped {name}: {reason}")
    for name, attempts in runner.network.items():
        print(f"{name}: {len(attempts)} attempts to reach a non-loopback address")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # httpx logs every request at INFO, which would bury the progress lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    main(get_args_parser().parse_args())
