"""What goes into the ledger's spool, and reading back what older versions put there.

A record waits in the spool as the serialised OTLP message it is sent as (a Span or a
LogRecord), beside the workflow-metric samples its confirmation adds: delivery frames the
bytes into requests and counts the samples without decoding anything. The resource and
scope are the exporting process's, added when a request is framed.

Ledgers written before schema 4 spooled spans as compact JSON; `legacy_outgoing` turns
such a row into today's form, so an upgrade delivers what an older version captured.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.trace import SpanKind, Status, StatusCode

from exporter.errors import StateError
from exporter.mapping.ids import span_context
from exporter.mapping.otlp import EventSpec, LinkSpec, SpanSpec
from exporter.sink.encoding import LOGS, TRACES
from exporter.state import Outgoing
from exporter.workflow_metrics import encode_facts, samples_of


def outgoing_span(span: SpanSpec) -> Outgoing:
    facts = encode_facts(samples_of(span), span.end_time)
    return Outgoing(TRACES, span.serialize(), facts)


def outgoing_log(record: LogRecord) -> Outgoing:
    return Outgoing(LOGS, record.SerializeToString())


def legacy_outgoing(text: str) -> Outgoing:
    """A span spooled as JSON by a version before schema 4, as it is spooled today."""
    return outgoing_span(legacy_span(text))


def legacy_span(text: str) -> SpanSpec:
    try:
        document = json.loads(text)
        trace_id = int(document["t"], 16)
        parent = document.get("p")
        status = document.get("st")
        return SpanSpec(
            name=document["n"],
            context=span_context(trace_id, int(document["s"], 16)),
            parent=_parent(trace_id, parent, bool(document.get("pr"))) if parent else None,
            kind=SpanKind(document["k"]),
            start_time=document["b"],
            end_time=document["e"],
            attributes=_attributes(document.get("a")),
            events=tuple(
                EventSpec(name, at, _attributes(attrs))
                for name, at, attrs in document.get("ev", ())
            ),
            links=tuple(_link(entry) for entry in document.get("l", ())),
            status=Status(StatusCode(status[0]), status[1]) if status else Status(StatusCode.UNSET),
        )
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise StateError(f"a spooled span cannot be read back: {exc}") from exc


def _link(entry: list[Any]) -> LinkSpec:
    trace_id, span_id, attributes = int(entry[0], 16), int(entry[1], 16), entry[2]
    remote = len(entry) > 3 and bool(entry[3])
    return LinkSpec(span_context(trace_id, span_id, remote=remote), _attributes(attributes))


def _parent(trace_id: int, span_id: str, remote: bool) -> Any:
    return span_context(trace_id, int(span_id, 16), remote=remote)


def _attributes(raw: object) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        return {}
    # JSON gives lists for attribute sequences, which OTLP encodes as arrays.
    return {str(key): value for key, value in raw.items()}
