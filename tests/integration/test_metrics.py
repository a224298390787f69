"""The alerting metrics, scraped from the real daemon and received over OTLP."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.daemon import Daemon, wait_for
from tests.support.ledger import LedgerView
from tests.support.metrics import OPENMETRICS, PROMETHEUS_TEXT, Scrape, parse
from tests.support.world import API_KEY, World

pytestmark = pytest.mark.integration


def served_step_outcomes(world: World) -> Counter[tuple[str, str]]:
    """(node, outcome) of every step of every finished run, as the emulator served them."""
    counts: Counter[tuple[str, str]] = Counter()
    for steps in world.finished_runs().values():
        for step in steps:
            failed = step["status"] == "failed" or bool(step["error"])
            outputs = step.get("outputs")
            result = outputs.get("result") if isinstance(outputs, dict) else None
            if isinstance(result, dict) and result.get("successful") is False:
                failed = True
            if isinstance(outputs, dict) and outputs.get("successful") is False:
                failed = True
            counts[(str(step["node_id"]), "failed" if failed else str(step["status"]))] += 1
    return counts


def scraped_step_outcomes(scrape: Scrape) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for sample in scrape.samples("orchestra_steps_total"):
        counts[(sample.labels["node"], sample.labels["outcome"])] += int(sample.value)
    return counts


def openmetrics(daemon: Daemon) -> Scrape:
    return daemon.metrics(accept=OPENMETRICS)


def all_exported(world: World) -> bool:
    return world.receiver.span_count() >= world.expected_span_count()


def test_counts_match_what_the_api_served_even_after_a_kill(world: World) -> None:
    expected = served_step_outcomes(world)
    assert any(outcome == "failed" for _, outcome in expected), "the scenario must fail somewhere"
    with world.daemon() as daemon:
        wait_for(lambda: all_exported(world), 20, "export")
        wait_for(lambda: scraped_step_outcomes(openmetrics(daemon)) == expected, 10, "step counts")
        runs = openmetrics(daemon).value("orchestra_runs_total")
        assert runs == len(world.finished_runs())
        daemon.kill()
    # More runs finish while it is down; the restarted daemon counts them, and only them.
    workflow_id = world.scenario.workflow_ids()[1]
    world.scenario.add_run(workflow_id, start_at=world.clock() - 20, fail_node="slack_integration")
    expected = served_step_outcomes(world)
    with world.daemon() as restarted:
        wait_for(lambda: all_exported(world), 20, "export")
        wait_for(lambda: scraped_step_outcomes(openmetrics(restarted)) == expected, 10, "recount")
        assert scraped_step_outcomes(openmetrics(restarted)) == expected, "counted twice"
        code = restarted.stop()
    assert code == 0, restarted.stderr


def test_failure_exemplar_points_at_a_failed_run(world: World) -> None:
    with world.daemon() as daemon:
        wait_for(lambda: all_exported(world), 20, "export")
        scrape = openmetrics(daemon)
        code = daemon.stop()
    assert code == 0, daemon.stderr
    # Nodes that never failed show failed=0 (created at discovery), with no run to point at.
    failed = [s for s in scrape.samples("orchestra_steps_total", outcome="failed") if s.value]
    assert failed
    failed_traces = {span.trace_id for span in world.receiver.spans() if span.status_code == 2}
    for sample in failed:
        assert sample.exemplar is not None, f"no exemplar on {sample.labels}"
        assert sample.exemplar.labels["trace_id"] in failed_traces
    # Duration histograms carry exemplars too; plain Prometheus text has none.
    assert any(s.exemplar for s in scrape.samples("orchestra_step_duration_seconds_bucket"))
    assert " # {" not in scrape_after_restart_free(world)


def scrape_after_restart_free(world: World) -> str:
    """The classic text format from a fresh daemon (no exemplars in that format)."""
    with world.daemon() as daemon:
        wait_for(daemon.ready, 15, "ready")
        text = daemon.scrape(accept=PROMETHEUS_TEXT)
        daemon.stop()
    return text


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_metrics_arrive_over_otlp(world: World, protocol: str) -> None:
    result = world.cli("once", protocol=protocol)
    assert result.returncode == 0, result.stderr
    points = world.receiver.metric_points()
    by_name = {point.name: point for point in points}
    assert {
        "orchestra.steps",
        "orchestra.runs",
        "orchestra.step.duration",
        "orchestra.run.duration",
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
    } <= set(by_name)
    assert by_name["gen_ai.client.operation.duration"].unit == "s"
    assert by_name["gen_ai.client.token.usage"].unit == "{token}"
    tokens = [p for p in points if p.name == "gen_ai.client.token.usage"]
    assert {p.attributes["gen_ai.token.type"] for p in tokens} == {"input", "output"}
    assert all("gen_ai.request.model" in p.attributes for p in tokens)
    steps = [p for p in points if p.name == "orchestra.steps"]
    assert sum(p.value for p in steps) == sum(len(s) for s in world.finished_runs().values())
    assert all(
        {"orchestra.workflow.id", "orchestra.node.id", "orchestra.outcome"} <= set(p.attributes)
        for p in steps
    )
    failed_durations = [
        p
        for p in points
        if p.name == "orchestra.step.duration" and p.attributes["orchestra.outcome"] == "failed"
    ]
    assert failed_durations and all(p.exemplar_trace_ids for p in failed_durations)
    assert not any("run" in key and "id" in key for p in points for key in p.attributes)


def test_readyz_turns_unready_when_api_or_backend_is_down(world: World) -> None:
    with world.daemon(OTEL_EXPORTER_OTLP_TIMEOUT="1") as daemon:

        def readyz() -> tuple[int, str]:
            return daemon.get("/readyz")

        wait_for(lambda: daemon.http_up() and readyz()[0] == 200, 15, "ready at first")
        world.emulator.api_key = "rotated-elsewhere"
        wait_for(lambda: readyz()[0] == 503, 15, "unready when the key is rejected")
        assert "rejects the API key" in readyz()[1]
        world.emulator.api_key = API_KEY
        wait_for(lambda: readyz()[0] == 200, 15, "ready again")
        world.receiver.stop()
        world.scenario.add_run(world.scenario.workflow_ids()[0], start_at=world.clock() - 30)
        wait_for(lambda: readyz()[0] == 503, 20, "unready when exports fail")
        assert "export is failing" in readyz()[1]
        world.receiver.start()
        wait_for(lambda: readyz()[0] == 200, 90, "ready after the backend returns")
        code = daemon.stop()
    assert code == 0, daemon.stderr
    assert LedgerView(world.state_path).spool_count() == 0


def test_the_reference_list_of_the_rules_and_dashboard_matches_a_real_scrape(
    world: World,
) -> None:
    """deploy/ (alert rules, dashboard) may only use tests/deploy/metric_names.py; that list
    must be exactly what the daemon really serves, names and labels."""
    from tests.deploy.metric_names import METRICS, family_of

    with world.daemon() as daemon:
        wait_for(lambda: all_exported(world), 20, "export")
        text = daemon.scrape(accept=PROMETHEUS_TEXT)
        daemon.stop()
    served: dict[str, set[str]] = {}
    for metric in parse(text).families:
        # Families with no sample yet (e.g. no export failed) still declare their type.
        name = metric.name + ("_total" if metric.type == "counter" else "")
        family = family_of(name)
        assert family is not None, f"served but not in the reference list: {name}"
        served.setdefault(family.name, set())
        for sample in metric.samples:
            of_sample = family_of(sample.name)
            assert of_sample is not None, f"served but not in the reference list: {sample.name}"
            served.setdefault(of_sample.name, set()).update(
                label for label in sample.labels if label != "le"
            )
    assert set(served) == set(METRICS), "reference list and scrape differ"
    for name, labels in served.items():
        assert labels <= METRICS[name].labels, f"{name}: labels {labels - METRICS[name].labels}"
