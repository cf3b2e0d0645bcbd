"""One run of the drift job: read the windows, compare, push the gauges, write the reports.

A run never raises for an unreachable Redis, Pushgateway or Prometheus. It logs
the error, records it in the report and goes on with what it can still do.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from monitoring.drift.bottlenecks import ModelBottleneck, PrometheusQueryError, stage_bottlenecks
from monitoring.drift.comparison import VersionResult, compare_version
from monitoring.drift.pushing import push_model, push_thresholds
from monitoring.drift.report import write_reports
from monitoring.drift.settings import MonitorSettings
from monitoring.drift.window import StreamWindow, find_models, read_window
from services.common.redis_keys import redacted_redis_url

logger = logging.getLogger(__name__)


@dataclass
class StreamSummary:
    service: str
    model: str
    key: str
    records: int
    malformed: int


@dataclass
class DriftRun:
    """Everything one run found, as written to the reports."""

    started_at: float
    finished_at: float = 0.0
    results: list[VersionResult] = field(default_factory=list)
    streams: list[StreamSummary] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bottlenecks: list[ModelBottleneck] = field(default_factory=list)
    bottleneck_note: str = ""
    report_paths: list[Path] = field(default_factory=list)

    def error(self, message: str, **context: object) -> None:
        logger.error(message, extra=context)
        details = ", ".join(f"{key}={value}" for key, value in context.items())
        self.errors.append(f"{message} ({details})" if details else message)


def run_once(settings: MonitorSettings) -> DriftRun:
    """Check every watched model once and write the reports; return what the run found."""
    run = DriftRun(started_at=time.time())
    logger.info("drift run started", extra={"services": settings.services})

    windows = read_windows(settings, run)
    for window in windows:
        results = [
            compare_version(window.service, window.model, version, records, settings)
            for version, records in window.by_version().items()
        ]
        run.results.extend(results)
        for result in results:
            logger.info(
                "drift verdict",
                extra={
                    "model_service": result.service,
                    "model": result.model,
                    "version": result.version,
                    "verdict": result.verdict,
                    "samples": result.samples,
                    "detail": result.message,
                },
            )
        if settings.pushgateway_url:
            push_results(settings, window, results, run)

    if settings.pushgateway_url:
        try:
            push_thresholds(settings)
        except OSError as error:
            run.error(
                "pushing the drift thresholds failed", url=settings.pushgateway_url, error=error
            )

    collect_bottlenecks(settings, run)
    run.finished_at = time.time()
    try:
        run.report_paths = write_reports(run, settings)
    except OSError as error:
        run.error("writing the drift reports failed", report_dir=settings.report_dir, error=error)
    logger.info(
        "drift run finished",
        extra={
            "versions": len(run.results),
            "drifting": sum(result.verdict == "drift" for result in run.results),
            "errors": len(run.errors),
            "seconds": round(run.finished_at - run.started_at, 3),
        },
    )
    return run


def read_windows(settings: MonitorSettings, run: DriftRun) -> list[StreamWindow]:
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )
    windows = []
    try:
        for service in settings.services:
            try:
                models = find_models(client, settings.redis_key_prefix, service)
            except redis.RedisError as error:
                run.error(
                    "reading the prediction log failed",
                    model_service=service,
                    redis_url=redacted_redis_url(settings.redis_url),
                    error=error,
                )
                continue
            for model in models:
                window = read_model_window(client, settings, service, model, run)
                if window is not None:
                    windows.append(window)
    finally:
        client.close()
    return windows


def read_model_window(
    client: redis.Redis, settings: MonitorSettings, service: str, model: str, run: DriftRun
) -> StreamWindow | None:
    try:
        window = read_window(
            client,
            settings.redis_key_prefix,
            service,
            model,
            max_records=settings.window_max_records,
            max_age_seconds=settings.window_max_age_seconds,
        )
    except redis.RedisError as error:
        run.error(
            "reading the prediction log failed",
            model_service=service,
            model=model,
            redis_url=redacted_redis_url(settings.redis_url),
            error=error,
        )
        return None
    run.streams.append(
        StreamSummary(service, model, window.key, len(window.records), window.malformed)
    )
    return window


def push_results(
    settings: MonitorSettings, window: StreamWindow, results: list[VersionResult], run: DriftRun
) -> None:
    try:
        push_model(settings, window.service, window.model, results, run.started_at)
    except OSError as error:
        # urllib's URLError, raised when the Pushgateway is down, is an OSError.
        run.error(
            "pushing the drift gauges failed",
            model_service=window.service,
            model=window.model,
            url=settings.pushgateway_url,
            error=error,
        )


def collect_bottlenecks(settings: MonitorSettings, run: DriftRun) -> None:
    if not settings.prometheus_url:
        run.bottleneck_note = "skipped: VS_MONITOR_PROMETHEUS_URL is not set"
        return
    try:
        run.bottlenecks = stage_bottlenecks(
            settings.prometheus_url,
            list(settings.services),
            settings.bottleneck_window,
            settings.prometheus_timeout_seconds,
        )
    except (PrometheusQueryError, httpx.HTTPError) as error:
        run.bottleneck_note = f"failed: {error}"
        run.error("querying Prometheus for stage latencies failed", error=error)
        return
    if not run.bottlenecks:
        run.bottleneck_note = (
            f"no requests with stage timings in the last {settings.bottleneck_window}"
        )
