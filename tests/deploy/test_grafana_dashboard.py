"""The Grafana dashboard and its provisioning files."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.metric_names import METRIC_NAMES, METRICS, series_names
from tests.deploy.promql import (
    allowed_labels,
    grafana_to_promql,
    label_names,
    metric_names,
    recorded_names,
    unknown_metric_names,
)
from tests.deploy.promtool import REPO, run_promtool

GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "orchestra-otel-dashboard.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yml"
PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml"
RULES = REPO / "deploy" / "prometheus" / "orchestra-otel-rules.yml"

PROMETHEUS_REF = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
TRACES_UID = "${DS_TRACES}"


def recording_rules() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {r["record"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def query_panels() -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard()["panels"]) if p["type"] != "row"]


def prometheus_exprs() -> list[tuple[str, str]]:
    """(where, expr) of every PromQL text: panel targets, variables and annotations."""
    found = []
    for panel in query_panels():
        for target in panel["targets"]:
            if "expr" in target:
                found.append(
                    (f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"])
                )
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']}", variable["query"]["query"]))
    for annotation in dashboard()["annotations"]["list"]:
        if "expr" in annotation:
            found.append((f"annotation {annotation['name']}", annotation["expr"]))
    return found


def test_the_dashboard_parses() -> None:
    data = dashboard()
    assert 36 <= data["schemaVersion"] <= 41
    assert data["uid"] == "orchestra-otel"
    assert data["title"]
    assert "__inputs" not in data, "provisioning does not fill __inputs; use datasource variables"
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["DS_TRACES"]["type"] == "datasource"
    assert variables["DS_TRACES"]["query"] in {"tempo", "jaeger"}


def test_every_panel_has_a_datasource_and_targets() -> None:
    panels = query_panels()
    assert len(panels) >= 15
    for panel in panels:
        name = f"panel {panel['id']} {panel['title']!r}"
        source = panel.get("datasource")
        assert isinstance(source, dict), name
        assert source.get("uid") in {PROMETHEUS_REF["uid"], TRACES_UID}, name
        targets = panel.get("targets")
        assert targets, f"{name} has no targets"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), name
        for target in targets:
            assert target.get("datasource", source) == source, name
            if source == PROMETHEUS_REF:
                assert target["expr"].strip(), name
            else:
                assert target["query"].strip(), name
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, name


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in all_panels(dashboard()["panels"])]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard()["panels"]):
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_every_metric_name_in_the_dashboard_is_a_published_metric() -> None:
    exprs = [expr for _, expr in prometheus_exprs()]
    used = {name for expr in exprs for name in metric_names(expr)}
    assert unknown_metric_names(exprs) == set(), sorted(used - METRIC_NAMES)
    # Every metric the daemon publishes is on the dashboard (a histogram by any series).
    missing = [m.name for m in METRICS.values() if not set(series_names(m)) & used]
    assert not missing, missing


def test_every_label_in_the_dashboard_belongs_to_the_metrics_selected() -> None:
    recorded = recording_rules()
    for where, expr in prometheus_exprs():
        allowed = allowed_labels(expr, recorded) | {"alertname", "alertstate"}
        unknown = label_names(expr) - allowed
        assert not unknown, f"{where}: labels {sorted(unknown)}"


def test_the_recording_rules_the_dashboard_uses_exist() -> None:
    used = {name for _, expr in prometheus_exprs() for name in recorded_names(expr)}
    assert used, "the SLO and stuck-run panels use recording rules"
    assert used <= set(recording_rules()), sorted(used - set(recording_rules()))


def test_exemplars_are_enabled_on_the_failure_panel() -> None:
    failure_panels = [
        panel
        for panel in query_panels()
        if panel["type"] == "timeseries"
        and any(
            "orchestra_steps_total" in t.get("expr", "") and 'outcome="failed"' in t["expr"]
            for t in panel["targets"]
        )
    ]
    assert failure_panels, "no time series panel of failed steps"
    for panel in failure_panels:
        assert all(t.get("exemplar") is True for t in panel["targets"]), panel["title"]
    # The duration histograms carry exemplars too: one query per duration panel asks for them.
    for metric in (
        "orchestra_step_duration_seconds_bucket",
        "orchestra_run_duration_seconds_bucket",
    ):
        panels = [
            p for p in query_panels() if any(metric in t.get("expr", "") for t in p["targets"])
        ]
        assert panels, metric
        assert all(any(t.get("exemplar") for t in p["targets"]) for p in panels), metric


def test_the_failed_steps_table() -> None:
    tables = [
        panel
        for panel in query_panels()
        if panel["type"] == "table" and panel["datasource"] == PROMETHEUS_REF
    ]
    assert tables
    target = tables[0]["targets"][0]
    assert target["instant"] is True and target["format"] == "table"
    assert {"workflow", "node"} <= label_names(target["expr"])


def test_the_dashboard_queries_are_valid_promql(promtool: Path, tmp_path: Path) -> None:
    """promtool parses every query (Grafana variables replaced) as a recording rule."""
    rules = [
        {"record": f"dashboard:query_{i}:check", "expr": grafana_to_promql(expr)}
        for i, (_, expr) in enumerate(prometheus_exprs())
        if not expr.startswith("label_values(")
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_grafana_variables_become_valid_promql() -> None:
    expr = (
        'sum(rate(x{job=~"$job", workflow=~"${workflow:regex}"}[$__rate_interval] offset $__range))'
    )
    assert grafana_to_promql(expr) == 'sum(rate(x{job=~".*", workflow=~".*"}[5m] offset 5m))'


def test_datasource_provisioning() -> None:
    config = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    sources = {source["uid"]: source for source in config["datasources"]}
    assert sources["prometheus"]["type"] == "prometheus"
    assert sources["tempo"]["type"] == "tempo"
    assert sources["jaeger"]["type"] == "jaeger"
    assert sources["loki"]["type"] == "loki"
    assert sum(1 for s in sources.values() if s.get("isDefault")) == 1
    destinations = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert {"name": "trace_id", "datasourceUid": "tempo"} in destinations
    for destination in destinations:
        assert destination["name"] == "trace_id", "the exemplar label the daemon writes"
        assert destination["datasourceUid"] in sources
    # The dashboard's datasource variables default to the provisioned uids.
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["current"]["value"] == "prometheus"
    assert variables["DS_TRACES"]["current"]["value"] in {"tempo", "jaeger"}


# ------------------------------------------------------------------- logs and traces
# Loki's OTLP ingestion stores a log record's trace and span ids as the structured metadata
# trace_id and span_id, and the resource attribute service.name as the label service_name.
LOKI_TRACE_ID = "trace_id"
LOKI_SPAN_ID = "span_id"

_GO_ENV = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z0-9_]+)|([*#$@!?-]))")


def grafana_interpolate(value: str, env: Mapping[str, str]) -> str:
    """What Grafana's provisioning does to every string (pkg/services/provisioning/values):
    split at `$$`, os.ExpandEnv each part, join with `$`."""

    def expand(part: str) -> str:
        return _GO_ENV.sub(
            lambda m: env.get(next(g for g in m.groups() if g is not None), ""), part
        )

    return "$".join(expand(part) for part in value.split("$$"))


def strings_in(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_in(value)


def provisioned_datasources(env: Mapping[str, str]) -> dict[str, Any]:
    """The data sources as Grafana sees them after interpolating `env` (by uid)."""

    def interpolated(node: Any) -> Any:
        if isinstance(node, str):
            return grafana_interpolate(node, env)
        if isinstance(node, Mapping):
            return {key: interpolated(value) for key, value in node.items()}
        if isinstance(node, list):
            return [interpolated(value) for value in node]
        return node

    config = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    return {source["uid"]: interpolated(source) for source in config["datasources"]}


def test_grafana_interpolation_model() -> None:
    env = {"HOME": "/root", "__value": "oops"}
    assert grafana_interpolate("$HOME and ${HOME}", env) == "/root and /root"
    assert grafana_interpolate("$${__value.raw}", env) == "${__value.raw}"
    assert grafana_interpolate("${__value.raw}", env) == ""  # the unescaped macro is lost
    assert grafana_interpolate("{$${__tags}} | x", {}) == "{${__tags}} | x"


def test_provisioning_escapes_every_grafana_macro() -> None:
    """Grafana expands $NAME and ${NAME} from its environment in provisioning files: every
    `$` of a macro must be written `$$`, or the macro silently becomes an empty string."""
    config = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    env = {"HOME": "/home/grafana", "GF_PATHS_DATA": "/var/lib/grafana"}
    for text in strings_in(config):
        assert grafana_interpolate(text, env) == text.replace("$$", "$"), text


def test_logs_link_to_their_traces_and_spans_to_their_logs() -> None:
    sources = provisioned_datasources({})
    loki, tempo = sources["loki"], sources["tempo"]
    assert loki["url"].split("//", 1)[1].split(":", 1)[0] == "loki"

    # Loki -> Tempo: the record's trace_id (structured metadata, matched as a label).
    (derived,) = loki["jsonData"]["derivedFields"]
    assert derived["matcherType"] == "label"
    assert derived["matcherRegex"] == LOKI_TRACE_ID
    assert derived["datasourceUid"] == "tempo" and derived["datasourceUid"] in sources
    assert derived["url"] == "${__value.raw}"

    # Tempo -> Loki: the records of exactly this span, found by their structured metadata
    # (a custom query: Grafana's own trace and span id filters search the log line).
    links = tempo["jsonData"]["tracesToLogsV2"]
    assert links["datasourceUid"] == "loki"
    assert links["customQuery"] is True
    assert {"key": "service.name", "value": "service_name"} in links["tags"]
    query = links["query"]
    assert query.startswith("{${__tags}}")
    assert f'| {LOKI_TRACE_ID}="${{__span.traceId}}"' in query
    assert f'| {LOKI_SPAN_ID}="${{__span.spanId}}"' in query
    assert links["spanStartTimeShift"].startswith("-")
    assert not links["spanEndTimeShift"].startswith("-")


def test_dashboard_provisioning() -> None:
    config = yaml.safe_load(PROVIDERS.read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert DASHBOARD.name in PROVIDERS.read_text(encoding="utf-8"), "the mount is documented"
