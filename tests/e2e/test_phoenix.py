"""End to end: the real CLI polls the emulator and exports into a real trace store.

Arize Phoenix stands in for Jaeger or Tempo (none of which can be installed here): the
traces are read back through its REST API and compared with the emulator's own records,
so what is checked is what a user would see in the store, not what we meant to send.

Phoenix comes from `.ci/install-phoenix` (or $PHOENIX_BIN). Without it these tests skip,
except under CI (env CI set), where a missing Phoenix is a failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.emulator import Emulator, Scenario
from exporter.emulator.demo import JOKE_TO_SLACK_ID, SUPPORT_TRIAGE_ID
from tests.e2e.phoenix import (
    REPO,
    Phoenix,
    Span,
    flat_attributes,
    parse_time,
    phoenix_binary,
    phoenix_installed,
    running_phoenix,
)
from tests.support.clock import ManualClock
from tests.support.daemon import orchestra_otel, run_command
from tests.support.world import daemon_env, demo_scenario

# One Phoenix server (a minute to start) serves the whole module: keep it on one worker.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("phoenix")]

API_KEY = "e2e-key-5b1d0c"
FAILED_STATUSES = {"failed", "error", "timeout"}
PAGE_SIZE = 20  # small on purpose: every read goes through Phoenix's paging


@pytest.fixture(scope="module")
def phoenix() -> Iterator[Phoenix]:
    binary = phoenix_binary()
    if not phoenix_installed(binary):
        reason = (
            f"Arize Phoenix is not installed at {binary}: run .ci/install-phoenix "
            "(or set PHOENIX_BIN to a phoenix executable)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with running_phoenix(binary) as server:
        yield server


# --- the world: an emulated Orchestra and the real CLI --------------------------------------


@dataclass
class World:
    scenario: Scenario
    clock: ManualClock
    emulator: Emulator
    state_path: Path
    project: str
    phoenix: Phoenix
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        settings = {
            "ORCHESTRA_EXPORT_BATCH_SIZE": "256",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "10",
            **self.phoenix.otlp_env(self.project),
            **self.extra_env,
        }
        return daemon_env(self.emulator.base_url, self.state_path, api_key=API_KEY, **settings)

    def once(self) -> subprocess.CompletedProcess[str]:
        result = run_command(orchestra_otel("once"), self.env(), timeout=120, cwd=REPO)
        assert result.returncode == 0, result.stderr
        return result

    def records(self) -> dict[str, tuple[str, dict[str, Any], list[dict[str, Any]]]]:
        """run id -> (workflow id, run record, step records), as the API shows them now."""
        found = {}
        for workflow_id in self.scenario.workflow_ids():
            for run in self.scenario.runs(workflow_id) or []:
                run_id = str(run["id"])
                found[run_id] = (workflow_id, run, self.scenario.steps(workflow_id, run_id) or [])
        return found

    def spans(self) -> list[Span]:
        return self.phoenix.spans(self.project, page_size=PAGE_SIZE)

    def wait_for_spans(self, count: int) -> list[Span]:
        self.phoenix.wait_for_spans(self.project, count, page_size=PAGE_SIZE)
        # Phoenix stores spans in the background: give strays a moment to show up too.
        time.sleep(1.0)
        return self.spans()


@pytest.fixture
def make_world(phoenix: Phoenix, tmp_path: Path) -> Iterator[Any]:
    emulators: list[Emulator] = []

    def make(seed: int, **extra_env: str) -> World:
        # Trace ids are unique across Phoenix's projects: a distinct seed per test gives
        # distinct run ids, so one test's traces never land in another's project.
        clock = ManualClock(time.time())
        # Finished runs of every workflow; one of each fails where its node says.
        scenario = demo_scenario(clock, history=3, seed=seed)
        emulator = Emulator(scenario, api_key=API_KEY)
        emulator.start()
        emulators.append(emulator)
        project = f"orchestra-e2e-{uuid.uuid4().hex[:12]}"
        return World(
            scenario, clock, emulator, tmp_path / f"ledger-{seed}.db", project, phoenix, extra_env
        )

    yield make
    for emulator in emulators:
        emulator.stop()


def export_in_two_polls(world: World) -> tuple[str, list[Span]]:
    """Two `once` polls around a run that is still in flight at the first one.

    Returns that run's id and Phoenix's spans after the second poll, once every run of
    the scenario has ended and should be stored exactly once.
    """
    # A run whose model step ends before the first poll and whose Slack step is still
    # running: its model span goes out alone, the root only once the run has ended.
    # The Slack step then fails softly (successful: false) while the run "completes".
    in_flight = world.scenario.add_run(
        JOKE_TO_SLACK_ID,
        step_durations={"model": 2.0, "slack_integration": 3.0},
        fail_node="slack_integration",
    )
    world.clock.advance(2.5)
    world.once()
    first = expected_span_count(world.records())
    spans = world.wait_for_spans(first)
    assert len(spans) == first, "Phoenix holds other spans than the finished steps and runs"
    early = [s for s in spans if s["context"]["trace_id"] == trace_id(in_flight)]
    assert [s["name"] for s in early] == ["model"], "only the finished step of a live run"

    world.clock.advance(30.0)  # the live run ends
    world.scenario.add_run(SUPPORT_TRIAGE_ID, start_at=world.clock() - 25.0)  # a new run
    world.once()
    records = world.records()
    assert all(run["end_time"] is not None for _, run, _ in records.values())
    spans = world.wait_for_spans(expected_span_count(records))
    return in_flight, spans


# --- what the records say a trace must be ----------------------------------------------------


def trace_id(run_id: str) -> str:
    return run_id.replace("-", "")


def expected_span_count(records: Mapping[str, tuple[str, dict[str, Any], list[Any]]]) -> int:
    """One root per ended run, one span per finished step."""
    count = 0
    for _, run, steps in records.values():
        count += 1 if run["end_time"] is not None else 0
        count += sum(1 for step in steps if step["status"] != "running")
    return count


def step_error(step: Mapping[str, Any]) -> str | None:
    """A step's failure message from its record: a failed status or error, or a report
    saying `successful: false` (integrations nest it in `outputs.result`)."""
    if step["status"] in FAILED_STATUSES or step.get("error"):
        return str(step["error"])
    outputs = step.get("outputs")
    if isinstance(outputs, Mapping):
        for report in (outputs.get("result"), outputs):
            if isinstance(report, Mapping) and report.get("successful") is False:
                return str(report["error"])
    return None


# "RateLimitError: ..." names an exception; "channel_not_found" is an error code.
EXCEPTION_NAME = r"[A-Za-z_][\w.]*(Error|Exception|Timeout|Failure|Exit)"
TYPE_KEYS = ("type", "code", "error_type", "name", "kind")


def step_failure_is_exception(step: Mapping[str, Any], error: str) -> bool:
    """Whether the semantic conventions call for an `exception` event on this step."""
    details = step.get("error")
    typed = isinstance(details, Mapping) and any(
        re.fullmatch(EXCEPTION_NAME, str(details.get(key, ""))) for key in TYPE_KEYS
    )
    traceback = "Traceback (most recent call last)" in error
    return typed or traceback or re.match(EXCEPTION_NAME + r"\s*:", error) is not None


def node_kinds(world: World, workflow_id: str) -> dict[str, str]:
    """node id -> model, integration or code, from the workflow's graph in the emulator."""
    workflow = world.scenario.workflow(workflow_id)
    assert workflow is not None
    return {node.node_id: node.kind for node in workflow.nodes}


def by_trace(spans: list[Span]) -> dict[str, list[Span]]:
    traces: dict[str, list[Span]] = {}
    for span in spans:
        traces.setdefault(span["context"]["trace_id"], []).append(span)
    return traces


def times(span: Span) -> tuple[datetime, datetime]:
    return parse_time(span["start_time"]), parse_time(span["end_time"])


def content_texts(steps: Sequence[Mapping[str, Any]]) -> set[str]:
    """Prompt and reply texts of model steps: what must stay out of a store by default."""
    texts = set()
    for step in steps:
        for message in (step.get("inputs") or {}).get("messages", []):
            texts.add(str(message.get("content") or ""))
        for choice in (step.get("outputs") or {}).get("choices", []):
            texts.add(str(choice["message"].get("content") or ""))
    return {text for text in texts if len(text) >= 8}


# --- the tests ----------------------------------------------------------------------------


def test_runs_read_back_from_phoenix_match_the_api_records(make_world: Any) -> None:
    world: World = make_world(seed=101)
    in_flight, spans = export_in_two_polls(world)
    records = world.records()
    traces = by_trace(spans)
    assert len({s["context"]["span_id"] for s in spans}) == len(spans), "duplicate spans"
    # Every run is one trace, its id the run id without dashes.
    assert set(traces) == {trace_id(run_id) for run_id in records}

    kinds_seen: set[str] = set()
    failures = {"hard": 0, "soft": 0, "exception": 0}
    for run_id, (workflow_id, run, steps) in records.items():
        trace = traces[trace_id(run_id)]
        roots = [s for s in trace if s["parent_id"] is None]
        assert len(roots) == 1, f"run {run_id}: {len(roots)} roots"
        root = roots[0]
        children = [s for s in trace if s is not root]
        workflow = world.scenario.workflow(workflow_id)
        assert workflow is not None
        assert root["name"] == workflow.name
        assert {s["parent_id"] for s in children} <= {root["context"]["span_id"]}
        assert len(children) == len(steps)

        root_attrs = flat_attributes(root["attributes"])
        assert root_attrs["orchestra.run.id"] == run_id
        assert root_attrs["orchestra.workflow.id"] == workflow_id
        assert root_attrs["gen_ai.operation.name"] == "invoke_workflow"
        # The root spans the run and all its steps, to the microsecond.
        starts = [parse_time(run["start_time"])] + [parse_time(s["start_time"]) for s in steps]
        ends = [parse_time(run["end_time"])] + [parse_time(s["end_time"]) for s in steps]
        assert times(root) == (min(starts), max(ends)), f"root of run {run_id}"

        by_step = {flat_attributes(s["attributes"])["orchestra.step.id"]: s for s in children}
        assert set(by_step) == {str(step["id"]) for step in steps}
        failed_nodes = []
        kinds = node_kinds(world, workflow_id)
        for step in steps:
            span = by_step[str(step["id"])]
            attrs = flat_attributes(span["attributes"])
            assert span["name"] == step["node_id"]
            assert times(span) == (parse_time(step["start_time"]), parse_time(step["end_time"]))
            assert attrs["orchestra.node.id"] == step["node_id"]
            assert attrs["orchestra.step.status"] == step["status"]
            kind = kinds[step["node_id"]]
            kinds_seen.add(kind)
            assert attrs["orchestra.node.type"] == kind
            error = step_error(step)
            if error is None:
                assert span["status_code"] in ("UNSET", "OK"), span
            else:
                failed_nodes.append(step["node_id"])
                failures["hard" if step["status"] in FAILED_STATUSES else "soft"] += 1
                assert span["status_code"] == "ERROR"
                assert span["status_message"] == error
                assert attrs["error.type"]
                # The exception event is for exceptions only (typed or with a
                # traceback); an error code stays error.type on the span.
                exceptions = [e for e in span["events"] if e["name"] == "exception"]
                expected = 1 if step_failure_is_exception(step, error) else 0
                assert len(exceptions) == expected, span["events"]
                failures["exception"] += expected
                if exceptions:
                    event_attrs = flat_attributes(exceptions[0]["attributes"])
                    assert event_attrs["exception.type"] == attrs["error.type"]
            assert {e["name"] for e in span["events"]} <= {"exception", "orchestra.step.queue"}
            if kind == "model":
                check_model_span(attrs, step)
            elif kind == "integration":
                assert attrs["gen_ai.operation.name"] == "execute_tool"
                assert attrs["gen_ai.tool.name"] == step["inputs"]["action"]
                assert attrs["orchestra.integration.app"] == step["inputs"]["app_name"]

        # The root is ERROR when the run or any of its steps failed, with the run's own
        # error, else a message naming the failed nodes.
        if run.get("error") or run["status"] in FAILED_STATUSES or failed_nodes:
            assert root["status_code"] == "ERROR", f"run {run_id}"
            if run.get("error"):
                assert root["status_message"] == run["error"]
            else:
                for node in failed_nodes:
                    assert node in root["status_message"]
        else:
            assert root["status_code"] in ("UNSET", "OK"), f"run {run_id}"

    # The scenario really covered what the checks above are about.
    assert {"model", "integration", "code"} <= kinds_seen
    assert failures["hard"] and failures["soft"] and failures["exception"], failures
    assert failures["exception"] < failures["hard"] + failures["soft"], failures
    live_root = next(s for s in traces[trace_id(in_flight)] if s["parent_id"] is None)
    assert live_root["status_code"] == "ERROR"
    assert live_root["status_message"] == "1 step failed: slack_integration"

    # Content capture is off by default: no prompt or reply reaches the store.
    texts = set().union(*(content_texts(steps) for _, _, steps in records.values()))
    assert texts
    for span in spans:
        for name, value in flat_attributes(span["attributes"]).items():
            leaked = [t for t in texts if isinstance(value, str) and t in value]
            assert not leaked, f"{span['name']}: {name} carries content {leaked[0][:40]!r}"


def check_model_span(attrs: Mapping[str, Any], step: Mapping[str, Any]) -> None:
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == step["inputs"]["model"]
    usage = (step.get("outputs") or {}).get("usage")
    if usage is None:  # a model step that failed hard has no outputs
        assert "gen_ai.usage.input_tokens" not in attrs
        return
    assert attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attrs["gen_ai.response.model"] == step["outputs"]["model"]


def test_openinference_names_make_phoenix_show_llm_and_tool_spans(make_world: Any) -> None:
    world: World = make_world(
        seed=202, ORCHESTRA_OPENINFERENCE="true", ORCHESTRA_CAPTURE_CONTENT="true"
    )
    _, spans = export_in_two_polls(world)
    records = world.records()
    traces = by_trace(spans)
    assert set(traces) == {trace_id(run_id) for run_id in records}
    seen: dict[str, int] = {}
    for run_id, (workflow_id, run, steps) in records.items():
        kinds = node_kinds(world, workflow_id)
        trace = traces[trace_id(run_id)]
        root = next(s for s in trace if s["parent_id"] is None)
        assert span_kind(root) == "CHAIN"
        root_attrs = flat_attributes(root["attributes"])
        if run.get("inputs"):
            assert root_attrs["input.value"] == root_attrs["orchestra.run.input"]
        steps_only = [s for s in trace if s is not root]
        by_step = {flat_attributes(s["attributes"])["orchestra.step.id"]: s for s in steps_only}
        for step in steps:
            span = by_step[str(step["id"])]
            attrs = flat_attributes(span["attributes"])
            kind = kinds[step["node_id"]]
            seen[kind] = seen.get(kind, 0) + 1
            if kind == "model":
                assert span_kind(span) == "LLM", span
                assert attrs["llm.model_name"] == step["inputs"]["model"]
                assert attrs["llm.provider"] == attrs["gen_ai.provider.name"] == "arcee"
                user_prompt = step["inputs"]["messages"][-1]["content"]
                assert user_prompt in json_strings(attrs["input.value"])
                usage = (step.get("outputs") or {}).get("usage")
                if usage is not None:
                    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
                    assert attrs["llm.token_count.prompt"] == prompt
                    assert attrs["llm.token_count.completion"] == completion
                    assert attrs["llm.token_count.total"] == prompt + completion
                    reply = step["outputs"]["choices"][0]["message"]["content"]
                    assert reply in json_strings(attrs["output.value"])
            elif kind == "integration":
                assert span_kind(span) == "TOOL", span
                assert attrs["tool.name"] == step["inputs"]["action"]
                assert attrs["input.value"] == attrs["gen_ai.tool.call.arguments"]
                if step.get("outputs") is not None:
                    assert attrs["output.value"] == attrs["gen_ai.tool.call.result"]
            else:
                # Neither LLM nor tool: a chain step, with its input and output as text.
                assert span_kind(span) == "CHAIN", span
                assert attrs["input.value"] == attrs["orchestra.step.input"]
                if step.get("outputs") is not None:
                    assert attrs["output.value"] == attrs["orchestra.step.output"]
    assert seen.get("model") and seen.get("integration") and seen.get("code"), seen


def json_strings(text: str) -> set[str]:
    """Every string inside a JSON document (messages are JSON: [{"role", "parts"}])."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(text))
    return found


def span_kind(span: Span) -> str:
    """The kind Phoenix shows. It moves `openinference.span.kind` into its `span_kind`
    field (20.x drops the attribute; where it stays, the two must agree)."""
    kind = str(span["span_kind"])
    attribute = flat_attributes(span["attributes"]).get("openinference.span.kind")
    assert attribute in (None, kind), span
    return kind
