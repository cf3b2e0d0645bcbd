"""The Grafana dashboards and provisioning files, checked without a Grafana server.

No Grafana package exists for Debian, so these tests check the JSON at the
level Grafana relies on: ids, datasource, targets and layout. The helpers
that turn the panel queries and alert expressions into evaluable PromQL for
tests/test_monitoring_live.py are tested here too.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.promql import (
    alert_rules,
    documented_metrics,
    label_values_query,
    load_dashboards,
    metric_base_name,
    metric_names,
    panel_queries,
    panels,
    substitute_variables,
    without_threshold,
)
from tests.servers import ROOT

GRAFANA_DIR = ROOT / "monitoring" / "grafana"
DATASOURCE_FILE = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
PROVIDER_FILE = GRAFANA_DIR / "provisioning" / "dashboards" / "visionserve.yml"
EXPECTED_DASHBOARDS = {"overview.json", "models.json", "drift.json", "redis-cache.json"}
GRID_WIDTH = 24
# Prometheus adds `up` itself, so docs/metrics.md does not list it.
UNDOCUMENTED_METRICS = {"up"}


def datasource_uid() -> str:
    document = yaml.safe_load(DATASOURCE_FILE.read_text())
    (datasource,) = document["datasources"]
    uid: str = datasource["uid"]
    return uid


def dashboard_cases() -> list[Any]:
    return [
        pytest.param(dashboard, id=file_name) for file_name, dashboard in load_dashboards().items()
    ]


# Provisioning ------------------------------------------------------------------


def test_datasource_provisioning() -> None:
    document = yaml.safe_load(DATASOURCE_FILE.read_text())
    (datasource,) = document["datasources"]

    assert document["apiVersion"] == 1
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["uid"] == "visionserve-prometheus"


def test_dashboard_provider_points_at_mounted_folder() -> None:
    text = PROVIDER_FILE.read_text()
    document = yaml.safe_load(text)
    (provider,) = document["providers"]
    path = provider["options"]["path"]

    assert provider["type"] == "file"
    assert path.startswith("/")
    # The comment names the repository folder that the deployment mounts there.
    assert "monitoring/grafana/dashboards/" in text
    assert f"at {path}" in text


def test_expected_dashboards_exist() -> None:
    assert set(load_dashboards()) == EXPECTED_DASHBOARDS


def test_dashboard_uids_unique() -> None:
    uids = [dashboard["uid"] for dashboard in load_dashboards().values()]

    assert len(uids) == len(set(uids))


# Dashboard JSON ----------------------------------------------------------------


@pytest.mark.parametrize("dashboard", dashboard_cases())
def test_panel_ids_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    ids += [inner["id"] for panel in dashboard["panels"] for inner in panel.get("panels", [])]

    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("dashboard", dashboard_cases())
def test_panels_use_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    uid = datasource_uid()
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid, variable["name"]


@pytest.mark.parametrize("dashboard", dashboard_cases())
def test_panels_have_targets(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids, f"panel {panel['title']!r} has no query"
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]
        assert panel.get("description"), f"panel {panel['title']!r} has no description"


def grids_overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    """Return True when two panel rectangles (gridPos) share at least one grid cell."""
    overlap_x = a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
    overlap_y = a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
    return overlap_x and overlap_y


@pytest.mark.parametrize("dashboard", dashboard_cases())
def test_panels_fit_grid_without_overlap(dashboard: dict[str, Any]) -> None:
    boxes = []
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) for key in ("h", "w", "x", "y")), panel["title"]
        assert grid["h"] > 0
        assert grid["w"] > 0
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        boxes.append((panel["title"], grid))

    for index, (title, grid) in enumerate(boxes):
        for other, other_grid in boxes[index + 1 :]:
            assert not grids_overlap(grid, other_grid), f"{title!r} overlaps {other!r}"


def test_grids_overlap() -> None:
    left = {"x": 0, "y": 0, "w": 12, "h": 8}

    assert grids_overlap(left, {"x": 11, "y": 7, "w": 4, "h": 4})
    assert not grids_overlap(left, {"x": 12, "y": 0, "w": 12, "h": 8})
    assert not grids_overlap(left, {"x": 0, "y": 8, "w": 24, "h": 1})


@pytest.mark.parametrize("dashboard", dashboard_cases())
def test_variables_are_label_values_queries(dashboard: dict[str, Any]) -> None:
    for variable in dashboard["templating"]["list"]:
        selector, label = label_values_query(variable["definition"])
        assert variable["query"]["query"] == variable["definition"]
        assert metric_names(substitute_variables(selector))
        assert label


def test_every_query_substitutes() -> None:
    for query in panel_queries():
        assert "$" not in substitute_variables(query.expression), query.name


def dashboard_metrics() -> set[str]:
    """Return the metric names of every panel query, histogram series under their base name."""
    used = set()
    for query in panel_queries():
        names = metric_names(substitute_variables(query.expression))
        used |= {metric_base_name(name) for name in names}
    return used


def test_dashboards_use_only_known_metrics() -> None:
    used = dashboard_metrics()

    assert used - documented_metrics() - UNDOCUMENTED_METRICS == set()


def test_every_documented_metric_has_a_panel() -> None:
    used = dashboard_metrics()

    assert documented_metrics() - used == set()


# PromQL helpers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("up == 0", "up"),
        ("visionserve_queue_depth > 48", "visionserve_queue_depth"),
        ("a / b > 0.05", "a / b"),
        ("x >= bool 1.5e3", "x"),
        ("a > b", "a > b"),
        ('sum(x{route=~"a|b", name="or"}) > 1', 'sum(x{route=~"a|b", name="or"})'),
        ("max by (model) (x) == 1", "max by (model) (x)"),
        ("rate(x[5m]) > 0 or (y unless y offset 5m)", "rate(x[5m]) or (y unless y offset 5m)"),
        ("(x > 3) or y < bool 2", "(x) or y"),
        ("histogram_quantile(0.95, sum by (le) (rate(h[5m]))) > 0.5",
         "histogram_quantile(0.95, sum by (le) (rate(h[5m])))"),
        ("sort_desc(x > 1)", "sort_desc(x > 1)"),
        ("color > 1", "color"),
    ],
)  # fmt: skip
def test_without_threshold(expression: str, expected: str) -> None:
    assert without_threshold(expression) == expected


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_without_threshold_keeps_metrics(rule: dict[str, Any]) -> None:
    stripped = without_threshold(rule["expr"])

    assert stripped != rule["expr"].strip()
    assert metric_names(stripped) == metric_names(rule["expr"])
    assert not re.search(r"(==|!=|>=|<=|>|<)\s*[\d.]+\s*$", stripped)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("up == 0", {"up"}),
        ('sum by (service, le) (rate(a_bucket{x="y"}[5m]))', {"a_bucket"}),
        ("a / on (model) group_left b", {"a", "b"}),
        ('time() - max(c{job="drift"})', {"c"}),
        ("x offset 5m unless y", {"x", "y"}),
        ('z{route!~"/metrics|/healthz"} > 1e3', {"z"}),
    ],
)
def test_metric_names(expression: str, expected: set[str]) -> None:
    assert metric_names(expression) == expected


def test_substitute_variables() -> None:
    expression = 'rate(x{service=~"$service", model=~"${model}"}[$__rate_interval])'

    assert substitute_variables(expression) == 'rate(x{service=~".+", model=~".+"}[5m])'


def test_substitute_rejects_unknown_builtin() -> None:
    with pytest.raises(ValueError, match="unknown Grafana variable"):
        substitute_variables("rate(x[$__unknown])")


def test_label_values_query() -> None:
    assert label_values_query('label_values(m{service=~"$service"}, model)') == (
        'm{service=~"$service"}',
        "model",
    )
    with pytest.raises(ValueError, match="not a label_values"):
        label_values_query("query_result(up)")
