"""The PromQL of the Grafana dashboards and the alert rules, made ready to evaluate.

Grafana fills in template variables such as `$service` and `$__rate_interval`
before it sends a query. The tests fill them in the same way, with a regex that
matches every value. Alert expressions compare with a threshold and return
nothing while the system is healthy, so `without_threshold` drops that
comparison to show that the compared series exist.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from tests.servers import ROOT

DASHBOARD_DIR = ROOT / "monitoring" / "grafana" / "dashboards"
RULE_FILES = sorted((ROOT / "monitoring" / "prometheus" / "rules").glob("*.yml"))

# Grafana's interval variables. Grafana sets $__rate_interval to at least four
# scrape intervals, and more when the time range is wide. 5m covers a whole
# test run, so a rate over the test's traffic stays visible to the last test.
INTERVAL_VARIABLES = {"__rate_interval": "5m", "__interval": "15s", "__range": "1h"}
# Grafana's value for "All" of a multi-value variable whose allValue is this regex.
ALL_VALUES = ".+"

COMPARISON = re.compile(
    r"(==|!=|>=|<=|>|<)\s*(?:bool\s+)?[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?\s*$"
)
SET_OPERATORS = ("or", "unless", "and")
# PromQL keywords, which the metric-name pattern would otherwise match.
KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "inf", "nan",
    "by", "without", "on", "ignoring", "group_left", "group_right",
}  # fmt: skip
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


@dataclass(frozen=True)
class PanelQuery:
    """One query target of a dashboard panel."""

    dashboard: str
    panel: str
    ref_id: str
    expression: str

    @property
    def name(self) -> str:
        return f"{self.dashboard}: {self.panel} [{self.ref_id}]"


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Return each dashboard JSON by its file name."""
    return {
        path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every panel that is not a row, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries() -> list[PanelQuery]:
    queries = []
    for file_name, dashboard in load_dashboards().items():
        for panel in panels(dashboard):
            for target in panel["targets"]:
                queries.append(
                    PanelQuery(file_name, panel["title"], target["refId"], target["expr"])
                )
    return queries


def substitute_variables(expression: str) -> str:
    """Replace Grafana's variables the way Grafana does before it sends the query.

    Interval variables become fixed durations, and every dashboard variable
    becomes the regex for "All". Raises ValueError for a variable left over.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return INTERVAL_VARIABLES.get(name, ALL_VALUES if not name.startswith("__") else "$")

    substituted = VARIABLE.sub(value, expression)
    if "$" in substituted:
        raise ValueError(f"unknown Grafana variable in {expression!r}")
    return substituted


def label_values_query(definition: str) -> tuple[str, str]:
    """Split `label_values(selector, label)` into the series selector and the label name."""
    match = LABEL_VALUES.match(definition.strip())
    if match is None:
        raise ValueError(f"not a label_values(selector, label) query: {definition!r}")
    return match.group("selector").strip(), match.group("label")


def documented_metrics() -> set[str]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `(visionserve_\w+)` \|", text, flags=re.MULTILINE))


def metric_base_name(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULE_FILES:
        document = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def _top_level_spans(expression: str) -> Iterator[tuple[int, str]]:
    """Yield (index, character) for each character outside brackets and quoted strings."""
    depth = 0
    quote = ""
    escaped = False
    for index, character in enumerate(expression):
        if quote:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == quote:
                quote = ""
            continue
        if character in "\"'`":
            quote = character
        elif character in "([{":
            depth += 1
        elif character in ")]}":
            depth -= 1
        elif depth == 0:
            yield index, character


def _split_set_operators(expression: str) -> list[str]:
    """Split at top-level `or`, `unless` and `and`, keeping the operators as separate items."""
    top_level = dict(_top_level_spans(expression))
    parts: list[str] = []
    start = 0
    index = 0
    while index < len(expression):
        for operator in SET_OPERATORS:
            end = index + len(operator)
            if (
                all(i in top_level for i in range(index, end))
                and expression[index:end] == operator
                and (index == 0 or expression[index - 1].isspace())
                and (end == len(expression) or expression[end].isspace())
            ):
                parts.extend([expression[start:index], operator])
                start = end
                index = end
                break
        else:
            index += 1
    parts.append(expression[start:])
    return parts


def _is_wrapped(expression: str) -> bool:
    """Return True when one pair of parentheses encloses the whole expression."""
    if not (expression.startswith("(") and expression.endswith(")")):
        return False
    return next(_top_level_spans(expression), None) is None


def without_threshold(expression: str) -> str:
    """Drop each comparison with a number at the top level of every `or`/`and`/`unless` operand.

    `a / b > 0.05` becomes `a / b`, and `rate(x[5m]) > 0 or (y unless z)`
    becomes `rate(x[5m]) or (y unless z)`. A comparison of two vectors stays,
    because it does not act as a threshold.
    """
    parts = _split_set_operators(expression.strip())
    stripped = []
    for part in parts:
        text = part.strip()
        if text in SET_OPERATORS:
            stripped.append(text)
            continue
        comparison = _last_top_level_comparison(text)
        if comparison is not None:
            text = text[:comparison].rstrip()
        if _is_wrapped(text):
            text = f"({without_threshold(text[1:-1])})"
        stripped.append(text)
    return " ".join(stripped)


def _last_top_level_comparison(expression: str) -> int | None:
    """Return where a trailing `<op> [bool] <number>` at the top level starts, or None."""
    match = COMPARISON.search(expression)
    if match is None:
        return None
    top_level = dict(_top_level_spans(expression))
    if match.start() not in top_level:
        return None
    return match.start()


def metric_names(expression: str) -> set[str]:
    """Return the metric names an expression selects, without functions, labels and keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    names = re.findall(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    return {name for name in names if name.lower() not in KEYWORDS}
