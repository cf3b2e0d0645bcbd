"""Reading values from a running service's `/metrics`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.servers import Server


def _matching_samples(server: Server, name: str, labels: dict[str, str]) -> Iterator[Sample]:
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                yield sample


def metric(server: Server, name: str, **labels: str) -> float:
    """Return the first sample `name` whose labels include `labels`, or 0 when there is none."""
    for sample in _matching_samples(server, name, labels):
        return sample.value
    return 0.0


def metric_total(server: Server, name: str, **labels: str) -> float:
    """Return the sum of every sample `name` whose labels include `labels`."""
    return sum(sample.value for sample in _matching_samples(server, name, labels))
