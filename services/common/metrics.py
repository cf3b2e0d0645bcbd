"""Prometheus metrics shared by every service, and the middleware that records them.

Metric names start with `visionserve_`. Each service process has its own
registry, so tests can run several services in one interpreter. Under several
worker processes (`PROMETHEUS_MULTIPROC_DIR` set), `/metrics` adds up the
values that every worker wrote to that folder instead.
"""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.datastructures import MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.logging import REQUEST_ID_HEADER, reset_request_id, set_request_id
from services.common.multiprocess_metrics import exposition_registry

logger = logging.getLogger(__name__)

# Seconds. Spans a 2 ms cache hit up to a 30 s upstream timeout.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
MAX_REQUEST_ID_LENGTH = 128


class ServiceMetrics:
    """The metrics one service exposes on `/metrics`."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "visionserve_requests_total",
            "HTTP requests by route template, method and status code.",
            ["service", "route", "method", "status"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "visionserve_request_duration_seconds",
            "Whole-request latency in seconds, by route template.",
            ["service", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_latency = Histogram(
            "visionserve_inference_duration_seconds",
            "onnxruntime session.run latency in seconds, by model and version.",
            ["service", "model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.stage_latency = Histogram(
            "visionserve_stage_duration_seconds",
            "Per-request time in seconds of each stage (queue, decode, preprocess, "
            "inference, postprocess), by model.",
            ["service", "model", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._add_batching_metrics()
        self._add_model_metrics()

    def _add_batching_metrics(self) -> None:
        self.batch_size = Histogram(
            "visionserve_batch_size",
            "Images per onnxruntime run of the dynamic batcher, by model.",
            ["service", "model"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        # Summed over live workers, because each worker has its own queue.
        self.queue_depth = Gauge(
            "visionserve_queue_depth",
            "Requests waiting for a batch, by model.",
            ["service", "model"],
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.queue_rejections = Counter(
            "visionserve_queue_rejected_total",
            "Requests rejected because the batch queue of the model was full.",
            ["service", "model"],
            registry=self.registry,
        )

    def _add_model_metrics(self) -> None:
        # The max over live workers: 1 while at least one worker serves the version.
        self.model_info = Gauge(
            "visionserve_model_info",
            "1 for the live version of each model, 0 for a version no longer live.",
            ["service", "model", "version"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.predictions = Counter(
            "visionserve_predictions_total",
            "Predicted labels: the top-1 label of each classified image, and the label "
            "of each detection.",
            ["service", "model", "label"],
            registry=self.registry,
        )
        self.top1_confidence = Histogram(
            "visionserve_top1_confidence",
            "Top-1 probability of each classified image, and the score of each detection.",
            ["service", "model"],
            buckets=CONFIDENCE_BUCKETS,
            registry=self.registry,
        )
        self.reloads = Counter(
            "visionserve_model_reloads_total",
            "Model reloads while the service runs, by result: success or failure.",
            ["service", "model", "result"],
            registry=self.registry,
        )
        self.prediction_log_records = Counter(
            "visionserve_prediction_log_records_total",
            "Prediction records for the Redis prediction log, by result: written, or "
            "dropped because the queue was full, Redis failed or the service stopped.",
            ["service", "model", "result"],
            registry=self.registry,
        )

    def render(self) -> Response:
        """Render the metrics in the Prometheus text format, summed over all workers."""
        registry = exposition_registry(self.registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _route_template(request: Request) -> str:
    """Return the matched route path (`/v1/models/{name}`), never the raw URL.

    Raw URLs would give every 404 probe its own label value. Call it after routing:
    FastAPI 0.165 keeps an included router as one route entry without a path, so the
    matched route is found only in the `route` key that routing adds to the scope.
    """
    matched = request.scope.get("route")
    if matched is not None:
        return str(getattr(matched, "path", "unmatched"))
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


def _incoming_request_id(request: Request) -> str:
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    if supplied and len(supplied) <= MAX_REQUEST_ID_LENGTH and supplied.isprintable():
        return supplied
    return uuid.uuid4().hex


def _client_fields(request: Request) -> dict[str, str]:
    """Return the caller's key id for the access log, which only the gateway's auth layer sets."""
    client = getattr(request.state, "client", None)
    return {} if client is None else {"client_key_id": str(client.key_id)}


def install_http_middleware(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Attach request ids, the request counter and latency histogram, and an access log line."""
    app.add_middleware(RequestObserver, metrics=metrics)


class RequestObserver:
    """ASGI middleware that gives each request its id and records it in metrics and the log.

    A plain ASGI class rather than `@app.middleware("http")`: Starlette runs
    those in a task of their own with memory streams between, which cost the
    gateway about a third of its CPU time per request in a py-spy profile.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        request_id = _incoming_request_id(request)
        request.state.request_id = request_id
        token = set_request_id(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            self._record(request, status, time.perf_counter() - started)
            reset_request_id(token)

    def _record(self, request: Request, status: int, elapsed: float) -> None:
        metrics = self.metrics
        route = _route_template(request)
        metrics.requests.labels(metrics.service, route, request.method, str(status)).inc()
        metrics.request_latency.labels(metrics.service, route).observe(elapsed)
        if route != "/metrics":
            logger.info(
                "request finished",
                extra={
                    "route": route,
                    "method": request.method,
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 2),
                    **_client_fields(request),
                },
            )
