"""Properties of records -> spans (docs/design.md, "Trace shape") over open-ended API records.

Pure code, hypothesis-driven. The strategies draw runs and steps the way the API may send
them: realistic model / integration / code steps with every documented status (in any
case), both documented timestamp forms with and without fractions and with any offset,
times in the future, ends before starts, missing values, and plain garbage (arbitrary
JSON in every field). Each property states one guarantee and checks it against an
oracle written here, independently of the code under test.

Known defects are pinned at the end as strict xfails ("BUG: ...").
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import StatusCode

from exporter.mapping.graph import EMPTY_GRAPH, WorkflowGraph, graph_from_api
from exporter.mapping.otlp import SpanSpec, decode_span
from exporter.mapping.spans import (
    MAX_LINKS,
    MAX_LIST_ITEMS,
    MAX_NAME_LENGTH,
    MappingOptions,
    RunSpans,
    WorkflowInfo,
    map_run,
)
from exporter.sink.encoding import Framer, to_otlp_dict
from exporter.source.models import Run, Step, Workflow, parse_records, replace_lone_surrogates
from exporter.spool import outgoing_span

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- the status table, written out from docs/design.md ("Statuses") -------------------------

TERMINAL = frozenset(
    {"completed", "failed", "error", "timeout", "cancelled", "canceled", "skipped"}
)
IN_FLIGHT = frozenset({"running", "pending", "queued", "in_progress", "started"})
FAILED = frozenset({"failed", "error", "timeout"})
UNKNOWN_STATUSES = ("weird", "succeeded", "complete", "fail", "", "   ", "DONE")

RESOURCE = Resource({"service.name": "orchestra"})
SCOPE = InstrumentationScope("orchestra-otel", "0.0-test")
FRAMER = Framer.of(RESOURCE, SCOPE)

# --- strategies ------------------------------------------------------------------------

_NAIVE_EPOCH = datetime(1970, 1, 1)


def texts(max_size: int = 12, min_size: int = 0) -> st.SearchStrategy[str]:
    # utf-8 codec: no lone surrogates here (they are a known defect, pinned below).
    return st.text(st.characters(codec="utf-8"), min_size=min_size, max_size=max_size)


# Long values, cheaply: one character repeated up to 5000 times.
long_texts = st.builds(lambda ch, n: ch * n, st.characters(codec="utf-8"), st.integers(0, 5000))
any_text = st.one_of(texts(), texts(), long_texts)

# Keys that make an `outputs` object a success/failure report: garbage avoids them, so
# that the failure oracle below is decided only by what the strategies put there on purpose.
_REPORT_KEYS = frozenset({"result", "successful", "successfull", "error", "data"})
_ODD_KEYS = st.sampled_from(["model_dump", "__dict__", "_private", "copy", "schema", "id_", ""])
garbage_keys = st.one_of(texts(6), _ODD_KEYS).filter(lambda k: k not in _REPORT_KEYS)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), texts(8)
)
JSON = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(garbage_keys, children, max_size=4)
    ),
    max_leaves=4,
)
garbage_objects = st.dictionaries(garbage_keys, JSON, max_size=3)


@dataclass(frozen=True)
class Stamp:
    """A timestamp as the API may write it, and its exact Unix nanoseconds."""

    text: str
    ns: int


@st.composite
def stamps(draw: st.DrawFn, min_year: int = 1990, max_year: int = 2400) -> Stamp:
    moment = draw(
        st.datetimes(min_value=datetime(min_year, 1, 2), max_value=datetime(max_year, 12, 30))
    )
    digits = draw(st.sampled_from([0, 1, 3, 6, 6, 9]))
    micro = f"{moment.microsecond:06d}"
    fraction = micro + f"{draw(st.integers(0, 999)):03d}" if digits == 9 else micro[:digits]
    offset = draw(
        st.one_of(
            st.just(0),
            st.sampled_from([60, -300, 330, 345, -570, 840, -720]),
            st.integers(-(23 * 60 + 59), 23 * 60 + 59),
        )
    )
    separator = draw(st.sampled_from(["T", " "]))
    if offset == 0:
        zone = draw(st.sampled_from(["Z", "+00:00", "-00:00", "", "+0000"]))
    else:
        sign = "+" if offset > 0 else "-"
        hours, minutes = divmod(abs(offset), 60)
        forms = [f"{sign}{hours:02d}:{minutes:02d}", f"{sign}{hours:02d}{minutes:02d}"]
        if minutes == 0:
            forms.append(f"{sign}{hours:02d}")
        zone = draw(st.sampled_from(forms))
    text = f"{moment:%Y-%m-%d}{separator}{moment:%H:%M:%S}"
    if fraction:
        text += "." + fraction
    text += zone
    whole = (moment.replace(microsecond=0) - _NAIVE_EPOCH) // timedelta(seconds=1) - offset * 60
    frac_ns = int(fraction.ljust(9, "0")) if fraction else 0
    return Stamp(text, whole * 1_000_000_000 + frac_ns)


garbage_times = st.one_of(
    st.sampled_from(
        [
            "",
            "   ",
            "yesterday",
            "2025-13-45T99:99:99Z",
            "2025-02-30T10:00:00Z",
            "2025-03-13T02:41:15+24:00",
            "2025-03-13",
            "1741833675",
            "NaN",
        ]
    ),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
# A time field: mostly a valid stamp, often missing, sometimes garbage.
time_fields = st.one_of(stamps(), stamps(), stamps(), st.none(), garbage_times)


def _spell(status: str, how: str) -> str:
    return {
        "same": status,
        "upper": status.upper(),
        "title": status.title(),
        "pad": f" {status}\t",
    }[how]


statuses = st.one_of(
    st.builds(
        _spell,
        st.sampled_from(sorted(TERMINAL | IN_FLIGHT) + list(UNKNOWN_STATUSES)),
        st.sampled_from(["same", "same", "upper", "title", "pad"]),
    ),
    st.none(),
    json_scalars,
    st.lists(texts(5), max_size=2),
)

error_messages = st.one_of(
    texts(min_size=1),
    long_texts,
    st.just("RateLimitError: upstream returned 429"),
    st.just(
        'Traceback (most recent call last):\n  File "main.py", line 3, in <module>\n'
        "    run()\nTimeoutError: sandbox exceeded 30s"
    ),
)
error_fields = st.one_of(
    st.none(),
    st.sampled_from(["", "   ", False]),
    error_messages,
    st.fixed_dictionaries({"message": error_messages}, optional={"code": texts(12)}),
    st.fixed_dictionaries({}, optional={"detail": texts(12), "type": texts(12)}).filter(bool),
    st.just({}),
    st.just([]),
)

node_names = st.one_of(
    st.sampled_from(["model", "slack_integration", "code_1", "router", "summarize", "START"]),
    texts(12, min_size=1),
    st.builds(lambda n: "node_" + "x" * n, st.integers(250, 600)),
)
finish_reasons = st.one_of(st.sampled_from(["stop", "length"]), any_text)
model_names = st.one_of(st.sampled_from(["virtuoso-medium", "virtuoso-large"]), texts(10))
app_names = st.one_of(st.sampled_from(["slack", "gmail"]), texts(8))
actions = st.one_of(st.just("SLACK_SENDS_A_MESSAGE_TO_A_SLACK_CHANNEL"), texts(20))
maybe_error = st.one_of(st.none(), error_messages)
temperatures = st.one_of(st.floats(0, 2), st.floats(), st.none())
max_tokens = st.one_of(st.integers(0, 2**31), st.floats(0, 1e6))


def _input_data(draw: st.DrawFn, pick: st.SearchStrategy[str]) -> dict[str, str]:
    """`inputs.input_data`: keys naming upstream nodes (links when there is no graph)."""
    return {key: "value" for key in draw(st.lists(pick, max_size=3))}


def model_parts(draw: st.DrawFn, pick: st.SearchStrategy[str]) -> tuple[Any, Any]:
    inputs = {
        "model": draw(model_names),
        "stream": draw(st.booleans()),
        "max_tokens": draw(max_tokens),
        "temperature": draw(temperatures),
        "top_p": 1,
        "top_k": 50,
        "messages": [{"role": "user", "content": draw(any_text)}],
        "input_data": _input_data(draw, pick),
    }
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": draw(any_text), "tool_calls": []},
        "finish_reason": draw(finish_reasons),
    }
    # Mostly one choice; sometimes more than MAX_LIST_ITEMS (copies: cheap to draw).
    choices = [choice] * draw(st.sampled_from([0, 1, 1, 1, 2, 40]))
    outputs = {
        "id": "chatcmpl-a9fd0516",
        "object": "chat.completion",
        "model": draw(model_names),
        "choices": choices,
        "usage": {
            "prompt_tokens": draw(st.integers(0, 10**6)),
            "completion_tokens": draw(st.integers(0, 10**6)),
        },
    }
    return inputs, outputs if draw(st.integers(0, 4)) else None


def _report(flag: bool, error: object, data: object) -> dict[str, Any]:
    # Orchestra writes both spellings of the flag; they agree in every real payload.
    return {"successful": flag, "successfull": flag, "error": error, "data": data}


def integration_parts(draw: st.DrawFn, pick: st.SearchStrategy[str]) -> tuple[Any, Any]:
    inputs = {
        "app_name": draw(app_names),
        "action": draw(actions),
        "input_mapping": {"channel": "#ops", "text": draw(any_text)},
        "input_data": _input_data(draw, pick),
    }
    report = _report(draw(st.booleans()), draw(maybe_error), {"ok": True})
    return inputs, {"result": report} if draw(st.integers(0, 4)) else None


def code_parts(draw: st.DrawFn, pick: st.SearchStrategy[str]) -> tuple[Any, Any]:
    inputs = {"code": "print('hi')", "input_data": _input_data(draw, pick)}
    data: dict[str, Any] = {"sandbox_id": "sbx-1", "stdout": draw(any_text)}
    if draw(st.booleans()):
        data["error"] = draw(error_messages)
    report = _report(draw(st.booleans()), draw(maybe_error), data)
    return inputs, report if draw(st.integers(0, 4)) else None


def other_parts(draw: st.DrawFn, pick: st.SearchStrategy[str]) -> tuple[Any, Any]:
    return draw(JSON), draw(st.one_of(JSON, any_text))


PARTS = {
    "model": model_parts,
    "integration": integration_parts,
    "code": code_parts,
    "other": other_parts,
}


@dataclass(frozen=True)
class Draft:
    """One step record as sent, with what the oracle needs to know about it."""

    record: dict[str, Any]
    start: Stamp | None
    end: Stamp | None


step_ids = st.one_of(
    st.uuids().map(str),
    st.just("b2acc986-af06-418a-bf71-c730d5ghaf0b"),  # the documented, invalid, UUID
    texts(20, min_size=1),
    st.integers(),
).filter(lambda value: str(value).strip() != "")
node_id_fields = st.one_of(st.none(), json_scalars)


def step_draft(draw: st.DrawFn, step_id: object, pick: st.SearchStrategy[str]) -> Draft:
    start = draw(time_fields)
    end = draw(time_fields)
    if isinstance(start, Stamp) and isinstance(end, Stamp) and draw(st.booleans()):
        end = start  # zero-length spans are common, not lucky (end < start already is)
    kind = draw(st.sampled_from(sorted(PARTS)))
    inputs, outputs = PARTS[kind](draw, pick)
    record: dict[str, Any] = {
        "id": step_id,
        "user_id": "2*****************1",
        "node_id": draw(pick) if draw(st.integers(0, 5)) else draw(node_id_fields),
        "status": draw(statuses),
        "start_time": start.text if isinstance(start, Stamp) else start,
        "end_time": end.text if isinstance(end, Stamp) else end,
        "elapsed_time": 1,
        "error": draw(error_fields),
        "inputs": inputs,
        "outputs": outputs,
        "step_metadata": None,
        "tokens": 0,
    }
    if draw(st.integers(0, 9)) == 0:
        record = {**draw(garbage_objects), **record}  # unknown extra fields
    return Draft(
        record,
        start if isinstance(start, Stamp) else None,
        end if isinstance(end, Stamp) else None,
    )


@dataclass(frozen=True)
class Case:
    workflow: WorkflowInfo
    run_record: dict[str, Any]
    run_start: Stamp | None
    run_end: Stamp | None
    drafts: tuple[Draft, ...]
    options: MappingOptions
    already: frozenset[str] = field(default_factory=frozenset)

    def parse(self) -> tuple[Run, list[Step]]:
        """Fresh records each call: no state shared between two mappings."""
        runs, rejected = parse_records([copy.deepcopy(self.run_record)], Run)
        assert not rejected
        steps, rejected = parse_records(copy.deepcopy([d.record for d in self.drafts]), Step)
        assert not rejected
        return runs[0], steps

    def map(self, already: frozenset[str] | None = None) -> RunSpans:
        run, steps = self.parse()
        return map_run(
            self.workflow,
            run,
            steps,
            self.options,
            already_exported=self.already if already is None else already,
        )

    def first_drafts(self) -> dict[str, Draft]:
        """Step id -> its first record (a repeated id is reported, the first one counts)."""
        found: dict[str, Draft] = {}
        for draft in self.drafts:
            found.setdefault(str(draft.record["id"]).strip(), draft)
        return found


node_types = st.sampled_from(["model", "integration", "code", "router"])


def graph_for(draw: st.DrawFn, pool: Sequence[str]) -> WorkflowGraph:
    if draw(st.booleans()):
        return EMPTY_GRAPH
    ends = st.sampled_from([*pool, "START", "END"])
    edges = draw(st.lists(st.tuples(ends, ends).map(list), max_size=8))
    nodes = {node: {"type": draw(node_types)} for node in pool}
    return graph_from_api({"nodes": nodes, "edges": edges})


run_ids = st.one_of(
    st.uuids().map(str),
    st.just("5b69669f-975a-49af-a33a-61ff9ae5a20f"),
    st.just("00000000-0000-0000-0000-000000000000"),
    texts(20, min_size=1).filter(lambda s: s.strip() != ""),
    st.integers(),
)
limits = st.one_of(st.sampled_from([16, 100, 2048]), st.integers(1, 5000))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    pool = draw(st.lists(node_names, min_size=1, max_size=5, unique=True))
    pick = st.sampled_from(pool)
    ids = draw(st.lists(step_ids, max_size=5, unique_by=lambda value: str(value).strip()))
    if ids and draw(st.integers(0, 9)) == 0:
        ids.append(draw(st.sampled_from(ids)))  # the same step listed twice
    drafts = tuple(step_draft(draw, step_id, pick) for step_id in ids)
    run_start, run_end = draw(time_fields), draw(time_fields)
    run_record = {
        "id": draw(run_ids),
        "status": draw(statuses),
        "start_time": run_start.text if isinstance(run_start, Stamp) else run_start,
        "end_time": run_end.text if isinstance(run_end, Stamp) else run_end,
        "elapsed_time": 4,
        "error": draw(error_fields),
        "outputs": draw(st.one_of(JSON, any_text)),
        "all_outputs": {},
        "inputs": {"prompt": draw(any_text)},
    }
    workflow = WorkflowInfo(
        draw(st.one_of(st.uuids().map(str), texts(12, min_size=1))),
        draw(st.one_of(st.none(), texts(20), long_texts)),
        graph_for(draw, pool),
    )
    options = MappingOptions(
        resource=RESOURCE,
        scope=SCOPE,
        capture_content=draw(st.booleans()),
        content_max_length=draw(limits),
    )
    normalized = sorted({str(i).strip() for i in ids})
    already = frozenset(draw(st.lists(st.sampled_from(normalized)))) if normalized else frozenset()
    return Case(
        workflow,
        run_record,
        run_start if isinstance(run_start, Stamp) else None,
        run_end if isinstance(run_end, Stamp) else None,
        drafts,
        options,
        already,
    )


# --- the oracle ------------------------------------------------------------------------


def _norm(status: str | None) -> str | None:
    return status.strip().casefold() if isinstance(status, str) else None


def run_terminal(case: Case, run: Run) -> bool:
    status = _norm(run.status)
    if status in TERMINAL:
        return True
    if status in IN_FLIGHT:
        return False
    return case.run_end is not None  # unknown status: finished once it has an end time


def step_terminal(step: Step, run_is_terminal: bool) -> bool:
    # docs/design.md: once the run is terminal every step is exported with its raw status.
    if run_is_terminal:
        return True
    return _norm(step.status) in TERMINAL


def error_present(error: object) -> bool:
    if error is None or error is False:
        return False
    if isinstance(error, str):
        return bool(error.strip())
    return error != {} and error != []


def reports_failure(outputs: object) -> bool:
    """`successful: false`, at the top level (code) or under `result` (integrations)."""
    if not isinstance(outputs, dict):
        return False
    for report in (outputs.get("result"), outputs):
        if isinstance(report, dict) and isinstance(report.get("successful"), bool):
            return report["successful"] is False
    return False


def step_failed(step: Step) -> bool:
    return (
        _norm(step.status) in FAILED or error_present(step.error) or reports_failure(step.outputs)
    )


def run_failed(run: Run) -> bool:
    return _norm(run.status) in FAILED or error_present(run.error)


def expected_trace_id(run_id: str) -> int:
    try:
        value = uuid.UUID(run_id).int
    except ValueError:
        value = 0
    return value or int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16], "big")


def skipped_steps(result: RunSpans, *, duplicates: bool = True) -> set[str]:
    """Steps reported as skipped (with or without the second copies of repeated ids)."""
    return {
        p.record.removeprefix("step ")
        for p in result.problems
        if p.skipped
        and p.record.startswith("step ")
        and (duplicates or "duplicate" not in p.reason)
    }


def otlp_bytes(spans: Sequence[SpanSpec]) -> bytes:
    return FRAMER.request([span.serialize() for span in spans])


def otlp_json(spans: Sequence[SpanSpec]) -> bytes:
    return json.dumps(to_otlp_dict(FRAMER, spans), ensure_ascii=False).encode()


# --- properties ------------------------------------------------------------------------

record_like = st.one_of(
    JSON,
    garbage_objects,
    st.builds(lambda extra, i: {**extra, "id": i}, garbage_objects, JSON),
    st.builds(lambda extra, i: {**extra, "workflow_id": i}, garbage_objects, JSON),
)


def _valid_id(value: object) -> bool:
    return (
        isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip() != ""
    )


@PROPERTY_SETTINGS
@given(items=st.lists(record_like, max_size=5))
def test_parse_records_never_raises_and_keeps_every_record_with_an_id(items: list[Any]) -> None:
    for model, id_key in ((Step, "id"), (Run, "id"), (Workflow, "workflow_id")):
        good, rejected = parse_records(items, model)
        assert len(good) + len(rejected) == len(items)
        accepted = [i for i, item in enumerate(items) if isinstance(item, dict)]
        accepted = [i for i in accepted if _valid_id(items[i].get(id_key))]
        # Lenient: only a missing or unusable id rejects a record, nothing else does.
        assert sorted(r.index for r in rejected) == sorted(set(range(len(items))) - set(accepted))
        assert [getattr(g, id_key) for g in good] == [
            str(items[i][id_key]).strip() for i in accepted
        ]


def _as_field(value: object) -> object:
    return value.text if isinstance(value, Stamp) else value


garbage_fields = st.one_of(JSON, time_fields.map(_as_field), statuses)


@st.composite
def garbage_cases(draw: st.DrawFn) -> tuple[Any, list[Any], WorkflowInfo, MappingOptions]:
    run = {**draw(garbage_objects), "id": draw(step_ids)}
    for name in ("status", "start_time", "end_time", "error"):
        if draw(st.booleans()):
            run[name] = draw(JSON)
    steps: list[Any] = []
    for step_id in draw(st.lists(step_ids, max_size=4)):
        step = {**draw(garbage_objects), "id": step_id}
        for name in ("status", "node_id", "start_time", "end_time", "error", "inputs", "outputs"):
            if draw(st.booleans()):
                step[name] = draw(garbage_fields)
        steps.append(step)
    steps.extend(draw(st.lists(JSON, max_size=1)))  # not even objects
    workflow = WorkflowInfo(draw(texts(10, min_size=1)), draw(texts(10) | st.none()))
    options = MappingOptions(
        capture_content=draw(st.booleans()), content_max_length=draw(st.integers(1, 300))
    )
    return run, steps, workflow, options


@PROPERTY_SETTINGS
@given(case=garbage_cases())
def test_map_run_never_raises_on_garbage(
    case: tuple[Any, list[Any], WorkflowInfo, MappingOptions],
) -> None:
    run_record, step_records, workflow, options = case
    runs, _ = parse_records([run_record], Run)
    steps, rejected = parse_records(step_records, Step)
    assert len(steps) + len(rejected) == len(step_records)
    result = map_run(workflow, runs[0], steps, options)  # MappingError never escapes
    assert isinstance(result, RunSpans)
    spans = result.all_spans()
    for span in spans:
        assert span.end_time is not None and span.start_time is not None
        assert span.end_time >= span.start_time
    assert otlp_bytes(spans) == otlp_bytes(map_run(workflow, runs[0], steps, options).all_spans())


@PROPERTY_SETTINGS
@given(case=cases())
def test_mapping_keeps_the_trace_contract(case: Case) -> None:
    """One case, every rule of docs/design.md "Trace shape" that must hold for it."""
    run, steps = case.parse()
    result = case.map(frozenset())
    check_step_accounting(case, run, steps, result, already=frozenset())
    check_ids(case, run, steps, result)
    check_times(case, result)
    check_statuses(run, steps, result, case.options.content_max_length)
    check_bounds(case, result)
    # The same accounting holds when some steps were exported by an earlier poll.
    partial = case.map()
    check_step_accounting(case, run, steps, partial, already=case.already)
    check_determinism(case, result, partial)


def check_step_accounting(
    case: Case, run: Run, steps: list[Step], result: RunSpans, *, already: frozenset[str]
) -> None:
    """Every terminal step (first record of each id) gives one span or a skipped Problem."""
    terminal = run_terminal(case, run)
    assert result.run_terminal is terminal
    first: dict[str, Step] = {}
    for step in steps:
        first.setdefault(step.id, step)
    expected = {i for i, step in first.items() if step_terminal(step, terminal)}
    exported = set(result.steps)
    skipped = skipped_steps(result, duplicates=False)
    assert exported <= expected - already, "a span for a step in flight or already sent"
    missing = (expected - already) - exported
    assert missing <= skipped, f"terminal steps with neither span nor problem: {missing}"
    assert not exported & skipped
    assert result.steps_in_flight == len(first) - len(expected)
    for step_id in {s.id for s in steps if [t.id for t in steps].count(s.id) > 1}:
        assert any(
            p.skipped and p.record == f"step {step_id}" and "duplicate" in p.reason
            for p in result.problems
        ), f"step {step_id} listed twice without a problem"
    limit = case.options.content_max_length
    for step_id, span in result.steps.items():
        assert span.attributes is not None
        if len(step_id) <= max(limit, MAX_NAME_LENGTH):  # longer ids are cut
            assert span.attributes["orchestra.step.id"] == step_id
    # The root: present once the run is terminal (unless reported as skipped).
    run_skipped = any(p.skipped and p.record == f"run {run.id}" for p in result.problems)
    assert (result.root is not None) == (terminal and not run_skipped)


def check_ids(case: Case, run: Run, steps: list[Step], result: RunSpans) -> None:
    trace_id = expected_trace_id(run.id)
    assert result.trace_id == trace_id
    spans = result.all_spans()
    contexts = [s.context for s in spans]
    assert all(c is not None and c.trace_id == trace_id for c in contexts)
    span_ids = [c.span_id for c in contexts if c is not None]
    assert len(set(span_ids)) == len(spans), "two spans share a span id"
    root_id = result.root.context.span_id if result.root and result.root.context else None
    if result.root is not None:
        assert result.root.parent is None
    first = {}
    for step in steps:
        first.setdefault(step.id, step)
    for step_id, span in result.steps.items():
        assert span.parent is not None and span.parent.trace_id == trace_id
        if root_id is not None:
            assert span.parent.span_id == root_id
        # Derived from the step id alone: the step mapped alone, in another run, keeps it.
        alone = map_run(
            case.workflow,
            run.model_copy(update={"id": "another-run"}),
            [first[step_id]],
            case.options,
        ).steps[step_id]
        assert alone.context is not None and span.context is not None
        assert alone.context.span_id == span.context.span_id
    again = case.map(frozenset()).all_spans()
    assert [s.context for s in again] == contexts, "ids changed between two mappings"


def check_times(case: Case, result: RunSpans) -> None:
    drafts = case.first_drafts()
    children = list(result.steps.values())
    for step_id, span in result.steps.items():
        assert span.start_time is not None and span.end_time is not None
        assert span.end_time >= span.start_time, "negative span"
        draft = drafts[step_id]
        if draft.start is not None:
            assert span.start_time == draft.start.ns, "start is not the record's, to the ns"
            if draft.end is not None:
                # End before start (clock skew) becomes a zero-length span at its start.
                assert span.end_time == max(draft.end.ns, draft.start.ns)
            else:
                assert span.end_time == span.start_time
        elif draft.end is not None:
            assert span.end_time == draft.end.ns
    root = result.root
    if root is None:
        return
    assert root.start_time is not None and root.end_time is not None
    assert root.end_time >= root.start_time
    for child in children:
        assert child.start_time is not None and child.end_time is not None
        assert root.start_time <= child.start_time and child.end_time <= root.end_time
    starts = [c.start_time for c in children if c.start_time is not None]
    ends = [c.end_time for c in children if c.end_time is not None]
    if case.run_start is not None:
        starts.append(case.run_start.ns)
    if case.run_end is not None:
        ends.append(case.run_end.ns)
    if starts:
        assert root.start_time == min(starts)
    assert root.end_time == max([*ends, root.start_time])


def check_statuses(run: Run, steps: list[Step], result: RunSpans, limit: int) -> None:
    first: dict[str, Step] = {}
    for step in steps:
        first.setdefault(step.id, step)
    any_step_failed = False
    for step_id, span in result.steps.items():
        failed = step_failed(first[step_id])
        any_step_failed |= failed
        check_status(span, failed, limit)
    if result.root is not None:
        check_status(result.root, run_failed(run) or any_step_failed, limit)


# An exception type name, written out from docs/design.md ("Errors"): only such failures,
# and those with a stack trace, get an `exception` event.
EXCEPTION_NAME = re.compile(r"[A-Za-z_][\w.]*(?:Error|Exception|Timeout|Failure|Exit)")


def check_status(span: SpanSpec, failed: bool, limit: int) -> None:
    attributes = span.attributes or {}
    expected = StatusCode.ERROR if failed else StatusCode.UNSET
    assert span.status.status_code is expected, (span.name, dict(attributes))
    assert ("error.type" in attributes) is failed
    events = [e for e in span.events if e.name == "exception"]
    if not failed:
        assert not events
        return
    assert span.status.description, "an ERROR status says what went wrong"
    error_type = str(attributes["error.type"])
    if EXCEPTION_NAME.fullmatch(error_type):
        assert len(events) == 1, "a failure with an exception type is an exception"
    elif len(error_type) < limit:  # a type cut to the limit may have lost its suffix
        assert len(events) <= 1
        for event in events:
            assert "exception.stacktrace" in (event.attributes or {}), "only for a traceback"
            assert "exception.type" not in (event.attributes or {})
    for event in events:
        event_attributes = event.attributes or {}
        assert event_attributes["exception.message"] == span.status.description
        if "exception.type" in event_attributes:
            assert str(event_attributes["exception.type"]).startswith(error_type.removesuffix("…"))
        assert event.timestamp == span.end_time


def check_determinism(case: Case, everything: RunSpans, partial: RunSpans) -> None:
    """Same input, byte-identical OTLP; the spool and already-exported steps change nothing."""
    spans = everything.all_spans()
    again = case.map(frozenset()).all_spans()
    assert otlp_bytes(spans) == otlp_bytes(again)
    assert otlp_json(spans) == otlp_json(again)
    # The spool keeps a span as it is: what leaves it is what went in.
    restored = [decode_span(Span.FromString(outgoing_span(span).payload)) for span in spans]
    assert otlp_bytes(restored) == otlp_bytes(spans)
    # Already-exported steps are left out, and the others do not change.
    assert set(partial.steps) == set(everything.steps) - case.already
    for step_id, span in partial.steps.items():
        assert otlp_bytes([span]) == otlp_bytes([everything.steps[step_id]])
    if everything.root is not None:
        assert partial.root is not None
        assert otlp_bytes([partial.root]) == otlp_bytes([everything.root])


def check_bounds(case: Case, result: RunSpans) -> None:
    limit = case.options.content_max_length
    for span in result.all_spans():
        assert len(span.name) <= MAX_NAME_LENGTH
        assert len(span.links) <= MAX_LINKS
        assert len(span.status.description or "") <= limit
        for name, value in (span.attributes or {}).items():
            if isinstance(value, str):
                # Ids are kept whole up to the name limit: a cut id finds nothing.
                ids = ("orchestra.workflow.id", "orchestra.run.id", "orchestra.step.id")
                bound = MAX_NAME_LENGTH if name in ids or name == "orchestra.node.id" else limit
                assert len(value) <= bound, name
            elif isinstance(value, (list, tuple)):
                assert len(value) <= MAX_LIST_ITEMS, name
                assert all(len(item) <= limit for item in value if isinstance(item, str)), name
        for event in span.events:
            assert len(str((event.attributes or {}).get("exception.message", ""))) <= limit


# --- fixed defects (regression tests) --------------------------------------------------
_RUN = {
    "id": "5b69669f-975a-49af-a33a-61ff9ae5a20f",
    "status": "completed",
    "start_time": "2025-03-13T02:41:15.021907Z",
    "end_time": "2025-03-13T02:41:19.201337Z",
}


def _map(steps: list[dict[str, Any]], **options: Any) -> RunSpans:
    runs, _ = parse_records([_RUN], Run)
    parsed, rejected = parse_records(steps, Step)
    assert not rejected
    return map_run(WorkflowInfo("wf", "w"), runs[0], parsed, MappingOptions(**options))


def _step(step_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "node_id": "model",
        "status": "completed",
        "start_time": "2025-03-13T02:41:16Z",
        "end_time": "2025-03-13T02:41:17Z",
        **fields,
    }


def test_event_and_link_attribute_text_is_bounded_too() -> None:
    long = "Q" * 5000
    result = _map(
        [
            _step("a", node_id="n" + long, status="failed", error={"type": long + "Error"}),
            _step("b", node_id="b", inputs={"input_data": {"n" + long: "x"}}),
        ],
        content_max_length=100,
    )
    texts_found = [
        value
        for span in result.all_spans()
        for holder in [*(e.attributes for e in span.events), *(k.attributes for k in span.links)]
        for value in (holder or {}).values()
        if isinstance(value, str)
    ]
    assert texts_found, "the case must produce an event and a link"
    event_texts = [
        value
        for span in result.all_spans()
        for event in span.events
        for value in (event.attributes or {}).values()
        if isinstance(value, str)
    ]
    assert max(len(value) for value in event_texts) <= 100
    # Link attributes hold node ids: kept whole up to the name limit, never unbounded.
    assert max(len(value) for value in texts_found) <= MAX_NAME_LENGTH


@pytest.mark.parametrize(
    "when", ["1969-12-31T23:59:59Z", "1970-01-01T00:30:00+01:00", "2600-01-01T00:00:00Z"]
)
def test_timestamps_outside_the_otlp_range_still_encode(when: str) -> None:
    result = _map([_step("a", start_time=when, end_time=None)])
    [span.encode() for span in result.all_spans()]  # must not raise


def test_lone_surrogates_in_records_still_encode() -> None:
    # The API client replaces lone surrogates where it decodes JSON (the boundary).
    raw = _step("a", node_id="model\ud800", status="failed", error="boom \udc00")
    result = _map([replace_lone_surrogates(raw)])
    spans = result.all_spans()
    for span in spans:
        outgoing_span(span).samples.encode("utf-8")  # what sqlite3 does with the spool text
    [span.serialize() for span in spans]


def test_integer_attributes_fit_in_otlp() -> None:
    step = _step(
        "a",
        inputs={"model": "m", "messages": [], "max_tokens": 2**63},
        outputs={"object": "chat.completion", "usage": {"prompt_tokens": 10**20}},
    )
    span = _map([step]).steps["a"]
    encoded = span.encode()
    assert len(encoded.attributes) == len(span.attributes or {})


def test_a_step_left_running_in_an_ended_run_is_not_silently_dropped() -> None:
    result = _map([_step("a"), _step("b", status="running", end_time=None)])
    assert result.root is not None
    assert (
        "b" in result.steps
        or "b" in skipped_steps(result)
        or any("b" in p.record for p in result.problems)
    )


def test_root_span_does_not_depend_on_step_order() -> None:
    steps = [
        _step("a", node_id="x", status="failed", error={"code": "E1", "message": "m1"}),
        _step("b", node_id="y", status="failed", error={"code": "E2", "message": "m2"}),
    ]
    forward, backward = _map(steps).root, _map(steps[::-1]).root
    assert forward is not None and backward is not None
    assert otlp_bytes([forward]) == otlp_bytes([backward])
