"""Every dashboard panel and alert rule shows real data from the real services.

Starts the gateway, classifier and detector, a Pushgateway, and Prometheus
with the shipped alert rules (tests/monitored_stack.py). After traffic that
touches every metric, each PromQL query of each dashboard panel and each alert
expression, stripped of its threshold, must return at least one finite value
through Prometheus' HTTP API. Then the detector is stopped and the target-down
alert must go pending or firing.

The drift dashboard and the drift alert read what `python -m monitoring.drift`
pushes to the Pushgateway, so the traffic ends with a run of that job.
tests/test_monitoring_drift.py makes the drift alert fire.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.monitored_stack import MonitoredStack, monitored_stack, send_traffic
from tests.prometheus_servers import finite_values, needs_prometheus, poll
from tests.promql import (
    PanelQuery,
    alert_rules,
    label_values_query,
    load_dashboards,
    metric_names,
    panel_queries,
    substitute_variables,
    without_threshold,
)

pytestmark = [pytest.mark.slow, needs_prometheus]

# The failed reload and the queue_full burst of the traffic raise these two.
PROVOKED_ALERTS = {"VisionServeModelReloadFailed", "VisionServeQueueRejecting"}
# The burst may also raise these two, depending on how many of its requests the
# queue rejects: requests to the burst model wait 500 ms for a batch, and the
# rejections are 503s.
BURST_ALERTS = {"VisionServeHighLatency", "VisionServeHighErrorRate"}
# Seconds a query may take to return data after the traffic: a few 1 s scrapes and rule runs.
DATA_TIMEOUT = 20.0
# `up == 0` is evaluated every second and goes pending at once; firing would take its 1 m `for`.
TARGET_DOWN_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoredStack]:
    with monitored_stack(tmp_path_factory.mktemp("monitoring")) as running:
        send_traffic(running)
        yield running


@pytest.mark.parametrize("query", panel_queries(), ids=lambda query: query.name)
def test_panel_query_returns_data(stack: MonitoredStack, query: PanelQuery) -> None:
    expression = substitute_variables(query.expression)

    result = stack.prometheus.wait_for_finite(expression, DATA_TIMEOUT)

    assert finite_values(result)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_expression_returns_data(stack: MonitoredStack, rule: dict[str, Any]) -> None:
    result = stack.prometheus.wait_for_finite(without_threshold(rule["expr"]), DATA_TIMEOUT)

    assert finite_values(result)


def dashboard_variables() -> list[tuple[str, dict[str, Any]]]:
    return [
        (file_name, variable)
        for file_name, dashboard in load_dashboards().items()
        for variable in dashboard["templating"]["list"]
    ]


@pytest.mark.parametrize(
    ("dashboard", "variable"),
    dashboard_variables(),
    ids=lambda value: value if isinstance(value, str) else value["name"],
)
def test_variable_has_values(
    stack: MonitoredStack, dashboard: str, variable: dict[str, Any]
) -> None:
    selector, label = label_values_query(variable["definition"])
    selector = substitute_variables(selector)

    def values() -> list[str] | None:
        found: list[str] = stack.prometheus.api(f"label/{label}/values", **{"match[]": selector})
        return found or None

    assert poll(values, DATA_TIMEOUT, f"values of {label} in {selector}")


def test_every_metric_name_exists(stack: MonitoredStack) -> None:
    used: set[str] = set()
    for query in panel_queries():
        used |= metric_names(substitute_variables(query.expression))
    for rule in alert_rules():
        used |= metric_names(rule["expr"])

    missing: set[str] = set()

    def all_present() -> bool | None:
        missing.clear()
        missing.update(used - stack.prometheus.metric_names())
        return True if not missing else None

    with contextlib.suppress(TimeoutError):
        poll(all_present, DATA_TIMEOUT, "every metric name in Prometheus")

    assert missing == set()


def test_rules_load_and_evaluate(stack: MonitoredStack) -> None:
    rules = stack.prometheus.rules()

    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    unhealthy = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert unhealthy == {}


def active_alert_names(stack: MonitoredStack) -> set[str]:
    return {alert["labels"]["alertname"] for alert in stack.prometheus.alerts()}


@pytest.mark.parametrize("alert_name", sorted(PROVOKED_ALERTS))
def test_provoked_alert_goes_pending(stack: MonitoredStack, alert_name: str) -> None:
    active = poll(
        lambda: active_alert_names(stack) if alert_name in active_alert_names(stack) else None,
        DATA_TIMEOUT,
        f"{alert_name} pending or firing",
    )

    assert alert_name in active


def test_no_unexpected_alert(stack: MonitoredStack) -> None:
    alerts = stack.prometheus.alerts()
    active = {alert["labels"]["alertname"] for alert in alerts}

    assert active - PROVOKED_ALERTS - BURST_ALERTS == set(), alerts


# Stops the detector, so it must stay the last test of this module.
def test_stopped_service_raises_target_down(stack: MonitoredStack) -> None:
    stack.services["detector"].stop()

    def detector_down_alert() -> dict[str, Any] | None:
        for alert in stack.prometheus.alerts():
            labels = alert["labels"]
            if labels["alertname"] == "VisionServeTargetDown" and labels.get("job") == "detector":
                return alert
        return None

    alert = poll(detector_down_alert, TARGET_DOWN_TIMEOUT, "VisionServeTargetDown for the detector")

    assert alert["state"] in {"pending", "firing"}
    assert stack.prometheus.target_health()["detector"] == "down"
    assert stack.prometheus.target_health()["gateway"] == "up"
