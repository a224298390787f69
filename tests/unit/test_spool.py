"""Spans <-> the spool's JSON: everything that makes a span survives the round trip.

A span waits in the ledger as JSON until the sink confirms it, possibly across a restart;
what comes back must be the span that went in (exporter/spool.py), and a payload that
cannot be read back is a StateError, never a crash or a half-span.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from exporter.errors import StateError
from exporter.mapping.ids import span_context
from exporter.spool import decode_span, encode_span

TRACE = 0x5B69669F975A49AFA33A61FF9AE5A20F
RESOURCE = Resource({"service.name": "orchestra", "host.name": "spool-test"})
SCOPE = InstrumentationScope("orchestra-otel", "9.9.9")


def _step_span(**overrides: Any) -> ReadableSpan:
    fields: dict[str, Any] = {
        "name": "slack_integration",
        "context": span_context(TRACE, 0x1122334455667788),
        "parent": span_context(TRACE, 0x0102030405060708),
        "kind": SpanKind.CLIENT,
        "start_time": 1_741_833_676_000_001_000,
        "end_time": 1_741_833_676_500_001_999,
        "attributes": {
            "orchestra.node.id": "slack_integration",
            "gen_ai.usage.input_tokens": 36,
            "gen_ai.request.temperature": 0.25,
            "orchestra.step.cached": False,
            "gen_ai.response.finish_reasons": ["stop", "length"],
            "orchestra.step.sizes": [1, 2, 3],
            "orchestra.step.text": 'héllo ✓ "quoted" \\ back\nslash',
        },
        "events": [
            Event(
                "exception",
                {"exception.type": "channel_not_found", "exception.message": "no #ops"},
                timestamp=1_741_833_676_400_000_000,
            )
        ],
        "links": [
            Link(span_context(TRACE, 0xAAAAAAAAAAAAAAAA), {"orchestra.link.input": "model"}),
            Link(span_context(TRACE + 1, 0xBBBBBBBBBBBBBBBB)),
        ],
        "status": Status(StatusCode.ERROR, "channel_not_found: the bot is not a member"),
        "resource": Resource({"service.name": "the-process-that-mapped-it"}),
        "instrumentation_scope": InstrumentationScope("old-scope", "0.0.1"),
    }
    fields.update(overrides)
    return ReadableSpan(**fields)


def _plain(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attribute values with sequences as lists (a tuple and a list export alike)."""
    return {
        key: list(value) if isinstance(value, (list, tuple)) else value
        for key, value in (attributes or {}).items()
    }


def _roundtrip(span: ReadableSpan) -> ReadableSpan:
    return decode_span(encode_span(span), RESOURCE, SCOPE)


def test_a_step_span_keeps_every_field() -> None:
    span = _step_span()
    back = _roundtrip(span)

    assert back.name == span.name
    assert back.context == span.context
    assert back.context is not None and back.context.trace_flags.sampled
    assert back.parent is not None and span.parent is not None
    assert (back.parent.trace_id, back.parent.span_id) == (TRACE, span.parent.span_id)
    assert back.kind is SpanKind.CLIENT
    assert (back.start_time, back.end_time) == (span.start_time, span.end_time)
    assert _plain(back.attributes) == _plain(span.attributes)
    assert [(e.name, e.timestamp, _plain(e.attributes)) for e in back.events] == [
        (e.name, e.timestamp, _plain(e.attributes)) for e in span.events
    ]
    links = [(link.context.trace_id, link.context.span_id, link.attributes) for link in back.links]
    assert [(trace_id, span_id, _plain(attrs)) for trace_id, span_id, attrs in links] == [
        (TRACE, 0xAAAAAAAAAAAAAAAA, {"orchestra.link.input": "model"}),
        (TRACE + 1, 0xBBBBBBBBBBBBBBBB, {}),
    ]
    assert back.status.status_code is StatusCode.ERROR
    assert back.status.description == span.status.description


def test_the_resource_and_scope_are_the_exporting_process_s() -> None:
    back = _roundtrip(_step_span())
    assert back.resource is RESOURCE
    assert back.instrumentation_scope is SCOPE


@pytest.mark.parametrize(
    "status", [Status(StatusCode.UNSET), Status(StatusCode.OK)], ids=["unset", "ok"]
)
def test_a_root_span_without_events_or_links(status: Status) -> None:
    span = _step_span(
        name="joke-to-slack",
        parent=None,
        kind=SpanKind.INTERNAL,
        events=[],
        links=[],
        attributes={"orchestra.run.id": "5b69669f-975a-49af-a33a-61ff9ae5a20f"},
        status=status,
    )
    back = _roundtrip(span)
    assert back.parent is None
    assert back.kind is SpanKind.INTERNAL
    assert list(back.events) == [] and list(back.links) == []
    assert back.status.status_code is status.status_code
    assert back.status.description is None


def test_a_tuple_attribute_comes_back_as_the_same_sequence() -> None:
    span = _step_span(attributes={"gen_ai.response.finish_reasons": ("stop",)})
    assert _plain(_roundtrip(span).attributes) == {"gen_ai.response.finish_reasons": ["stop"]}


def test_the_payload_is_ascii_so_its_length_is_its_size_in_bytes() -> None:
    payload = encode_span(_step_span())
    assert payload.isascii()
    assert len(payload) == len(payload.encode("utf-8"))
    assert json.loads(payload)["a"]["orchestra.step.text"].startswith("héllo ✓")


def test_encoding_is_deterministic() -> None:
    assert encode_span(_step_span()) == encode_span(_step_span())


def test_a_span_without_context_cannot_be_spooled() -> None:
    with pytest.raises(StateError, match="has no context"):
        encode_span(_step_span(context=None))


def _payload(**changes: Any) -> str:
    document = json.loads(encode_span(_step_span()))
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
def test_a_payload_that_cannot_be_read_back_is_a_state_error(payload: str) -> None:
    with pytest.raises(StateError, match="a spooled span cannot be read back"):
        decode_span(payload, RESOURCE, SCOPE)


def test_unknown_keys_and_odd_attribute_containers_are_tolerated() -> None:
    """Spool entries of another version may carry more; attributes that are not a map
    are dropped rather than making the span unreadable."""
    back = decode_span(_payload(future="field", a="not a map"), RESOURCE, SCOPE)
    assert back.name == "slack_integration"
    assert dict(back.attributes or {}) == {}
