"""What the spool keeps, and reading back what older versions kept (exporter/spool.py).

A span waits in the ledger as its OTLP Span bytes beside the workflow-metric samples its
confirmation adds; what is framed and sent must be the span that was mapped. Ledgers of
schema 3 and before spooled spans as compact JSON: an upgraded ledger still holds such
rows, so every field of that format must still read back, into the record today's spool
would have made, and a payload that cannot be read back is a StateError, never a crash
or a half-span.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.trace import SpanKind, Status, StatusCode

from exporter.errors import StateError
from exporter.mapping import attributes as attr
from exporter.mapping.ids import span_context
from exporter.mapping.otlp import EventSpec, LinkSpec, SpanSpec, decode_span, make_log_record
from exporter.mapping.spans import map_run
from exporter.sink.encoding import LOGS, TRACES
from exporter.spool import legacy_outgoing, legacy_span, outgoing_log, outgoing_span
from exporter.workflow_metrics import decode_facts, samples_of
from tests.golden.test_golden import cases
from tests.support.ledger import legacy_json

TRACE = 0x5B69669F975A49AFA33A61FF9AE5A20F
CALLER_TRACE = 0x0AF7651916CD43DD8448EB211C80319C


def _step_span(**overrides: Any) -> SpanSpec:
    fields: dict[str, Any] = {
        "name": "slack_integration",
        "context": span_context(TRACE, 0x1122334455667788),
        "parent": span_context(TRACE, 0x0102030405060708),
        "kind": SpanKind.CLIENT,
        "start_time": 1_741_833_676_000_001_000,
        "end_time": 1_741_833_676_500_001_999,
        "attributes": {
            attr.WORKFLOW_ID: "wf-1",
            attr.WORKFLOW_NAME: "joke-to-slack",
            attr.STEP_ID: "step-2",
            attr.NODE_ID: "slack_integration",
            attr.NODE_TYPE: "integration",
            attr.STEP_STATUS: "failed",
            "gen_ai.usage.input_tokens": 36,
            "gen_ai.request.temperature": 0.25,
            "orchestra.step.cached": False,
            "gen_ai.response.finish_reasons": ["stop", "length"],
            "orchestra.step.sizes": [1, 2, 3],
            "orchestra.step.text": 'héllo ✓ "quoted" \\ back\nslash',
        },
        "events": (
            EventSpec(
                "exception",
                1_741_833_676_400_000_000,
                {"exception.type": "channel_not_found", "exception.message": "no #ops"},
            ),
        ),
        "links": (
            LinkSpec(span_context(TRACE, 0xAAAAAAAAAAAAAAAA), {"orchestra.link.input": "model"}),
            LinkSpec(span_context(TRACE + 1, 0xBBBBBBBBBBBBBBBB), {}),
        ),
        "status": Status(StatusCode.ERROR, "channel_not_found: the bot is not a member"),
    }
    fields.update(overrides)
    return SpanSpec(**fields)


def _root_span(status: Status) -> SpanSpec:
    return _step_span(
        name="joke-to-slack",
        context=span_context(TRACE, 0x0102030405060708),
        parent=None,
        kind=SpanKind.INTERNAL,
        events=(),
        links=(),
        attributes={
            attr.WORKFLOW_ID: "wf-1",
            attr.WORKFLOW_NAME: "joke-to-slack",
            attr.RUN_ID: "5b69669f-975a-49af-a33a-61ff9ae5a20f",
            attr.RUN_STATUS: "completed",
        },
        status=status,
    )


def _linked_root() -> SpanSpec:
    """The root of a run a caller started (its traceparent in the run's inputs), linked to
    the caller's span (ORCHESTRA_TRACEPARENT_MODE=link)."""
    caller = span_context(CALLER_TRACE, 0xB7AD6B7169203331, remote=True)
    return replace(_root_span(Status(StatusCode.OK)), links=(LinkSpec(caller, {}),))


def _joined_root() -> SpanSpec:
    """... or joined to the caller's trace, the caller's span its remote parent (`parent`)."""
    caller = span_context(CALLER_TRACE, 0xB7AD6B7169203331, remote=True)
    return replace(
        _root_span(Status(StatusCode.UNSET)),
        context=span_context(CALLER_TRACE, 0x0102030405060708),
        parent=caller,
    )


def _fields(span: SpanSpec) -> dict[str, Any]:
    """Every field of a span, comparable (Status has no equality of its own; sequences
    as lists, as OTLP carries them)."""
    context = span.context
    parent = span.parent
    return {
        "name": span.name,
        "context": (context.trace_id, context.span_id, context.is_remote, context.trace_flags),
        "parent": None if parent is None else (parent.trace_id, parent.span_id, parent.is_remote),
        "kind": span.kind,
        "times": (span.start_time, span.end_time),
        "attributes": _plain(span.attributes),
        "events": [(e.name, e.timestamp, _plain(e.attributes)) for e in span.events],
        "links": [
            (link.context.trace_id, link.context.span_id, link.context.is_remote, link.attributes)
            for link in span.links
        ],
        "status": (span.status.status_code, span.status.description),
    }


def _plain(attributes: Any) -> dict[str, Any]:
    return {
        key: list(value) if isinstance(value, (list, tuple)) else value
        for key, value in attributes.items()
    }


SPANS = {
    "step": _step_span(),
    "root-unset": _root_span(Status(StatusCode.UNSET)),
    "root-ok": _root_span(Status(StatusCode.OK)),
    "linked-root": _linked_root(),
    "joined-root": _joined_root(),
}


# --- today's spool: OTLP bytes and samples ---------------------------------------------


@pytest.mark.parametrize("name", sorted(SPANS))
def test_a_spooled_span_reads_back_with_every_field(name: str) -> None:
    span = SPANS[name]
    outgoing = outgoing_span(span)

    assert outgoing.signal == TRACES
    assert outgoing.payload == span.encode().SerializeToString()
    back = decode_span(Span.FromString(outgoing.payload))
    assert _fields(back) == _fields(span)
    assert back.context.trace_flags.sampled


def test_every_golden_span_spools_as_the_message_it_is_sent_as(shared_dir: Path) -> None:
    spans = [
        span
        for case in cases(shared_dir)
        for span in map_run(case.workflow, case.run, case.steps, case.options).all_spans()
    ]
    assert len(spans) > 40
    for span in spans:
        payload = outgoing_span(span).payload
        assert Span.FromString(payload) == span.encode(), span.name
        assert _fields(decode_span(Span.FromString(payload))) == _fields(span), span.name


def test_the_samples_are_what_the_span_adds_to_the_metrics_once_confirmed() -> None:
    for span in (_step_span(), _root_span(Status(StatusCode.OK))):
        facts = decode_facts(outgoing_span(span).samples)
        assert facts.samples == samples_of(span) != []
        assert facts.end_ns == span.end_time
    step, root = (
        {sample.metric.name for sample in decode_facts(outgoing_span(span).samples).samples}
        for span in (_step_span(), _root_span(Status(StatusCode.OK)))
    )
    assert "orchestra_steps" in step and "orchestra_runs" in root


def test_a_span_outside_any_workflow_adds_nothing_but_its_end() -> None:
    span = _step_span(attributes={"orchestra.node.id": "x"})
    facts = decode_facts(outgoing_span(span).samples)
    assert facts.samples == [] and facts.end_ns == span.end_time


def test_spooling_is_deterministic() -> None:
    assert outgoing_span(_step_span()) == outgoing_span(_step_span())


def test_a_log_record_spools_as_its_bytes_and_adds_no_samples() -> None:
    record = make_log_record(
        trace_id=TRACE,
        span_id=0x1122334455667788,
        time_ns=1_741_833_676_500_001_999,
        body="channel_not_found: the bot is not a member",
        attributes={attr.WORKFLOW_ID: "wf-1", attr.ERROR_TYPE: "channel_not_found"},
    )
    outgoing = outgoing_log(record)
    assert outgoing.signal == LOGS and outgoing.samples == ""
    assert LogRecord.FromString(outgoing.payload) == record


# --- rows of schema 3 and before: span JSON ---------------------------------------------


@pytest.mark.parametrize("name", sorted(SPANS))
def test_a_legacy_span_reads_back_with_every_field(name: str) -> None:
    span = SPANS[name]
    assert _fields(legacy_span(legacy_json(span))) == _fields(span)


@pytest.mark.parametrize("name", sorted(SPANS))
def test_a_legacy_row_is_spooled_as_today_s_would_be(name: str) -> None:
    """Same bytes, same samples: delivery and the metrics cannot tell the two apart."""
    span = SPANS[name]
    assert legacy_outgoing(legacy_json(span)) == outgoing_span(span)


def test_every_golden_span_reads_back_from_its_legacy_json(shared_dir: Path) -> None:
    for case in cases(shared_dir):
        for span in map_run(case.workflow, case.run, case.steps, case.options).all_spans():
            assert legacy_outgoing(legacy_json(span)) == outgoing_span(span), span.name


# Rows as schema 3 wrote them, verbatim (`git show 58acdf5~1:exporter/spool.py`).
SCHEMA_3_ROWS = {
    # A failed step: every attribute type, an exception event, a link upstream.
    "step": (
        '{"n":"slack_integration","t":"5b69669f975a49afa33a61ff9ae5a20f","s":"1122334455667788",'
        '"k":2,"b":1741833676000001000,"e":1741833676500001999,"a":{"orchestra.node.id":'
        '"slack_integration","gen_ai.usage.input_tokens":36,"gen_ai.request.temperature":0.25,'
        '"orchestra.step.cached":false,"gen_ai.response.finish_reasons":["stop","length"],'
        '"orchestra.step.text":"h\\u00e9llo \\u2713"},"p":"0102030405060708","ev":[["exception",'
        '1741833676400000000,{"exception.type":"channel_not_found"}]],"l":[['
        '"5b69669f975a49afa33a61ff9ae5a20f","aaaaaaaaaaaaaaaa",{"orchestra.link.input":"model"}]],'
        '"st":[2,"channel_not_found: the bot is not a member"]}'
    ),
    # A run's root linked to its caller: the link is remote, its trace flags after.
    "linked-root": (
        '{"n":"joke-to-slack","t":"5b69669f975a49afa33a61ff9ae5a20f","s":"0102030405060708",'
        '"k":0,"b":1741833675021907000,"e":1741833719201337000,"a":{"orchestra.run.id":'
        '"5b69669f-975a-49af-a33a-61ff9ae5a20f"},"l":[["0af7651916cd43dd8448eb211c80319c",'
        '"b7ad6b7169203331",{},1,1]],"st":[1,null]}'
    ),
    # A run's root in its caller's trace: a remote parent ("pr").
    "joined-root": (
        '{"n":"joke-to-slack","t":"0af7651916cd43dd8448eb211c80319c","s":"0102030405060708",'
        '"k":0,"b":1741833675021907000,"e":1741833719201337000,"a":{"orchestra.run.id":'
        '"5b69669f-975a-49af-a33a-61ff9ae5a20f"},"p":"b7ad6b7169203331","pr":1}'
    ),
}
_ROW_TIMES = {"start_time": 1741833675021907000, "end_time": 1741833719201337000}
_ROW_RUN = {attr.RUN_ID: "5b69669f-975a-49af-a33a-61ff9ae5a20f"}
ROW_SPANS = {
    "step": _step_span(
        attributes={
            "orchestra.node.id": "slack_integration",
            "gen_ai.usage.input_tokens": 36,
            "gen_ai.request.temperature": 0.25,
            "orchestra.step.cached": False,
            "gen_ai.response.finish_reasons": ["stop", "length"],
            "orchestra.step.text": "héllo ✓",
        },
        events=(
            EventSpec("exception", 1741833676400000000, {"exception.type": "channel_not_found"}),
        ),
        links=(
            LinkSpec(span_context(TRACE, 0xAAAAAAAAAAAAAAAA), {"orchestra.link.input": "model"}),
        ),
    ),
    "linked-root": replace(_linked_root(), attributes=_ROW_RUN, **_ROW_TIMES),
    "joined-root": replace(_joined_root(), attributes=_ROW_RUN, **_ROW_TIMES),
}


@pytest.mark.parametrize("name", sorted(SCHEMA_3_ROWS))
def test_a_row_of_schema_3_reads_back_field_by_field(name: str) -> None:
    span = legacy_span(SCHEMA_3_ROWS[name])
    assert _fields(span) == _fields(ROW_SPANS[name])
    assert legacy_json(ROW_SPANS[name]) == SCHEMA_3_ROWS[name], "the old format, as it was"


def test_what_is_remote_in_a_row_of_schema_3_stays_remote_on_the_wire() -> None:
    """OTLP flags say whether a parent or link is remote, as the SDK's encoder set them."""
    joined = legacy_span(SCHEMA_3_ROWS["joined-root"]).encode()
    linked = legacy_span(SCHEMA_3_ROWS["linked-root"]).encode()
    step = legacy_span(SCHEMA_3_ROWS["step"]).encode()
    assert (joined.flags, linked.flags, step.flags) == (0x300, 0x100, 0x100)
    assert [link.flags for link in linked.links] == [0x300]
    assert [link.flags for link in step.links] == [0x100]


@pytest.mark.parametrize(
    "status", [Status(StatusCode.UNSET), Status(StatusCode.OK)], ids=["unset", "ok"]
)
def test_a_legacy_root_without_parent_events_or_links(status: Status) -> None:
    document = json.loads(legacy_json(_root_span(status)))
    assert not {"p", "pr", "ev", "l"} & set(document)
    back = legacy_span(json.dumps(document))
    assert back.parent is None and back.kind is SpanKind.INTERNAL
    assert back.events == () and back.links == ()
    assert back.status.status_code is status.status_code
    assert back.status.description is None


def test_a_legacy_tuple_attribute_comes_back_as_the_same_sequence() -> None:
    span = _step_span(attributes={"gen_ai.response.finish_reasons": ("stop",)})
    back = legacy_span(legacy_json(span))
    assert back.attributes == {"gen_ai.response.finish_reasons": ["stop"]}
    assert back.encode() == span.encode()


def _payload(**changes: Any) -> str:
    document = json.loads(legacy_json(_step_span()))
    for key, value in changes.items():
        if value is None:
            del document[key]
        else:
            document[key] = value
    return json.dumps(document)


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "{not json",
        "null",
        "[]",
        '"a string"',
        _payload(n=None),  # no name
        _payload(t=None),  # no trace id
        _payload(t="not-hex"),
        _payload(s=12),  # a span id that is not text
        _payload(k=99),  # no such span kind
        _payload(b=None),  # no start time
        _payload(st=[2]),  # a status without its description
        _payload(st=[7, "x"]),  # no such status code
        _payload(ev=[["exception"]]),  # an event without time and attributes
        _payload(l=[["zz", "00", {}]]),  # a link to an unreadable id
    ],
)
def test_a_legacy_payload_that_cannot_be_read_back_is_a_state_error(payload: str) -> None:
    with pytest.raises(StateError, match="a spooled span cannot be read back"):
        legacy_outgoing(payload)


def test_unknown_keys_and_odd_attribute_containers_are_tolerated() -> None:
    """Spool entries of another version may carry more; attributes that are not a map
    are dropped rather than making the span unreadable."""
    back = legacy_span(_payload(future="field", a="not a map"))
    assert back.name == "slack_integration"
    assert back.attributes == {}
    assert replace(back, attributes=_step_span().attributes).encode() == _step_span().encode()
