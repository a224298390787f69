"""Spans <-> compact JSON, so spans waiting for the backend live on disk, not in RAM.

A span is written to the ledger's spool when its step (or run) is first seen finished and
deleted once the sink confirmed it. Encoding keeps everything that makes the span what
it is (ids, name, kind, times, attributes, events, links, status); the resource and scope
are the exporting process's, as a re-export from a new process may differ only there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from exporter.errors import StateError
from exporter.mapping.ids import format_span_id, format_trace_id, span_context


def encode_span(span: ReadableSpan) -> str:
    context = span.context
    if context is None:
        raise StateError(f"span {span.name!r} has no context")
    document: dict[str, Any] = {
        "n": span.name,
        "t": format_trace_id(context.trace_id),
        "s": format_span_id(context.span_id),
        "k": span.kind.value,
        "b": span.start_time,
        "e": span.end_time,
        "a": dict(span.attributes or {}),
    }
    if span.parent is not None:
        document["p"] = format_span_id(span.parent.span_id)
        if span.parent.is_remote:  # a caller's span (traceparent): OTLP flags say so
            document["pr"] = 1
    if span.events:
        document["ev"] = [[ev.name, ev.timestamp, dict(ev.attributes or {})] for ev in span.events]
    if span.links:
        document["l"] = [_encode_link(link) for link in span.links]
    if span.status.status_code is not StatusCode.UNSET:
        document["st"] = [span.status.status_code.value, span.status.description]
    # ASCII-only JSON: its length is its size in bytes (the export budget counts it), and
    # it never holds text SQLite cannot store.
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))


def decode_span(text: str, resource: Resource, scope: InstrumentationScope) -> ReadableSpan:
    try:
        document = json.loads(text)
        trace_id = int(document["t"], 16)
        parent = document.get("p")
        status = document.get("st")
        return ReadableSpan(
            name=document["n"],
            context=span_context(trace_id, int(document["s"], 16)),
            parent=_parent(trace_id, parent, bool(document.get("pr"))) if parent else None,
            resource=resource,
            attributes=_attributes(document.get("a")),
            events=[
                Event(name, _attributes(attrs), timestamp=at)
                for name, at, attrs in document.get("ev", ())
            ],
            links=[_decode_link(entry) for entry in document.get("l", ())],
            kind=SpanKind(document["k"]),
            status=Status(StatusCode(status[0]), status[1]) if status else Status(StatusCode.UNSET),
            start_time=document["b"],
            end_time=document["e"],
            instrumentation_scope=scope,
        )
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise StateError(f"a spooled span cannot be read back: {exc}") from exc


def _encode_link(link: Link) -> list[Any]:
    context = link.context
    entry: list[Any] = [
        format_trace_id(context.trace_id),
        format_span_id(context.span_id),
        dict(link.attributes or {}),
    ]
    if context.is_remote:  # a caller's span: keep what OTLP's link flags carry
        entry += [1, int(context.trace_flags)]
    return entry


def _decode_link(entry: list[Any]) -> Link:
    trace_id, span_id, attributes = int(entry[0], 16), int(entry[1], 16), entry[2]
    if len(entry) > 3 and entry[3]:
        context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(entry[4]))
    else:
        context = span_context(trace_id, span_id)
    return Link(context, _attributes(attributes))


def _parent(trace_id: int, span_id: str, remote: bool) -> SpanContext:
    if not remote:
        return span_context(trace_id, int(span_id, 16))
    return SpanContext(trace_id, int(span_id, 16), is_remote=True, trace_flags=TraceFlags(1))


def _attributes(raw: object) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        return {}
    # JSON gives lists for attribute sequences, which the SDK takes as they are.
    return {str(key): value for key, value in raw.items()}
