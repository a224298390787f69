"""Workflow metric series that exist before their first event, the caps, runs in flight.

Alert rules built on increase() see an event only in a series that existed before it, so
the daemon creates the counter series of every known workflow and node at 0
(`MetricBook.seed`). These tests pin what that may and may not do: never touch persisted
totals, never reach the ledger, respect the cardinality caps without taking slots in a
surprising way, and produce exactly the labels the spans will count into.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.emulator import Scenario
from exporter.emulator.demo import (
    JOKE_TO_SLACK_ID,
    NIGHTLY_REPORT_ID,
    SUPPORT_TRIAGE_ID,
    demo_workflows,
)
from exporter.mapping.graph import WorkflowGraph, graph_from_api
from exporter.mapping.spans import MappingOptions, WorkflowInfo, map_run
from exporter.source.models import Run, Step, Workflow, parse_records
from exporter.telemetry import Telemetry
from exporter.workflow_metrics import (
    OTHER,
    RUNS,
    STEPS,
    InFlightCollector,
    MetricBook,
    RunsInFlight,
    samples_of,
)
from tests.support.clock import ManualClock

OPTIONS = MappingOptions()


def info(workflow_id: str, name: str | None = None, **node_types: str) -> WorkflowInfo:
    return WorkflowInfo(workflow_id, name, WorkflowGraph(node_types=node_types))


def steps_series(book: MetricBook) -> dict[tuple[str, ...], float]:
    return {labels: s.count for (name, labels), s in book.series.items() if name == STEPS.name}


def runs_series(book: MetricBook) -> dict[tuple[str, ...], float]:
    return {labels: s.count for (name, labels), s in book.series.items() if name == RUNS.name}


# --------------------------------------------------------------------------- zero series


def test_discovery_creates_both_outcomes_of_every_typed_node_and_of_the_runs_at_zero() -> None:
    book = MetricBook()
    book.seed_workflow(info("wf-1", "invoices", classify="model", post="integration"), OPTIONS)
    assert steps_series(book) == {
        ("wf-1", "invoices", "classify", "model", "completed"): 0,
        ("wf-1", "invoices", "classify", "model", "failed"): 0,
        ("wf-1", "invoices", "post", "integration", "completed"): 0,
        ("wf-1", "invoices", "post", "integration", "failed"): 0,
    }
    assert runs_series(book) == {
        ("wf-1", "invoices", "completed"): 0,
        ("wf-1", "invoices", "failed"): 0,
    }


def test_a_workflow_without_a_name_is_labelled_with_its_id_as_its_spans_are() -> None:
    book = MetricBook()
    book.seed_workflow(info("wf-1", None, a="code"), OPTIONS)
    assert ("wf-1", "wf-1", "a", "code", "failed") in steps_series(book)


def test_zero_series_never_reach_the_ledger_and_count_up_from_zero() -> None:
    book = MetricBook()
    book.seed_workflow(info("wf-1", "invoices", classify="model"), OPTIONS)
    spans = _mapped_failure()
    rows = book.apply([s for span in spans for s in samples_of(span)], now=1.0)
    written = {(name, tuple(json.loads(labels))) for name, labels, _ in rows}
    # Only what the event changed is written: the untouched zero series are not.
    assert all(book.series[key].count > 0 for key in written)
    assert (STEPS.name, ("wf-1", "invoices", "classify", "model", "completed")) not in written
    assert steps_series(book)[("wf-1", "invoices", "classify", "model", "failed")] == 1
    assert steps_series(book)[("wf-1", "invoices", "classify", "model", "completed")] == 0


def test_persisted_totals_win_whatever_the_order_and_a_restart_neither_resets_nor_doubles() -> None:
    before = MetricBook()
    before.seed_workflow(info("wf-1", "invoices", classify="model"), OPTIONS)
    rows = before.apply([s for span in _mapped_failure() for s in samples_of(span)], now=1.0)

    # A restart: the totals are loaded, then discovery seeds again (the daemon's order).
    after = MetricBook()
    after.load(rows)
    after.seed_workflow(info("wf-1", "invoices", classify="model"), OPTIONS)
    assert steps_series(after) == steps_series(before)
    assert steps_series(after)[("wf-1", "invoices", "classify", "model", "failed")] == 1
    # Seeding again (every discovery) changes nothing either.
    after.seed_workflow(info("wf-1", "invoices", classify="model"), OPTIONS)
    assert steps_series(after) == steps_series(before)

    # Loaded totals also win over zero series created before them.
    late = MetricBook()
    late.seed_workflow(info("wf-1", "invoices", classify="model"), OPTIONS)
    late.load(rows)
    assert steps_series(late) == steps_series(before)


def test_discovery_labels_are_exactly_those_the_spans_count_into() -> None:
    """Map real emulator runs of the demo workflows (every node once completed, once
    failed where it can fail): their counter samples land only in seeded series."""
    workflows, runs = _demo_records()
    book = MetricBook()
    for workflow in workflows:
        book.seed_workflow(workflow, OPTIONS)
    seeded = set(book.series)
    counted = set()
    for workflow, run, steps in runs:
        mapped = map_run(workflow, run, steps, OPTIONS)
        for span in mapped.all_spans():
            for sample in samples_of(span):
                if sample.metric in (STEPS, RUNS):
                    counted.add((sample.metric.name, sample.labels))
    assert counted, "the emulator produced no runs"
    assert {labels[-1] for _, labels in counted} == {"completed", "failed"}
    assert counted <= seeded, sorted(counted - seeded)


def test_a_node_unknown_to_the_graph_gets_its_zero_series_when_a_step_is_mapped() -> None:
    book = MetricBook()
    book.seed_workflow(info("wf-1", "invoices"), OPTIONS)  # discovery knew no node
    spans = _mapped_completion(node="summarise")
    book.seed_spans(spans)
    assert steps_series(book) == {
        ("wf-1", "invoices", "summarise", "unknown", "completed"): 0,
        ("wf-1", "invoices", "summarise", "unknown", "failed"): 0,
    }
    book.apply([s for span in spans for s in samples_of(span)], now=1.0)
    assert steps_series(book)[("wf-1", "invoices", "summarise", "unknown", "completed")] == 1
    assert steps_series(book)[("wf-1", "invoices", "summarise", "unknown", "failed")] == 0


# --------------------------------------------------------------------------- the caps


def test_workflows_beyond_the_cap_get_no_zero_series_and_no_other_series() -> None:
    book = MetricBook(max_workflows=2, max_nodes=10)
    for workflow_id in ("wf-1", "wf-2", "wf-3", "wf-4"):
        book.seed_workflow(info(workflow_id, workflow_id.upper(), a="code"), OPTIONS)
    workflows = {labels[0] for labels in steps_series(book)} | {
        labels[0] for labels in runs_series(book)
    }
    assert workflows == {"wf-1", "wf-2"}
    # Their events still count, under `other`, as before.
    book.apply([s for span in _mapped_failure("wf-3") for s in samples_of(span)], now=1.0)
    assert steps_series(book)[(OTHER, OTHER, "classify", "model", "failed")] == 1


def test_persisted_workflows_keep_their_slots_before_discovery_takes_any() -> None:
    persisted = MetricBook()
    rows = persisted.apply(
        [s for span in _mapped_failure("wf-9") for s in samples_of(span)], now=1.0
    )
    book = MetricBook(max_workflows=2)
    book.load(rows)
    for workflow_id in ("wf-1", "wf-2", "wf-3"):
        book.seed_workflow(info(workflow_id, None, a="code"), OPTIONS)
    assert {labels[0] for labels in runs_series(book)} == {"wf-9", "wf-1"}


def test_nodes_beyond_the_cap_of_a_workflow_get_the_other_zero_series_they_will_count_into() -> (
    None
):
    book = MetricBook(max_nodes=2)
    nodes = {"a": "code", "b": "code", "c": "model", "d": "model"}
    book.seed_workflow(info("wf-1", "w", **nodes), OPTIONS)
    assert {labels[2:4] for labels in steps_series(book)} == {
        ("a", "code"),
        ("b", "code"),
        (OTHER, "model"),
    }
    assert all(value == 0 for value in steps_series(book).values())


def test_the_nodes_of_the_other_workflow_are_capped_too() -> None:
    book = MetricBook(max_workflows=1, max_nodes=2)
    book.seed_workflow(info("wf-1", "w", a="code"), OPTIONS)
    for index in range(5):  # five overflowing workflows, each with its own node name
        spans = _mapped_failure(f"wf-x{index}", node=f"node-{index}")
        book.apply([s for span in spans for s in samples_of(span)], now=1.0)
    other_nodes = {labels[2] for labels in steps_series(book) if labels[0] == OTHER}
    assert other_nodes == {"node-0", "node-1", OTHER}


# --------------------------------------------------------------------------- in flight


def run(run_id: str, status: str, start: str | None, end: str | None = None) -> Run:
    runs, rejected = parse_records(
        [{"id": run_id, "status": status, "start_time": start, "end_time": end}], Run
    )
    assert not rejected
    return runs[0]


T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z


def test_runs_in_flight_and_the_age_of_the_oldest_at_scrape_time() -> None:
    clock = ManualClock(T0)
    telemetry = Telemetry()
    telemetry.in_flight = RunsInFlight(telemetry.book, clock)
    registry = CollectorRegistry()
    registry.register(InFlightCollector(telemetry.in_flight))
    wf1, wf2 = info("wf-1", "invoices"), info("wf-2", None)
    telemetry.in_flight.observe(
        wf1,
        [
            run("r1", "running", "2025-06-15T15:05:00Z"),  # 100 s before T0
            run("r2", "running", "2025-06-15T15:06:20Z"),  # 20 s before T0
            run("r3", "completed", "2025-06-15T15:00:00Z", "2025-06-15T15:01:00Z"),
            run("r4", "failed", "2025-06-15T14:00:00Z", "2025-06-15T14:01:00Z"),
        ],
        OPTIONS,
    )
    telemetry.in_flight.observe(wf2, [], OPTIONS)
    assert _gauges(registry) == {
        ("orchestra_runs_in_flight", "wf-1", "invoices"): 2,
        ("orchestra_run_in_flight_oldest_age_seconds", "wf-1", "invoices"): 100,
        ("orchestra_runs_in_flight", "wf-2", "wf-2"): 0,
        ("orchestra_run_in_flight_oldest_age_seconds", "wf-2", "wf-2"): 0,
    }
    clock.advance(30)  # computed at scrape time: the age grows between polls
    assert (
        _gauges(registry)[("orchestra_run_in_flight_oldest_age_seconds", "wf-1", "invoices")] == 130
    )

    # The oldest run ends; a run without a readable start counts from when it was seen.
    telemetry.in_flight.observe(
        wf1,
        [
            run("r1", "completed", "2025-06-15T15:05:00Z", "2025-06-15T15:07:00Z"),
            run("r2", "running", "2025-06-15T15:06:20Z"),
            run("r5", "running", "not a time"),
        ],
        OPTIONS,
    )
    clock.advance(10)
    gauges = _gauges(registry)
    assert gauges[("orchestra_runs_in_flight", "wf-1", "invoices")] == 2
    assert gauges[("orchestra_run_in_flight_oldest_age_seconds", "wf-1", "invoices")] == 60

    # A poll of wf-1 that failed (no observe) keeps its runs; discovery drops lost workflows.
    telemetry.discovered([wf1], OPTIONS)
    gauges = _gauges(registry)
    assert ("orchestra_runs_in_flight", "wf-2", "wf-2") not in gauges
    assert gauges[("orchestra_runs_in_flight", "wf-1", "invoices")] == 2

    # Everything ended: 0 runs, age 0 (the series stays, so the alert resolves).
    telemetry.in_flight.observe(wf1, [], OPTIONS)
    gauges = _gauges(registry)
    assert gauges[("orchestra_runs_in_flight", "wf-1", "invoices")] == 0
    assert gauges[("orchestra_run_in_flight_oldest_age_seconds", "wf-1", "invoices")] == 0


def test_runs_in_flight_of_workflows_beyond_the_cap_add_up_under_other() -> None:
    clock = ManualClock(T0)
    book = MetricBook(max_workflows=1)
    in_flight = RunsInFlight(book, clock)
    registry = CollectorRegistry()
    registry.register(InFlightCollector(in_flight))
    in_flight.observe(info("wf-1"), [run("a", "running", "2025-06-15T15:06:30Z")], OPTIONS)
    in_flight.observe(info("wf-2"), [run("b", "running", "2025-06-15T15:06:00Z")], OPTIONS)
    in_flight.observe(info("wf-3"), [run("c", "running", "2025-06-15T15:05:00Z")], OPTIONS)
    gauges = _gauges(registry)
    assert gauges[("orchestra_runs_in_flight", OTHER, OTHER)] == 2
    assert gauges[("orchestra_run_in_flight_oldest_age_seconds", OTHER, OTHER)] == 100
    assert gauges[("orchestra_runs_in_flight", "wf-1", "wf-1")] == 1


# --------------------------------------------------------------------------- helpers


def _gauges(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, sample.labels["workflow_id"], sample.labels["workflow"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _mapped_failure(workflow_id: str = "wf-1", node: str = "classify") -> list[Any]:
    steps = [_step(node, "failed", error="RateLimitError: 429", model=True)]
    return _mapped(workflow_id, steps, "failed")


def _mapped_completion(workflow_id: str = "wf-1", node: str = "classify") -> list[Any]:
    return _mapped(workflow_id, [_step(node, "completed")], "completed")


def _mapped(workflow_id: str, steps: list[dict[str, Any]], status: str) -> list[Any]:
    name = "invoices" if workflow_id == "wf-1" else workflow_id.upper()
    parsed, rejected = parse_records(steps, Step)
    assert not rejected
    mapped = map_run(
        info(workflow_id, name),
        run("run-" + workflow_id, status, "2025-03-13T02:41:15Z", "2025-03-13T02:41:59Z"),
        parsed,
        OPTIONS,
    )
    return mapped.all_spans()


def _step(node: str, status: str, *, error: str | None = None, model: bool = False) -> dict:
    record: dict[str, Any] = {
        "id": f"step-{node}",
        "node_id": node,
        "status": status,
        "start_time": "2025-03-13T02:41:16Z",
        "end_time": "2025-03-13T02:41:18Z",
        "error": error,
        "inputs": {},
        "outputs": {"data": {"results": 1}},
    }
    if model:
        record["inputs"] = {"model": "virtuoso-large", "messages": []}
    return record


def _demo_records() -> tuple[list[WorkflowInfo], list[tuple[WorkflowInfo, Run, list[Step]]]]:
    """The demo workflows as discovery sees them, and finished runs in which every node
    that can fail fails once (and every node completes in another run)."""
    clock = ManualClock(T0)
    scenario = Scenario(demo_workflows(T0), clock=clock, seed=3)
    failing = {
        JOKE_TO_SLACK_ID: ["slack_integration", "model"],
        SUPPORT_TRIAGE_ID: ["draft_reply", "email_reply"],
        NIGHTLY_REPORT_ID: ["fetch_metrics"],
    }
    for workflow_id in scenario.workflow_ids():
        for index in range(4):
            scenario.add_run(workflow_id, start_at=T0 + 10 * index)
        for index, node in enumerate(failing.get(workflow_id, [])):
            scenario.add_run(workflow_id, start_at=T0 + 100 + 10 * index, fail_node=node)
    clock.advance(3600)
    listed, rejected = parse_records(scenario.workflow_records(), Workflow)
    assert not rejected
    workflows = {
        w.workflow_id: WorkflowInfo(w.workflow_id, w.name, graph_from_api(w.graph)) for w in listed
    }
    runs = []
    for workflow_id, workflow in workflows.items():
        records, _ = parse_records(scenario.runs(workflow_id) or [], Run)
        for record in records:
            steps, _ = parse_records(scenario.steps(workflow_id, record.id) or [], Step)
            runs.append((workflow, record, steps))
    return list(workflows.values()), runs
