"""Bounds: what one span may carry, and what the SQLite ledger keeps over time.

* Mapping (exporter/mapping/spans.py): every text attribute is cut to
  `MappingOptions.content_max_length` (default 2048, docs/design.md "Content capture"), the cut
  marked by "…"; lists hold at most MAX_LIST_ITEMS items; a step links to at most MAX_LINKS
  upstream steps; names are at most MAX_NAME_LENGTH characters; the status description
  follows the content limit.
* Ledger (exporter/state.py `Ledger.prune`, ORCHESTRA_RETENTION): finished runs captured
  before the cutoff are forgotten with their captured steps, workflow windows move up to
  the cutoff (so a forgotten run is never exported again), open and recent runs are kept,
  spans still waiting in the spool are kept, and the file stops growing.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from exporter.emulator import Emulator, Scenario
from exporter.emulator.demo import demo_workflows
from exporter.mapping.content import ELLIPSIS
from exporter.mapping.graph import graph_from_api
from exporter.mapping.otlp import SpanSpec
from exporter.mapping.spans import (
    MAX_LINKS,
    MAX_LIST_ITEMS,
    MAX_NAME_LENGTH,
    MappingOptions,
    RunSpans,
    WorkflowInfo,
    map_run,
)
from exporter.poller import Poller, PollSettings
from exporter.sink.encoding import TRACES
from exporter.source.client import OrchestraClient
from exporter.source.models import Run, Step, parse_records
from exporter.spool import outgoing_span
from exporter.state import Capture, Ledger, Outgoing
from tests.support.clock import ManualClock
from tests.support.sinks import RecordingSink

DEFAULT_LIMIT = 2048  # docs/design.md: ORCHESTRA_CONTENT_MAX_LENGTH defaults to 2048
RUN_ID = "5b69669f-975a-49af-a33a-61ff9ae5a20f"
NS = 1_000_000_000

# --- helpers ---------------------------------------------------------------------------


def _run(**fields: Any) -> Run:
    record = {
        "id": RUN_ID,
        "status": "completed",
        "start_time": "2025-03-13T02:41:15.021907Z",
        "end_time": "2025-03-13T02:41:59.201337Z",
        **fields,
    }
    runs, rejected = parse_records([record], Run)
    assert not rejected
    return runs[0]


def _step(step_id: str, node_id: str = "model", second: int = 16, **fields: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "node_id": node_id,
        "status": "completed",
        "start_time": f"2025-03-13T02:41:{second:02d}.000001Z",
        "end_time": f"2025-03-13T02:41:{second:02d}.500001Z",
        "error": None,
        **fields,
    }


def _map(
    steps: Sequence[dict[str, Any]],
    *,
    workflow: WorkflowInfo | None = None,
    run: Run | None = None,
    **options: Any,
) -> RunSpans:
    parsed, rejected = parse_records(steps, Step)
    assert not rejected
    return map_run(
        workflow or WorkflowInfo("wf-1", "joke-to-slack"),
        run or _run(),
        parsed,
        MappingOptions(**options),
    )


def _model_step(step_id: str, text: str, *, choices: int = 1, reason: str = "stop") -> dict:
    return _step(
        step_id,
        inputs={
            "model": "virtuoso-medium",
            "max_tokens": 8192,
            "messages": [{"role": "user", "content": text}],
        },
        outputs={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "virtuoso-medium",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": reason,
                }
                for i in range(choices)
            ],
            "usage": {"prompt_tokens": 36, "completion_tokens": 48},
        },
    )


def _integration_step(step_id: str, text: str) -> dict[str, Any]:
    return _step(
        step_id,
        node_id="slack_integration",
        inputs={
            "app_name": "slack",
            "action": "SLACK_SENDS_A_MESSAGE_TO_A_SLACK_CHANNEL",
            "input_mapping": {"channel": "#ops", "text": text},
        },
        outputs={"result": {"successful": True, "data": {"echo": text}, "error": None}},
    )


def _code_step(step_id: str, text: str) -> dict[str, Any]:
    return _step(
        step_id,
        node_id="code_1",
        inputs={"code": "print(x)", "input_data": {"x": text}},
        outputs={"successful": True, "data": {"sandbox_id": "sbx-1", "stdout": text}},
    )


CONTENT_ATTRIBUTES = {
    "model": ("gen_ai.input.messages", "gen_ai.output.messages"),
    "integration": ("gen_ai.tool.call.arguments", "gen_ai.tool.call.result"),
    "code": ("orchestra.step.input", "orchestra.step.output"),
    "root": ("orchestra.run.input", "orchestra.run.output"),
}


def _content_spans(text: str, **options: Any) -> dict[str, SpanSpec]:
    result = _map(
        [_model_step("m", text), _integration_step("i", text), _code_step("c", text)],
        run=_run(inputs={"prompt": text}, outputs=text),
        capture_content=True,
        **options,
    )
    assert result.root is not None
    return {
        "model": result.steps["m"],
        "integration": result.steps["i"],
        "code": result.steps["c"],
        "root": result.root,
    }


def _assert_cut(value: object, limit: int) -> None:
    assert isinstance(value, str)
    assert len(value) == limit, f"expected exactly {limit} characters, got {len(value)}"
    assert value.endswith(ELLIPSIS), "a cut value must say it was cut"


# --- text attributes -------------------------------------------------------------------


def test_default_limit_is_the_documented_2048() -> None:
    assert MappingOptions().content_max_length == DEFAULT_LIMIT


# Plain text (a run whose output is a string) is cut at the end; JSON content is cut
# inside its strings, so it still parses (docs/design.md, "Content capture").
PLAIN_TEXT_ATTRIBUTES = frozenset({"orchestra.run.output"})


@pytest.mark.parametrize("limit", [DEFAULT_LIMIT, 16, 100, 5000])
def test_captured_content_is_cut_to_the_limit_and_marked(limit: int) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 400  # ~18,000 characters
    options = {} if limit == DEFAULT_LIMIT else {"content_max_length": limit}
    spans = _content_spans(text, **options)
    whole = _content_spans(text, content_max_length=1_000_000)
    for kind, names in CONTENT_ATTRIBUTES.items():
        for name in names:
            value = (spans[kind].attributes or {}).get(name)
            full = (whole[kind].attributes or {}).get(name)
            assert isinstance(full, str) and len(full) > limit, (kind, name)
            assert isinstance(value, str)
            if name in PLAIN_TEXT_ATTRIBUTES:
                _assert_cut(value, limit)
                # What is kept is the beginning of the value, unchanged.
                assert value[: -len(ELLIPSIS)] == full[: limit - len(ELLIPSIS)], (kind, name)
            else:
                _assert_json_cut(value, full, limit, (kind, name))


def _assert_json_cut(value: str, full: str, limit: int, where: object) -> None:
    """At most `limit` characters, still JSON, and either marked as cut or emptied."""
    assert len(value) <= limit, (where, len(value))
    document = json.loads(value)
    assert "…" in value or document in ([], {}) or len(value) < 8, where
    if limit >= 100:  # room for the structure: the text kept is a start of the text
        kept = [s for s in _strings_in(document) if s.endswith("…")]
        assert kept, where
        assert all(s[:-1] in full for s in kept), where


def _strings_in(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings_in(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings_in(item)]
    return []


def test_content_at_the_limit_is_kept_whole_and_one_more_character_is_cut() -> None:
    limit = 100
    exact, over = "a" * limit, "a" * (limit + 1)
    options = {"capture_content": True, "content_max_length": limit}
    at_limit = _map([_code_step("c", "x")], run=_run(outputs=exact), **options).root
    beyond = _map([_code_step("c", "x")], run=_run(outputs=over), **options).root
    assert at_limit is not None and beyond is not None
    assert (at_limit.attributes or {})["orchestra.run.output"] == exact
    _assert_cut((beyond.attributes or {})["orchestra.run.output"], limit)
    assert (beyond.attributes or {})["orchestra.run.output"] == "a" * (limit - 1) + ELLIPSIS


def test_content_stays_off_spans_unless_capture_is_on() -> None:
    text = "secret customer data " * 10
    result = _map(
        [_model_step("m", text), _integration_step("i", text), _code_step("c", text)],
        run=_run(inputs={"prompt": text}, outputs=text),
    )
    for span in result.all_spans():
        for name, value in (span.attributes or {}).items():
            assert "secret" not in str(value), name
        assert not {n for names in CONTENT_ATTRIBUTES.values() for n in names} & set(
            span.attributes or {}
        )


@pytest.mark.parametrize("limit", [DEFAULT_LIMIT, 64])
def test_every_text_attribute_is_cut_not_only_content(limit: int) -> None:
    long = "v" * 10_000
    step = _model_step("m", "hi")
    step["inputs"]["model"] = long  # gen_ai.request.model
    step["outputs"]["id"] = long  # gen_ai.response.id
    result = _map(
        [step],
        workflow=WorkflowInfo("wf-1", long),  # orchestra.workflow.name, gen_ai.workflow.name
        run=_run(status="completed " + long),  # orchestra.run.status (raw)
        content_max_length=limit,
    )
    found = 0
    for span in result.all_spans():
        for name, value in (span.attributes or {}).items():
            if isinstance(value, str):
                assert len(value) <= limit, name
                if value.startswith("v" * 10) or value.startswith("completed v"):
                    _assert_cut(value, limit)
                    found += 1
    assert found >= 5, "the long values must reach the spans (cut)"


# --- lists, links, names, status -----------------------------------------------------


def test_lists_hold_at_most_max_list_items_each_cut() -> None:
    step = _model_step("m", "hi", choices=100, reason="r" * 5000)
    span = _map([step], content_max_length=50).steps["m"]
    reasons = (span.attributes or {})["gen_ai.response.finish_reasons"]
    assert isinstance(reasons, (list, tuple))
    assert len(reasons) == MAX_LIST_ITEMS == 32
    for reason in reasons:
        _assert_cut(reason, 50)
    encoded = span.encode()
    by_key = {kv.key: kv.value for kv in encoded.attributes}
    assert len(by_key["gen_ai.response.finish_reasons"].array_value.values) == MAX_LIST_ITEMS


def _fan_in(parents: int) -> list[dict[str, Any]]:
    steps = [
        _step(f"p{i}", node_id=f"parent_{i:03d}", second=10, status="completed")
        for i in range(parents)
    ]
    join = _step(
        "join",
        node_id="join",
        second=20,
        inputs={"input_data": {f"parent_{i:03d}": i for i in range(parents)}},
    )
    return [*steps, join]


@pytest.mark.parametrize("source", ["graph", "input_data"])
def test_a_fan_in_of_200_parents_links_to_max_links(source: str) -> None:
    parents = 200
    graph = None
    if source == "graph":
        nodes = {f"parent_{i:03d}": {"type": "code"} for i in range(parents)}
        nodes["join"] = {"type": "code"}
        edges = [["START", f"parent_{i:03d}"] for i in range(parents)]
        edges += [[f"parent_{i:03d}", "join"] for i in range(parents)] + [["join", "END"]]
        graph = graph_from_api({"nodes": nodes, "edges": edges})
    workflow = WorkflowInfo("wf-1", "fan-in", graph) if graph else WorkflowInfo("wf-1", "fan-in")
    result = _map(_fan_in(parents), workflow=workflow)
    join = result.steps["join"]
    assert len(join.links) == MAX_LINKS == 64
    parent_ids = {
        span.context.span_id
        for step_id, span in result.steps.items()
        if step_id != "join" and span.context is not None
    }
    linked = [link.context.span_id for link in join.links]
    assert len(set(linked)) == MAX_LINKS, "links must be distinct"
    assert set(linked) <= parent_ids, "every link points at a parent step's span"
    for link in join.links:
        assert link.context.trace_id == result.trace_id
    encoded = join.encode()
    assert len(encoded.links) == MAX_LINKS
    # Parents link to nothing: the bound is on what one span carries, not a global one.
    assert all(len(span.links) == 0 for step_id, span in result.steps.items() if step_id != "join")


def test_span_names_are_cut_to_max_name_length() -> None:
    long_node, long_workflow = "n" * 1000, "w" * 1000
    exact = "e" * MAX_NAME_LENGTH
    result = _map(
        [_step("a", node_id=long_node), _step("b", node_id=exact)],
        workflow=WorkflowInfo("wf-1", long_workflow),
    )
    assert result.root is not None
    assert len(result.steps["a"].name) == MAX_NAME_LENGTH == 256
    assert result.steps["a"].name.startswith("n" * 200)
    assert result.steps["b"].name == exact, "a name at the limit is kept whole"
    assert len(result.root.name) == MAX_NAME_LENGTH
    assert result.root.name.startswith("w" * 200)
    # Without a workflow name the root is named after the workflow id: also bounded.
    unnamed = _map([_step("a")], workflow=WorkflowInfo("i" * 1000)).root
    assert unnamed is not None and len(unnamed.name) == MAX_NAME_LENGTH


@pytest.mark.parametrize("limit", [DEFAULT_LIMIT, 100])
def test_status_description_and_exception_message_are_cut(limit: int) -> None:
    message = "ValueError: " + "E" * 10_000  # an exception: it gets an exception event
    options = {} if limit == DEFAULT_LIMIT else {"content_max_length": limit}
    result = _map([_step("a", status="failed", error=message)], **options)
    for span in (result.steps["a"], result.root):
        assert span is not None
        assert span.status.status_code is StatusCode.ERROR
    step = result.steps["a"]
    _assert_cut(step.status.description, limit)
    event = step.events[0]
    _assert_cut((event.attributes or {})["exception.message"], limit)
    # The root's description names the failed step; it is bounded by the same limit.
    assert result.root is not None
    assert len(result.root.status.description or "") <= limit
    # A traceback's stack trace is cut too.
    trace = "Traceback (most recent call last):\n" + "  frame\n" * 5000 + "ValueError: bad"
    traced = _map([_step("t", status="failed", error=trace)], **options).steps["t"]
    stack = (traced.events[0].attributes or {})["exception.stacktrace"]
    _assert_cut(stack, limit)


def test_identifying_attributes_are_never_cut() -> None:
    workflow_id = "0f8a3c2e-6d41-4b7a-9e15-2c7d9b4e1a01"
    step_id = "b2acc986-af06-418a-bf71-c730d5ghaf0b"
    result = _map([_step(step_id)], workflow=WorkflowInfo(workflow_id), content_max_length=16)
    for span in result.all_spans():
        attributes = span.attributes or {}
        assert attributes["orchestra.run.id"] == RUN_ID
        assert attributes["orchestra.workflow.id"] == workflow_id
    assert (result.steps[step_id].attributes or {})["orchestra.step.id"] == step_id


# --- Ledger.prune ----------------------------------------------------------------------


def _capture(
    workflow_id: str, run_id: str, steps: int, *, done: bool, payload: bytes = b"span"
) -> Capture:
    """`steps` step spans and, when done, the root; the ledger never reads the payload."""
    spans = steps + (1 if done else 0)
    return Capture(
        workflow_id=workflow_id,
        run_id=run_id,
        status="completed" if done else "running",
        steps=tuple(f"{run_id}/step-{i}" for i in range(steps)),
        outgoing=(Outgoing(TRACES, payload, samples='{"e":1}'),) * spans,
        run_done=done,
    )


def _confirm_all(ledger: Ledger) -> None:
    while batch := ledger.spooled(500):
        ledger.confirm([item.id for item in batch])


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return list(db.execute(sql).fetchall())


def test_prune_forgets_old_finished_runs_with_their_steps_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        ledger.register_workflow("wf-a", since_ns=10 * NS, now_ns=10 * NS)
        ledger.register_workflow("wf-b", since_ns=500 * NS, now_ns=500 * NS)  # newer window
        ledger.capture([_capture("wf-a", "old-1", 3, done=True)], now_ns=100 * NS)
        ledger.capture([_capture("wf-b", "old-2", 2, done=True)], now_ns=199 * NS)
        # Open since long before the cutoff, part of its steps captured: must stay.
        ledger.track_runs("wf-a", [("open-1", "running")], now_ns=50 * NS)
        ledger.capture([_capture("wf-a", "open-1", 4, done=False)], now_ns=60 * NS)
        ledger.capture([_capture("wf-a", "at-cutoff", 1, done=True)], now_ns=200 * NS)
        ledger.capture([_capture("wf-b", "recent", 2, done=True)], now_ns=300 * NS)
        _confirm_all(ledger)
        # One old run whose spans were never confirmed (backend down for the whole
        # retention): it is forgotten, but its spans are not lost.
        ledger.capture([_capture("wf-a", "old-unsent", 2, done=True)], now_ns=150 * NS)
        pending = ledger.pending_count()
        assert pending == 3

        removed = ledger.prune(200 * NS)

        assert removed == 3  # old-1, old-2, old-unsent (done before the cutoff)
        states = ledger.run_states("wf-a", ["old-1", "open-1", "at-cutoff", "old-unsent"])
        assert set(states) == {"open-1", "at-cutoff"}
        assert states["open-1"].done is False
        assert set(ledger.run_states("wf-b", ["old-2", "recent"])) == {"recent"}
        assert ledger.open_runs("wf-a") == ["open-1"]
        assert ledger.captured_steps("old-1") == set()
        assert ledger.captured_steps("old-2") == set()
        assert ledger.captured_steps("open-1") == {f"open-1/step-{i}" for i in range(4)}
        assert ledger.captured_steps("at-cutoff") == {"at-cutoff/step-0"}
        assert ledger.captured_steps("recent") == {"recent/step-0", "recent/step-1"}
        # Windows move up to the cutoff, never back.
        assert ledger.workflow_since("wf-a") == 200 * NS
        assert ledger.workflow_since("wf-b") == 500 * NS
        # Spans waiting for the backend stay spooled: pruning never loses a span.
        assert ledger.pending_count() == pending
        # Pruning again changes nothing.
        assert ledger.prune(200 * NS) == 0
        counts = ledger.counts()
    assert counts["runs"] == 3 and counts["open_runs"] == 1
    assert counts["steps"] == 4 + 1 + 2
    orphans = _rows(
        path, "SELECT count(*) FROM captured_steps WHERE run_id NOT IN (SELECT run_id FROM runs)"
    )
    assert orphans == [(0,)], "captured steps of forgotten runs must go with them"


def _file_bytes(path: Path) -> int:
    return sum(
        os.path.getsize(f"{path}{suffix}")
        for suffix in ("", "-wal")
        if os.path.exists(f"{path}{suffix}")
    )


def _cycles(path: Path, cycles: int, *, prune: bool) -> list[int]:
    """Capture, confirm and prune as the daemon does, one 'hour' per cycle.

    Each cycle: 40 finished runs of 20 steps, ~1 KB per span (a busy hour); retention is
    three cycles. Returns the file size (database + WAL) after each cycle.
    """
    payload = outgoing_span(_content_spans("x" * 250)["code"]).payload
    assert 900 < len(payload) < 1500
    hour = 3600 * NS
    sizes = []
    with Ledger(path) as ledger:
        for cycle in range(cycles):
            now = 1_750_000_000 * NS + cycle * hour
            captures = [
                _capture(f"wf-{r % 4}", f"run-{cycle}-{r}", 20, done=True, payload=payload)
                for r in range(40)
            ]
            ledger.capture(captures, now_ns=now)
            _confirm_all(ledger)
            if prune:
                ledger.prune(now - 3 * hour)
            sizes.append(_file_bytes(path))
    return sizes


def test_ledger_file_stops_growing_across_capture_confirm_prune_cycles(tmp_path: Path) -> None:
    """Bound: after warm-up, 20 more cycles (16,000 more spans) grow the file < 2%.

    SQLite reuses the pages that pruning and confirming free, without VACUUM; the WAL
    keeps its high-water mark. Without pruning the same 20 cycles grow it by far more
    (the control below), so the bound would catch a prune that stopped working.
    """
    started = time.monotonic()
    sizes = _cycles(tmp_path / "pruned.db", 30, prune=True)
    warm, end = max(sizes[5:10]), max(sizes[10:])
    growth = end - warm
    print(
        f"\nledger size: after 10 cycles {warm / 2**20:.2f} MiB, after 30 {end / 2**20:.2f} MiB, "
        f"growth {growth / 1024:.0f} KiB ({time.monotonic() - started:.1f}s)"
    )
    assert growth <= 0.02 * warm, f"the ledger keeps growing: {[s // 1024 for s in sizes]} KiB"
    with Ledger(tmp_path / "pruned.db") as ledger:
        counts = ledger.counts()
    # Kept: the runs captured in the last three hours and at the cutoff itself.
    assert counts["runs"] == 4 * 40 and counts["steps"] == 4 * 40 * 20
    assert counts["pending_spans"] == 0

    control = _cycles(tmp_path / "unpruned.db", 30, prune=False)
    control_growth = max(control[10:]) - max(control[5:10])
    print(f"without pruning the same cycles grow it by {control_growth / 1024:.0f} KiB")
    assert control_growth > 4 * 0.02 * warm, "without pruning the bound must fail by far"


# --- retention end to end: a pruned run is never exported again ------------------------


def test_retention_forgets_runs_and_never_exports_them_again(tmp_path: Path) -> None:
    clock = ManualClock(1_750_000_000.0)
    scenario = Scenario(demo_workflows(clock()), clock=clock, seed=3)
    workflow_id = scenario.workflow_ids()[1]
    history = scenario.add_history(workflow_id, 3, every=30.0, duration=(1.0, 5.0))
    sink = RecordingSink()
    hour = 3600.0

    async def scenario_run(base_url: str) -> tuple[list[int], dict[str, int]]:
        client = OrchestraClient(base_url, "k")
        try:
            with Ledger(tmp_path / "ledger.db") as ledger:
                poller = Poller(
                    client,
                    ledger,
                    sink,
                    MappingOptions(),
                    PollSettings(workflows=(workflow_id,), retention_s=hour),
                    clock=clock,
                )
                exported = [(await poller.poll()).spans_exported]
                clock.advance(2 * hour)  # past the retention and the hourly prune
                exported.append((await poller.poll()).spans_exported)
                counts = ledger.counts()
                # A new run after the prune is still exported.
                scenario.add_run(workflow_id)
                clock.advance(60)
                exported.append((await poller.poll()).spans_exported)
                return exported, counts
        finally:
            await client.aclose()

    with Emulator(scenario, api_key="k") as emulator:
        exported, counts = asyncio.run(scenario_run(emulator.base_url))
        steps_requests = emulator.stats()["by_kind"].get("steps", 0)
    per_run = {s.context.trace_id for s in sink.spans if s.context}
    assert len(per_run) == len(history) + 1
    assert exported[0] > 0 and exported[1] == 0 and exported[2] > 0
    assert counts["runs"] == 0 and counts["steps"] == 0, "old runs must be forgotten"
    keys = [(s.context.trace_id, s.context.span_id) for s in sink.spans if s.context]
    assert len(keys) == len(set(keys)), "a forgotten run was exported a second time"
    assert steps_requests == len(history) + 1, "a forgotten run's steps were fetched again"
