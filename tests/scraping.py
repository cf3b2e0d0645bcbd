"""Reading one value from a running service's `/metrics`."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import Server


def metric(server: Server, name: str, **labels: str) -> float:
    """Return the first sample `name` whose labels include `labels`, or 0 when there is none."""
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0
