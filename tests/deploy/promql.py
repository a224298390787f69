"""Just enough PromQL scanning to check the names and labels that rules and dashboards use.

Not a parser: string literals are removed first, then identifiers are picked by regex.
promtool (tests/deploy/conftest.py) checks the syntax for real.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from tests.deploy.metric_names import METRIC_NAMES, SCRAPE_LABELS, labels_of

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# Names of our metrics: identifiers starting with orchestra_ or gen_ai_ (not the tail of a
# longer identifier, a recording rule name or a Grafana $variable).
_METRIC = re.compile(r"(?<![\w:$])(?:orchestra|gen_ai)_[A-Za-z0-9_:]*")
# Recording rule names follow level:metric:operations.
_RECORDED = re.compile(r"(?<![\w:$])[A-Za-z_]\w*:[\w:]*")
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def strip_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """Identifiers starting with orchestra_ or gen_ai_ (recording rule names excluded).

    Label names (gen_ai_request_model, ...) in matchers and grouping clauses are not metrics.
    """
    text = _GROUPING.sub(" ", _MATCHERS.sub(" ", strip_strings(expr)))
    return {name for name in _METRIC.findall(text) if ":" not in name}


def recorded_names(expr: str) -> set[str]:
    return set(_RECORDED.findall(strip_strings(expr)))


def label_names(expr: str) -> set[str]:
    """Label names in matchers and in by/without/on/ignoring/group_* clauses."""
    text = strip_strings(expr)
    found: set[str] = set()
    for block in _MATCHERS.findall(text):
        found.update(_MATCHER_LABEL.findall(block))
    for block in _GROUPING.findall(text):
        found.update(part.strip() for part in block.split(",") if part.strip())
    return found


def allowed_labels(expr: str, recorded: Mapping[str, str] | None = None) -> set[str]:
    """Labels the series an expression selects can carry; recording rules are expanded."""
    allowed = set(SCRAPE_LABELS)
    for name in metric_names(expr) & METRIC_NAMES:
        allowed |= labels_of(name)
    for name in recorded_names(expr):
        if recorded and name in recorded:
            allowed |= allowed_labels(recorded[name], recorded)
    return allowed


def unknown_metric_names(exprs: Iterable[str]) -> set[str]:
    return {name for expr in exprs for name in metric_names(expr)} - METRIC_NAMES


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana variables so promtool can parse a dashboard query."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return "5m" if name.startswith("__") else ".*"

    return _GRAFANA_VARIABLE.sub(value, expr)
