"""The demo's trace trees: a finished run is shown whole, steps sent earlier included."""

from __future__ import annotations

import io
import json
from pathlib import Path

from exporter.mapping.graph import graph_from_api
from exporter.mapping.options import MappingOptions
from exporter.mapping.otlp import SpanSpec
from exporter.mapping.spans import WorkflowInfo, map_run
from exporter.sink.console import TreeSink
from exporter.sink.encoding import TRACES
from exporter.source.models import Run, Step, Workflow, parse_records
from tests.support.sinks import framed_spans

SHARED = Path(__file__).resolve().parents[1] / "shared" / "fixtures"


def seed_spans() -> tuple[list[SpanSpec], list[SpanSpec]]:
    workflows, _ = parse_records(json.loads((SHARED / "workflows.json").read_text()), Workflow)
    joke = next(wf for wf in workflows if wf.name == "joke-to-slack")
    steps, _ = parse_records(json.loads((SHARED / "steps-model-slack.json").read_text()), Step)
    run = Run.model_validate(json.loads((SHARED / "runs-list.json").read_text())[0])
    mapped = map_run(
        WorkflowInfo(joke.workflow_id, joke.name, graph_from_api(joke.graph)),
        run,
        steps,
        MappingOptions(),
    )
    assert mapped.root is not None
    return [mapped.steps[steps[0].id]], [mapped.steps[steps[1].id], mapped.root]


def test_a_finished_run_is_printed_whole() -> None:
    earlier, later = seed_spans()
    out = io.StringIO()
    sink = TreeSink(out, color=False)
    assert sink.send(TRACES, framed_spans(earlier), len(earlier))
    first = out.getvalue()
    assert "still in flight" in first and "model" in first
    assert sink.send(TRACES, framed_spans(later), len(later))
    last_tree = out.getvalue()[len(first) :]
    lines = [line.strip() for line in last_tree.strip().splitlines()]
    assert lines[0] == "trace 5b69669f975a49afa33a61ff9ae5a20f"
    assert lines[1:] == [
        "joke-to-slack  4.18s at +0ms  ok  [overhead 166ms]",
        "model  2.24s at +123ms  ok  [model, virtuoso-medium, tokens 36/48, waited 123ms]",
        "slack_integration  1.78s at +2.38s  ok  "
        "[integration, SLACK_SHARE_A_ME_MESSAGE_IN_A_CHANNEL, waited 22ms]",
    ]


def test_api_text_in_a_tree_is_escaped() -> None:
    """Issue 11, finding 4: names, node ids and error details come from the API; printed
    raw, a newline forged a line and `ESC[2K\\r` rewrote the terminal line."""
    workflows, _ = parse_records(json.loads((SHARED / "workflows.json").read_text()), Workflow)
    joke = next(wf for wf in workflows if wf.name == "joke-to-slack")
    records = json.loads((SHARED / "steps-model-slack.json").read_text())
    records[0]["node_id"] = "model\n2026-01-01T00:00:00 INFO    forged"
    records[1]["status"] = "failed"
    records[1]["error"] = "\x1b[2K\rall good\x9b2K\u202e"
    steps, rejected = parse_records(records, Step)
    assert not rejected
    run = Run.model_validate(json.loads((SHARED / "runs-list.json").read_text())[0])
    mapped = map_run(
        WorkflowInfo(joke.workflow_id, "joke\x1b]0;pwned\x07\u2066", graph_from_api(joke.graph)),
        run,
        steps,
        MappingOptions(),
    )
    out = io.StringIO()
    spans = mapped.all_spans()
    TreeSink(out, color=True).send(TRACES, framed_spans(spans), len(spans))
    text = out.getvalue()
    lines = text.strip().split("\n")
    assert len(lines) == 4, lines  # header, root, two steps: nothing forged a line
    assert lines[1].strip().startswith("joke\\x1b]0;pwned\\x07\\u2066  ")
    assert lines[2].strip().startswith("model\\n2026-01-01T00:00:00 INFO    forged  ")
    assert "-- \\x1b[2K\\rall good\\x9b2K\\u202e" in lines[3]
    # Our own colours are the only escape sequences left.
    assert (
        text.replace("\x1b[31m", "").replace("\x1b[32m", "").replace("\x1b[0m", "").count("\x1b")
        == 0
    )
    assert "\r" not in text and "\u202e" not in text and "\x9b" not in text
