"""Mean time per request stage of each service and model, and the dominant stage, from Prometheus.

The services observe `visionserve_stage_duration_seconds{service, model, stage}`
once per request and stage. The mean time of a stage over the window is
rate(_sum) / rate(_count), and its share is that mean over the sum of the
stage means, which is the mean request time spent in the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

STAGE_METRIC = "visionserve_stage_duration_seconds"


class PrometheusQueryError(RuntimeError):
    """Raised when the Prometheus HTTP API cannot be reached or rejects a query."""


@dataclass(frozen=True)
class StageShare:
    stage: str
    mean_seconds: float
    share: float


@dataclass
class ModelBottleneck:
    """Mean time per stage of one model on one service, largest share first."""

    service: str
    model: str
    stages: list[StageShare] = field(default_factory=list)

    @property
    def dominant_stage(self) -> str:
        return self.stages[0].stage

    @property
    def mean_seconds(self) -> float:
        return sum(stage.mean_seconds for stage in self.stages)


def query_vector(
    prometheus_url: str, query: str, timeout: float
) -> list[tuple[dict[str, str], float]]:
    """Run an instant query and return (labels, value) per series of the vector result."""
    try:
        response = httpx.get(
            f"{prometheus_url}/api/v1/query", params={"query": query}, timeout=timeout
        )
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as error:
        raise PrometheusQueryError(f"query {query!r} to {prometheus_url} failed: {error}") from None
    if body.get("status") != "success" or body["data"]["resultType"] != "vector":
        raise PrometheusQueryError(f"query {query!r} failed: {body.get('error', body)}")
    return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]


def stage_bottlenecks(
    prometheus_url: str, services: list[str], window: str, timeout: float
) -> list[ModelBottleneck]:
    """Return the stage shares of each model of `services` with requests in the window."""
    service_match = "|".join(services)
    by_stage = "sum by (service, model, stage)"
    selector = f'{{service=~"{service_match}"}}'
    sums = query_vector(
        prometheus_url, f"{by_stage} (rate({STAGE_METRIC}_sum{selector}[{window}]))", timeout
    )
    counts = query_vector(
        prometheus_url, f"{by_stage} (rate({STAGE_METRIC}_count{selector}[{window}]))", timeout
    )

    count_by_key = {_key(labels): value for labels, value in counts}
    means: dict[tuple[str, str], dict[str, float]] = {}
    for labels, total in sums:
        count = count_by_key.get(_key(labels), 0.0)
        # No requests in the window gives 0/0; such stages are left out.
        if count <= 0:
            continue
        means.setdefault((labels["service"], labels["model"]), {})[labels["stage"]] = total / count

    results = []
    for (service, model), stages in sorted(means.items()):
        whole = sum(stages.values())
        bottleneck = ModelBottleneck(service=service, model=model)
        for stage, mean in sorted(stages.items(), key=lambda item: item[1], reverse=True):
            share = mean / whole if whole > 0 else 0.0
            bottleneck.stages.append(StageShare(stage=stage, mean_seconds=mean, share=share))
        results.append(bottleneck)
    return results


def _key(labels: dict[str, str]) -> tuple[str, str, str]:
    return labels.get("service", ""), labels.get("model", ""), labels.get("stage", "")
