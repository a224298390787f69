"""Golden files: the documented payloads -> the exact spans we export (as OTLP JSON).

Regenerate only on purpose: `pytest tests/golden --update-golden`, then read the diff.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from exporter.mapping.cost import Price, PriceTable
from exporter.mapping.graph import WorkflowGraph, graph_from_api, graph_from_mermaid
from exporter.mapping.options import MappingOptions, default_scope
from exporter.mapping.spans import WorkflowInfo, map_run
from exporter.mapping.timeparse import parse_timestamp_ns
from exporter.sink.encoding import LOGS, Framer, parse_request, request_to_dict, to_otlp_dict
from exporter.source.models import Run, Step, Workflow, parse_records

TESTDATA = Path(__file__).parent / "testdata"
SEED_RUN_ID = "5b69669f-975a-49af-a33a-61ff9ae5a20f"
JOKE_WORKFLOW_ID = "7c1e2f34-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
HI_WORKFLOW_ID = "1234f567-bb12-1234-b7cd-f7a71a98cd24"
# A fixed scope version keeps the golden files independent of the package version.
OPTIONS = MappingOptions(scope=default_scope("golden"))
# A caller's span context, as a service that started the run would pass it.
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def load(shared_dir: Path, name: str) -> Any:
    return json.loads((shared_dir / "fixtures" / name).read_text(encoding="utf-8"))


def seed_steps(shared_dir: Path) -> list[Any]:
    """The steps example exactly as the docs print it (prose, then the JSON array)."""
    text = (shared_dir / "seed" / "steps-api-doc.txt").read_text(encoding="utf-8")
    start = text.index("\n[") + 1
    document, _ = json.JSONDecoder().raw_decode(text[start:])
    assert isinstance(document, list)
    return document


def workflow_info(shared_dir: Path, workflow_id: str) -> WorkflowInfo:
    workflows, rejected = parse_records(load(shared_dir, "workflows.json"), Workflow)
    assert not rejected
    chosen = next(wf for wf in workflows if wf.workflow_id == workflow_id)
    return WorkflowInfo(chosen.workflow_id, chosen.name, graph_from_api(chosen.graph))


def steps_of(document: list[Any]) -> list[Step]:
    steps, rejected = parse_records(document, Step)
    assert not rejected
    return steps


@dataclass(frozen=True)
class Case:
    name: str
    workflow: WorkflowInfo
    run: Run
    steps: list[Step]
    options: MappingOptions = OPTIONS
    problem: str | None = None  # the one problem the mapping must report, if any


def with_inputs(run: Run, **inputs: Any) -> Run:
    return run.model_copy(update={"inputs": {**(run.inputs or {}), **inputs}})


# Prices of the golden cases (a placeholder table: these are not Arcee's prices).
PRICES = PriceTable(
    "USD",
    {
        "virtuoso-medium": (
            Price(parse_timestamp_ns("2025-01-01T00:00:00Z"), 0.5, 1.5, 0.05),
            # The seed run started 2025-03-13T02:41:15Z: it is priced at the older price.
            Price(parse_timestamp_ns("2025-03-13T12:00:00Z"), 5.0, 15.0),
        ),
    },
)
# The same model repriced before the seed run: the run takes the new price.
PRICE_CHANGED = PriceTable(
    "USD",
    {
        "virtuoso-medium": (
            Price(parse_timestamp_ns("2025-01-01T00:00:00Z"), 0.5, 1.5, 0.05),
            Price(parse_timestamp_ns("2025-03-13T00:00:00Z"), 0.8, 2.4),
        ),
    },
)
UNPRICED = PriceTable("USD", {"virtuoso-large": (Price(0, 1.0, 3.0),)})
FANOUT_WORKFLOW_ID = "f4a0f4a0-0000-4000-8000-00000000fa00"
FANOUT_RUN_ID = "f4a0f4a0-0000-4000-8000-0000000000r1".replace("r1", "01")


def fanout_case_records() -> tuple[WorkflowInfo, Run, list[Step]]:
    """A constructed fan-out: fetch -> (summarise, classify) -> report, START and END.

    classify takes longer than summarise, so the critical path is fetch, classify, report;
    report waits 0.3 s after classify ends, and the run ends 0.2 s after report.
    """
    graph = {
        "nodes": {n: {"type": "code"} for n in ("fetch", "summarise", "classify", "report")},
        "edges": [
            ["START", "fetch"],
            ["fetch", "summarise"],
            ["fetch", "classify"],
            ["summarise", "report"],
            ["classify", "report"],
            ["report", "END"],
        ],
    }
    info = WorkflowInfo(FANOUT_WORKFLOW_ID, "fan-out", graph_from_api(graph))
    times = {  # node: (start, end), seconds after 10:00:00
        "fetch": (0.5, 1.5),
        "summarise": (1.6, 2.1),
        "classify": (1.7, 3.2),
        "report": (3.5, 4.0),
    }
    steps = steps_of(
        [
            {
                "id": f"step-{node}",
                "node_id": node,
                "status": "completed",
                "start_time": f"2025-03-14T10:00:{start:09.6f}Z",
                "end_time": f"2025-03-14T10:00:{end:09.6f}Z",
                "inputs": {"input_data": {}},
                "outputs": {"successful": True, "data": {"sandbox_id": "sbx"}},
            }
            for node, (start, end) in times.items()
        ]
    )
    run = Run(
        id=FANOUT_RUN_ID,
        status="completed",
        start_time="2025-03-14T10:00:00.000000Z",
        end_time="2025-03-14T10:00:04.200000Z",
    )
    return info, run, steps


def failed_steps(document: list[Any]) -> list[Step]:
    """The documented steps, failing: the model with an exception, Slack with an error code."""
    model, slack = json.loads(json.dumps(document))
    model["status"] = "failed"
    model["error"] = "RateLimitError: upstream model returned 429"
    slack["outputs"]["result"].update(
        {"successful": False, "successfull": False, "error": {"code": "channel_not_found"}}
    )
    return steps_of([model, slack])


def cases(shared_dir: Path) -> list[Case]:
    joke = workflow_info(shared_dir, JOKE_WORKFLOW_ID)
    runs = [Run.model_validate(item) for item in load(shared_dir, "runs-list.json")]
    seed_run = next(run for run in runs if run.id == SEED_RUN_ID)
    older_run = next(run for run in runs if run.id != SEED_RUN_ID)
    hi_run = Run.model_validate(load(shared_dir, "run.json")[0])
    fixture_steps = steps_of(load(shared_dir, "steps-model-slack.json"))
    content = MappingOptions(scope=OPTIONS.scope, capture_content=True, content_max_length=64)
    semconv = MappingOptions(
        scope=OPTIONS.scope, capture_content=True, content_max_length=256, span_names="semconv"
    )
    parent = MappingOptions(scope=OPTIONS.scope, traceparent_mode="parent")
    called = with_inputs(seed_run, traceparent=TRACEPARENT)
    fanout, fanout_run, fanout_steps = fanout_case_records()
    failed_run = seed_run.model_copy(
        update={"status": "failed", "error": "TimeoutError: the run exceeded 300 s"}
    )
    return [
        Case("joke-to-slack-run", joke, seed_run, fixture_steps),
        Case("joke-to-slack-run-content", joke, seed_run, fixture_steps, content),
        Case(
            "joke-to-slack-run-openinference",
            joke,
            seed_run,
            fixture_steps,
            MappingOptions(
                scope=OPTIONS.scope, capture_content=True, content_max_length=64, openinference=True
            ),
        ),
        # The documented steps with neither the run record nor the graph, as `convert` sees them.
        Case(
            "seed-steps-no-graph",
            WorkflowInfo(JOKE_WORKFLOW_ID),
            Run(id=SEED_RUN_ID, end_time="2025-03-13T02:41:19.179523Z"),
            steps_of(seed_steps(shared_dir)),
        ),
        Case("joke-to-slack-history-run", joke, older_run, []),
        Case("hi-run", workflow_info(shared_dir, HI_WORKFLOW_ID), hi_run, []),
        # ORCHESTRA_SPAN_NAMES=semconv: chat {model}, execute_tool {tool}, invoke_workflow.
        Case("joke-to-slack-run-semconv", joke, seed_run, fixture_steps, semconv),
        # A caller's traceparent in the run's inputs: a link, or (parent mode) the parent.
        Case("joke-to-slack-run-traceparent-link", joke, called, fixture_steps),
        Case("joke-to-slack-run-traceparent-parent", joke, called, fixture_steps, parent),
        Case(
            "joke-to-slack-run-traceparent-malformed",
            joke,
            with_inputs(seed_run, traceparent="00-not-a-traceparent-01"),
            fixture_steps,
            problem="inputs.traceparent is not a W3C traceparent (ignored)",
        ),
        # Failures: an exception (event) beside an error code (error.type only).
        Case(
            "joke-to-slack-run-failed",
            joke,
            failed_run,
            failed_steps(load(shared_dir, "steps-model-slack.json")),
        ),
        # Failures as logs: an ERROR record per failure beside the spans; with the
        # exception signal opted into logs, the exception moves from the span to the log.
        Case(
            "joke-to-slack-run-failed-logs",
            joke,
            failed_run,
            failed_steps(load(shared_dir, "steps-model-slack.json")),
            MappingOptions(scope=OPTIONS.scope, failure_logs=True),
        ),
        Case(
            "joke-to-slack-run-failed-exception-logs",
            joke,
            failed_run,
            failed_steps(load(shared_dir, "steps-model-slack.json")),
            MappingOptions(scope=OPTIONS.scope, failure_logs=True, exception_signal="logs"),
        ),
        # Cost: priced at the price in effect when the run started; repriced; no price.
        Case("joke-to-slack-run-priced", joke, seed_run, fixture_steps, priced(PRICES)),
        Case(
            "joke-to-slack-run-price-changed", joke, seed_run, fixture_steps, priced(PRICE_CHANGED)
        ),
        Case(
            "joke-to-slack-run-unpriced",
            joke,
            seed_run,
            fixture_steps,
            priced(UNPRICED),
            problem="no price in ORCHESTRA_PRICES: its steps carry no cost",
        ),
        # Where the time went: waits, queue moments, overhead, a known critical path.
        Case("fanout-run", fanout, fanout_run, fanout_steps),
        Case(
            "fanout-run-wait-spans",
            fanout,
            fanout_run,
            fanout_steps,
            MappingOptions(scope=OPTIONS.scope, wait_spans=True),
        ),
    ]


def priced(table: PriceTable) -> MappingOptions:
    return MappingOptions(scope=OPTIONS.scope, prices=table, openinference=True)


def render(case: Case) -> dict[str, Any]:
    mapped = map_run(case.workflow, case.run, case.steps, case.options)
    reasons = [problem.reason for problem in mapped.problems]
    assert reasons == ([case.problem] if case.problem else [])
    return to_otlp_dict(Framer.of(case.options.resource, case.options.scope), mapped.all_spans())


def render_logs(case: Case) -> dict[str, Any] | None:
    """The failure logs of the case as an OTLP JSON logs request; None without any."""
    mapped = map_run(case.workflow, case.run, case.steps, case.options)
    if not mapped.logs:
        return None
    framer = Framer.of(case.options.resource, case.options.scope)
    payloads = [record.SerializeToString() for record in mapped.logs]
    return request_to_dict(parse_request(LOGS, framer.request(payloads)))


def graph_document(graph: WorkflowGraph) -> dict[str, Any]:
    return {
        "node_types": dict(graph.node_types),
        "upstream": {node: list(parents) for node, parents in graph.upstream.items()},
    }


def check_golden(request: pytest.FixtureRequest, name: str, actual: dict[str, Any]) -> None:
    path = TESTDATA / f"{name}.json"
    text = json.dumps(actual, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    if request.config.getoption("--update-golden"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run pytest tests/golden --update-golden"
    assert json.loads(path.read_text(encoding="utf-8")) == actual, (
        f"spans differ from {path}; if the change is intended, rerun with --update-golden"
    )


CASE_NAMES = [
    "joke-to-slack-run",
    "joke-to-slack-run-content",
    "joke-to-slack-run-openinference",
    "seed-steps-no-graph",
    "joke-to-slack-history-run",
    "hi-run",
    "joke-to-slack-run-semconv",
    "joke-to-slack-run-traceparent-link",
    "joke-to-slack-run-traceparent-parent",
    "joke-to-slack-run-traceparent-malformed",
    "joke-to-slack-run-failed",
    "joke-to-slack-run-failed-logs",
    "joke-to-slack-run-failed-exception-logs",
    "joke-to-slack-run-priced",
    "joke-to-slack-run-price-changed",
    "joke-to-slack-run-unpriced",
    "fanout-run",
    "fanout-run-wait-spans",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_fixture_maps_to_golden_spans(
    name: str, shared_dir: Path, request: pytest.FixtureRequest
) -> None:
    case = next(c for c in cases(shared_dir) if c.name == name)
    check_golden(request, name, render(case))
    logs = render_logs(case)
    assert (logs is not None) == case.options.failure_logs, name
    if logs is not None:
        check_golden(request, f"{name}.logs", logs)


def test_every_case_has_a_name_in_the_list(shared_dir: Path) -> None:
    assert [case.name for case in cases(shared_dir)] == CASE_NAMES


def test_graphs_of_the_fixtures(shared_dir: Path, request: pytest.FixtureRequest) -> None:
    workflows = {wf["workflow_id"]: wf for wf in load(shared_dir, "workflows.json")}
    document = {wid: graph_document(graph_from_api(wf["graph"])) for wid, wf in workflows.items()}
    document["diagram.json"] = graph_document(
        graph_from_mermaid(load(shared_dir, "diagram.json")["diagram"])
    )
    check_golden(request, "graphs", document)


def test_seed_run_is_one_trace_with_the_documented_values(shared_dir: Path) -> None:
    """The acceptance example of the core issue, checked field by field."""
    case = next(c for c in cases(shared_dir) if c.name == "joke-to-slack-run")
    spans = render(case)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert {span["traceId"] for span in spans} == {SEED_RUN_ID.replace("-", "")}
    roots = [span for span in spans if "parentSpanId" not in span]
    assert len(roots) == 1
    root = roots[0]
    children = {span["name"]: span for span in spans if span.get("parentSpanId")}
    assert set(children) == {"model", "slack_integration"}
    assert all(child["parentSpanId"] == root["spanId"] for child in children.values())
    model, slack = children["model"], children["slack_integration"]
    # 2025-03-13T02:41:15.144470Z etc., to the microsecond, as integer nanoseconds.
    assert model["startTimeUnixNano"] == "1741833675144470000"
    assert model["endTimeUnixNano"] == "1741833677382162000"
    assert slack["startTimeUnixNano"] == "1741833677403879000"
    assert slack["endTimeUnixNano"] == "1741833679179523000"
    # The root covers the run's recorded window (which covers both steps).
    assert root["startTimeUnixNano"] == "1741833675021907000"
    assert root["endTimeUnixNano"] == "1741833679201337000"
    attributes = {a["key"]: a["value"] for a in model["attributes"]}
    assert attributes["gen_ai.usage.input_tokens"] == {"intValue": "36"}
    assert attributes["gen_ai.usage.output_tokens"] == {"intValue": "48"}
    assert attributes["gen_ai.request.model"] == {"stringValue": "virtuoso-medium"}
    assert model["kind"] == "SPAN_KIND_CLIENT"
    slack_attributes = {a["key"]: a["value"] for a in slack["attributes"]}
    assert slack_attributes["gen_ai.operation.name"] == {"stringValue": "execute_tool"}
    assert slack_attributes["gen_ai.tool.name"] == {
        "stringValue": "SLACK_SHARE_A_ME_MESSAGE_IN_A_CHANNEL"
    }
    assert slack["links"][0]["spanId"] == model["spanId"]
    # Content capture is off by default: no prompt or output anywhere.
    flat = json.dumps(spans)
    assert "Tell me a joke" not in flat and "forecast" not in flat


def test_re_export_is_byte_identical(shared_dir: Path) -> None:
    for case in cases(shared_dir):
        first = json.dumps(render(case), sort_keys=True)
        again = json.dumps(render(case), sort_keys=True)
        assert first == again


def test_spooled_spans_come_back_identical(shared_dir: Path) -> None:
    """Spans wait in the ledger as OTLP bytes; a request framed from them is the golden one."""
    from exporter.spool import outgoing_span

    for case in cases(shared_dir):
        mapped = map_run(case.workflow, case.run, case.steps, case.options)
        framer = Framer.of(case.options.resource, case.options.scope)
        spooled = [outgoing_span(span).payload for span in mapped.all_spans()]
        request = ExportTraceServiceRequest.FromString(framer.request(spooled))
        assert request_to_dict(request) == to_otlp_dict(framer, mapped.all_spans()), case.name
