"""The Prometheus configuration and alert rules in monitoring/prometheus, checked with promtool.

promtool comes with the Debian package `prometheus`, which `.ci/run` installs.
The unit tests in monitoring/prometheus/tests feed synthetic series to each
alert rule, and the checks here also hold every rule to the conventions the
on-call reader relies on: a `for:` time, a severity, and annotations.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql import RULE_FILES, alert_rules, documented_metrics, metric_base_name
from tests.servers import ROOT

PROMETHEUS_DIR = ROOT / "monitoring" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
SEVERITIES = {"warning", "critical"}
# Metrics the rules may use without a row in docs/metrics.md: Prometheus' own
# `up`, and the gauge the drift job pushes to the Pushgateway.
UNDOCUMENTED_METRICS = {"up", "visionserve_drift_detected"}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="needs promtool (Debian package prometheus; .ci/run installs it)",
)


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def unit_tested_alert_names() -> set[str]:
    names: set[str] = set()
    for path in RULE_TESTS:
        document = yaml.safe_load(path.read_text())
        for test in document["tests"]:
            names.update(case["alertname"] for case in test.get("alert_rule_test", []))
    return names


def fired_alert_names() -> set[str]:
    """Return the alerts that some unit test expects to fire, not only to stay silent."""
    names: set[str] = set()
    for path in RULE_TESTS:
        document = yaml.safe_load(path.read_text())
        for test in document["tests"]:
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    names.add(case["alertname"])
    return names


def test_rule_and_test_files_exist() -> None:
    assert CONFIG.is_file()
    assert RULE_FILES, "no rule files in monitoring/prometheus/rules"
    assert RULE_TESTS, "no promtool unit tests in monitoring/prometheus/tests"


@needs_promtool
def test_promtool_check_config() -> None:
    result = run_promtool("check", "config", CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", *[str(path) for path in RULE_FILES])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests() -> None:
    result = run_promtool("test", "rules", *[str(path) for path in RULE_TESTS])
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_loads_every_rule_file() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    loaded: set[Path] = set()
    for pattern in config["rule_files"]:
        loaded.update(PROMETHEUS_DIR.glob(pattern))
    assert loaded == set(RULE_FILES)


def test_config_scrapes_every_service() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    expected_targets = {
        "gateway": "gateway:8000",
        "classifier": "classifier:8001",
        "detector": "detector:8002",
        "pushgateway": "pushgateway:9091",
    }
    for job_name, target in expected_targets.items():
        assert job_name in jobs, f"no scrape job {job_name}"
        targets = [t for static in jobs[job_name]["static_configs"] for t in static["targets"]]
        assert targets == [target]
    assert jobs["pushgateway"].get("honor_labels") is True


def test_every_alert_fired_in_unit_tests() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names - unit_tested_alert_names() == set()
    assert names - fired_alert_names() == set()


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_has_for_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert "for" in rule
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    assert annotations.get("summary")
    assert annotations.get("description")
    # The summary names what is affected: a service, a model or a scrape job.
    assert re.search(r"\$labels\.(service|model|job)\b", annotations["summary"])


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_uses_only_documented_metrics(rule: dict[str, Any]) -> None:
    # A metric name in a rule that no service exports leaves the alert silent forever.
    used = {
        metric_base_name(name) for name in re.findall(r"\b(?:visionserve_\w+|up)\b", rule["expr"])
    }
    unknown = used - documented_metrics() - UNDOCUMENTED_METRICS
    assert unknown == set()
