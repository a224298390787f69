"""The Prometheus alert rules: promtool checks and unit tests, names, structure, config."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.metric_names import METRIC_NAMES
from tests.deploy.promql import (
    allowed_labels,
    label_names,
    metric_names,
    recorded_names,
    unknown_metric_names,
)
from tests.deploy.promtool import REPO, run_promtool

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "orchestra-otel-rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "orchestra-otel-rules.test.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
COMPOSE_CONFIG = PROMETHEUS_DIR / "prometheus.compose.yml"

JOB = "orchestra-otel"
TARGETS = {CONFIG: "localhost:9464", COMPOSE_CONFIG: "orchestra-otel:9464"}
ALERTMANAGERS = {CONFIG: "localhost:9093", COMPOSE_CONFIG: "alertmanager:9093"}
EXPECTED_ALERTS = {
    "OrchestraStepFailed",
    "OrchestraStepFailureRatioHigh",
    "OrchestraRunsFailing",
    "OrchestraRunStuck",
    "OrchestraWorkflowErrorBudgetFastBurn",
    "OrchestraWorkflowErrorBudgetSlowBurn",
    "OrchestraWorkflowSpendHigh",
    "OrchestraExporterDown",
    "OrchestraExporterNoSuccessfulPoll",
    "OrchestraExporterApiAuthFailing",
    "OrchestraExporterExportFailing",
    "OrchestraExporterBacklogGrowing",
}
WORKFLOW_ALERTS = {name for name in EXPECTED_ALERTS if not name.startswith("OrchestraExporter")}
STEP_ALERT = "OrchestraStepFailed"
# Settings: recording rules whose per-workflow overrides carry a workflow_id label.
SETTINGS = {
    "orchestra:run_stuck_threshold_seconds",
    "orchestra:run_success_objective:ratio",
    "orchestra:spend_threshold:increase1h",
}
SPEND_ALERT = "OrchestraWorkflowSpendHigh"
README = PROMETHEUS_DIR / "README.md"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def recordings() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}


def output(result: Any) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


# --------------------------------------------------------------------------- promtool


def test_promtool_check_rules(promtool: Path) -> None:
    result = run_promtool(promtool, "check", "rules", RULES)
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout
    assert f"{len(rules())} rules found" in result.stdout


def test_promtool_test_rules(promtool: Path) -> None:
    result = run_promtool(promtool, "test", "rules", RULE_TESTS)
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout
    assert "FAILED" not in result.stdout + result.stderr


@pytest.mark.parametrize("config", sorted(TARGETS), ids=lambda path: path.name)
def test_promtool_check_config_loads_the_rules(promtool: Path, config: Path) -> None:
    result = run_promtool(promtool, "check", "config", config)
    assert result.returncode == 0, output(result)
    assert "1 rule files found" in result.stdout
    assert f"{len(rules())} rules found" in result.stdout


BROKEN = {
    "promql syntax": ("expr: workflow_node:orchestra_steps_failed:increase5m > 0", "expr: > 0"),
    "unbalanced parenthesis": (
        "increase(orchestra_runs_total[30m])",
        "increase(orchestra_runs_total[30m]",
    ),
    "unknown field": ("        for: 0m\n", "        fro: 0m\n"),
    "template": ("{{ $labels.node }} of workflow", "{{ $labels.node } of workflow"),
    "yaml": ("groups:\n", "groups:\n  - name: [unclosed\n"),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_promtool_check_rules_fails_on_a_broken_file(
    promtool: Path, tmp_path: Path, breakage: str
) -> None:
    old, new = BROKEN[breakage]
    text = RULES.read_text(encoding="utf-8")
    assert old in text, f"the rules file changed; update BROKEN[{breakage!r}]"
    broken = tmp_path / RULES.name
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = run_promtool(promtool, "check", "rules", broken)
    assert result.returncode != 0, output(result)
    assert "FAILED" in result.stdout + result.stderr


def test_promtool_test_rules_fails_when_an_alert_changes(promtool: Path, tmp_path: Path) -> None:
    """The unit tests pin the behaviour: raising OrchestraStepFailed's threshold breaks them."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    text = RULES.read_text(encoding="utf-8")
    old = "expr: workflow_node:orchestra_steps_failed:increase5m > 0"
    assert old in text
    (tmp_path / RULES.name).write_text(text.replace(old, old[:-1] + "1"), encoding="utf-8")
    result = run_promtool(promtool, "test", "rules", tmp_path / RULE_TESTS.name)
    assert result.returncode != 0, output(result)
    assert STEP_ALERT in result.stdout + result.stderr


# ---------------------------------------------------------------- names and structure


def test_every_metric_name_in_the_rules_is_a_published_metric() -> None:
    used = {name for rule in rules() for name in metric_names(rule["expr"])}
    assert used, "the regex found no metric names at all"
    assert used <= METRIC_NAMES, sorted(used - METRIC_NAMES)
    # The alerts cover both workflow and self metrics.
    assert "orchestra_steps_total" in used
    assert "orchestra_otel_last_successful_poll_timestamp_seconds" in used


def test_the_name_check_catches_a_typo() -> None:
    expr = 'increase(orchestra_step_total{outcome="failed"}[5m]) > 0 and gen_ai_tokens_total'
    assert unknown_metric_names([expr]) == {"orchestra_step_total", "gen_ai_tokens_total"}
    # Names inside strings, recording rule names and Grafana variables are not metrics.
    assert metric_names('workflow:orchestra_x:ratio{job="orchestra_y"} + $orchestra_z') == set()
    # Label names are not metrics either.
    expr = "sum by (gen_ai_request_model) (gen_ai_client_token_usage_sum{gen_ai_token_type!=''})"
    assert metric_names(expr) == {"gen_ai_client_token_usage_sum"}


def test_every_label_in_the_rules_belongs_to_the_metrics_selected() -> None:
    recorded = recordings()
    for rule in rules():
        name = rule.get("alert") or rule["record"]
        allowed = allowed_labels(rule["expr"], recorded)
        if recorded_names(rule["expr"]) & SETTINGS:
            allowed.add("workflow_id")
        unknown = label_names(rule["expr"]) - allowed
        assert not unknown, f"{name}: labels {sorted(unknown)} exist on none of its metrics"


def test_the_settings_are_defaults_that_records_per_workflow_override() -> None:
    recorded = recordings()
    assert recorded["orchestra:run_stuck_threshold_seconds"].strip() == "vector(1800)"
    assert recorded["orchestra:run_success_objective:ratio"].strip() == "vector(0.99)"
    assert recorded["orchestra:spend_threshold:increase1h"].strip() == "vector(10)"
    for setting in SETTINGS:
        users = [name for name, expr in recorded.items() if setting in recorded_names(expr)]
        assert len(users) == 1, (setting, users)
        expr = recorded[users[0]]
        # The override (a record with a workflow_id label) wins, else the default.
        assert f'{setting}{{workflow_id!=""}}' in expr and f'{setting}{{workflow_id=""}}' in expr


def test_recording_rules_are_defined_before_use_in_the_same_group() -> None:
    """An alert on a recording rule of the same group sees its value of the same evaluation."""
    for group in load(RULES)["groups"]:
        defined: set[str] = set()
        for rule in group["rules"]:
            missing = recorded_names(rule["expr"]) - defined
            assert not missing, f"{rule.get('alert') or rule['record']} uses {sorted(missing)}"
            if "record" in rule:
                assert ":" in rule["record"], "recording rules are named level:metric:operations"
                defined.add(rule["record"])


def test_the_alerts() -> None:
    found = alerts()
    assert set(found) == EXPECTED_ALERTS
    for name, rule in found.items():
        assert "for" in rule, name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{name} lacks annotations.{key}"
        for key, text in annotations.items():
            assert "\n" not in text, f"{name}: annotations.{key} is one paragraph"
        assert annotations["runbook_url"].endswith(f"#{name.lower()}"), name
        assert "$externalLabels.runbook_url" in annotations["runbook_url"], name
    for name in WORKFLOW_ALERTS:
        annotations = found[name]["annotations"]
        text = annotations["summary"] + annotations["description"]
        assert "{{ $labels.workflow }}" in text, name
        # Where to look: trace searches of that workflow, built from its labels.
        for key, base in (("grafana_traces", "grafana_url"), ("jaeger_traces", "jaeger_url")):
            assert f"$externalLabels.{base}" in annotations[key], (name, key)
            assert "$labels.workflow_id" in annotations[key], (name, key)
            assert "urlquery" in annotations[key], (name, key)
    for name in EXPECTED_ALERTS - WORKFLOW_ALERTS:
        assert "$externalLabels.grafana_url" in found[name]["annotations"]["dashboard"], name
    for key in ("grafana_traces", "jaeger_traces"):
        assert "$labels.node" in found[STEP_ALERT]["annotations"][key], key
    step = found[STEP_ALERT]
    assert step["for"] == "0m", "a failed step alerts at the first evaluation that sees it"
    assert "{{ $labels.node }}" in step["annotations"]["summary"]
    assert (
        'orchestra_steps_total{outcome="failed"}'
        in recordings()["workflow_node:orchestra_steps_failed:increase5m"]
    )
    down = found["OrchestraExporterDown"]["expr"]
    assert f'up{{job="{JOB}"}} == 0' in down and f'absent(up{{job="{JOB}"}})' in down


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = load(RULE_TESTS)
    assert tests["rule_files"] == [RULES.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
            for alert in check.get("exp_alerts") or []:
                assert alert["exp_labels"]["severity"], check
                assert set(alert["exp_annotations"]) >= {"summary", "description", "runbook"}
    assert firing == EXPECTED_ALERTS, sorted(EXPECTED_ALERTS - firing)
    assert quiet == EXPECTED_ALERTS, sorted(EXPECTED_ALERTS - quiet)
    names = [case["name"] for case in tests["tests"]]
    assert any("fires within one evaluation interval" in name for name in names)


def test_every_recording_rule_has_a_unit_test() -> None:
    tests = load(RULE_TESTS)
    tested = {
        name
        for case in tests["tests"]
        for check in case.get("promql_expr_test", [])
        for name in recorded_names(check["expr"])
        if check.get("exp_samples")
    }
    assert set(recordings()) <= tested, sorted(set(recordings()) - tested)


def test_every_alert_has_a_runbook_section() -> None:
    """deploy/prometheus/README.md has a section per alert, where runbook_url points."""
    headings = {
        line.removeprefix("### ").strip()
        for line in README.read_text(encoding="utf-8").splitlines()
        if line.startswith("### ")
    }
    assert headings >= EXPECTED_ALERTS, sorted(EXPECTED_ALERTS - headings)
    text = README.read_text(encoding="utf-8")
    for name in EXPECTED_ALERTS:
        section = text.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        assert "What to do" in section, name
        assert "Where to look" in section, name


def test_the_spend_alert_is_per_workflow_and_currency_with_an_example_threshold() -> None:
    """Spend is summed over the models of a workflow, never across currencies, and the
    shipped threshold is said to be an example wherever a user meets it."""
    spend = recordings()["workflow_currency:orchestra_cost:increase1h"]
    assert "sum by (workflow_id, workflow, currency)" in spend
    assert "increase(orchestra_cost_total[1h])" in spend
    alert = alerts()[SPEND_ALERT]
    assert "workflow_currency:orchestra_cost:increase1h" in alert["expr"]
    assert "workflow:orchestra_spend_threshold:increase1h" in alert["expr"]
    assert "{{ $labels.currency }}" in alert["annotations"]["summary"]
    rules_text = RULES.read_text(encoding="utf-8")
    default_comment = rules_text.split("- record: orchestra:spend_threshold:increase1h", 1)[0]
    assert "EXAMPLE default" in default_comment.rsplit("\n\n", 1)[-1]
    section = README.read_text(encoding="utf-8").split(f"### {SPEND_ALERT}\n", 1)[1]
    assert "example" in section.split("\n### ", 1)[0].lower()


@pytest.mark.parametrize("config", sorted(TARGETS), ids=lambda path: path.name)
def test_the_example_prometheus_config(config: Path) -> None:
    data = load(config)
    rule_files = [PROMETHEUS_DIR / path for path in data["rule_files"]]
    assert rule_files == [RULES]
    jobs = {job["job_name"]: job for job in data["scrape_configs"]}
    assert set(jobs) == {JOB}
    targets = [t for sc in jobs[JOB]["static_configs"] for t in sc["targets"]]
    assert targets == [TARGETS[config]]
    # The unit tests assume the evaluation interval of the example config.
    assert data["global"]["evaluation_interval"] == load(RULE_TESTS)["evaluation_interval"]
    (alertmanagers,) = data["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == [ALERTMANAGERS[config]]
    # The base URLs of the links in the alerts' annotations.
    labels = data["global"]["external_labels"]
    assert set(labels) >= {"grafana_url", "jaeger_url"}
    assert all(url.startswith("http") and not url.endswith("/") for url in labels.values())


def test_the_compose_config_differs_only_in_the_targets() -> None:
    host, compose = load(CONFIG), load(COMPOSE_CONFIG)
    compose["scrape_configs"][0]["static_configs"][0]["targets"] = [TARGETS[CONFIG]]
    compose["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [
        ALERTMANAGERS[CONFIG]
    ]
    assert compose == host
