"""OTLP protobuf messages built directly from the mapping's values. Pure.

The mapping writes each span (and each failure's log record) once, as the OTLP message
it is sent as; the spool keeps its serialised bytes and export requests are framed
around them without decoding (docs/design.md, "Delivery"). The encoding follows the
OpenTelemetry Python SDK's OTLP encoder field for field, so a span is byte for byte what
the SDK would have sent (tests/golden checks it).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from exporter.mapping.genai import Attributes, AttributeValue

_STATUS_CODES: Final = {
    StatusCode.UNSET: PbStatus.STATUS_CODE_UNSET,
    StatusCode.OK: PbStatus.STATUS_CODE_OK,
    StatusCode.ERROR: PbStatus.STATUS_CODE_ERROR,
}
# The SDK's encoder marks every span (and link) as saying whether its parent is remote.
_HAS_IS_REMOTE: Final = 0x100
_IS_REMOTE: Final = 0x200
_ATTRIBUTES_FIELD: Final = 9  # Span.attributes
# Longer texts (captured content) are rarely repeated: caching them would only hold memory.
_CACHED_TEXT_MAX: Final = 256
_KINDS: Final = {
    SpanKind.INTERNAL: Span.SpanKind.SPAN_KIND_INTERNAL,
    SpanKind.SERVER: Span.SpanKind.SPAN_KIND_SERVER,
    SpanKind.CLIENT: Span.SpanKind.SPAN_KIND_CLIENT,
    SpanKind.PRODUCER: Span.SpanKind.SPAN_KIND_PRODUCER,
    SpanKind.CONSUMER: Span.SpanKind.SPAN_KIND_CONSUMER,
}


@dataclass(frozen=True)
class EventSpec:
    name: str
    timestamp: int
    attributes: Attributes


@dataclass(frozen=True)
class LinkSpec:
    context: SpanContext
    attributes: Attributes


@dataclass(frozen=True)
class SpanSpec:
    """One span as the mapping decided it; `encode` gives the OTLP message sent."""

    name: str
    context: SpanContext
    parent: SpanContext | None
    kind: SpanKind
    start_time: int
    end_time: int
    attributes: Attributes
    events: tuple[EventSpec, ...] = ()
    links: tuple[LinkSpec, ...] = ()
    status: Status = field(default_factory=Status)

    @property
    def failed(self) -> bool:
        return self.status.status_code is StatusCode.ERROR

    def encode(self) -> Span:
        """The OTLP message (for readers: console, JSON, tests). The spool uses serialize."""
        span = Span()
        span.ParseFromString(self.serialize())
        return span

    def serialize(self) -> bytes:
        """The Span message's bytes, as `Span(...).SerializeToString()` would write them.

        Built in three parts in field-number order (fields 1-8, the attributes (9), then
        events, links, status and flags (11-16)), which is the order protobuf writes, so
        the bytes are the same. The attribute part is the hot one: most attribute values
        repeat from span to span (workflow, node, model, status), and their encoded form
        comes from a cache instead of two protobuf objects each.
        """
        head = Span(
            trace_id=self.context.trace_id.to_bytes(16, "big"),
            span_id=self.context.span_id.to_bytes(8, "big"),
            parent_span_id=(
                self.parent.span_id.to_bytes(8, "big") if self.parent is not None else b""
            ),
            name=self.name,
            kind=_KINDS[self.kind],
            start_time_unix_nano=self.start_time,
            end_time_unix_nano=self.end_time,
        )
        tail = Span(
            events=[
                Span.Event(
                    name=event.name,
                    time_unix_nano=event.timestamp,
                    attributes=encode_attributes(event.attributes),
                )
                for event in self.events
            ],
            links=[
                Span.Link(
                    trace_id=link.context.trace_id.to_bytes(16, "big"),
                    span_id=link.context.span_id.to_bytes(8, "big"),
                    attributes=encode_attributes(link.attributes),
                    flags=_flags(link.context),
                )
                for link in self.links
            ],
            status=PbStatus(
                code=_STATUS_CODES[self.status.status_code], message=self.status.description or ""
            ),
            flags=_flags(self.parent),
        )
        attributes = b"".join(
            [_attribute_field(key, value) for key, value in self.attributes.items()]
        )
        fields_1_to_8: bytes = head.SerializeToString()
        fields_11_to_16: bytes = tail.SerializeToString()
        return fields_1_to_8 + attributes + fields_11_to_16


def make_log_record(
    *,
    trace_id: int,
    span_id: int,
    time_ns: int,
    body: str,
    attributes: Attributes,
    event_name: str = "",
) -> LogRecord:
    """An ERROR log record tied to its span: the trace and span ids, flags sampled."""
    return LogRecord(
        time_unix_nano=time_ns,
        observed_time_unix_nano=time_ns,
        severity_number=SeverityNumber.SEVERITY_NUMBER_ERROR,
        severity_text="ERROR",
        body=AnyValue(string_value=body),
        attributes=encode_attributes(attributes),
        flags=1,
        trace_id=trace_id.to_bytes(16, "big"),
        span_id=span_id.to_bytes(8, "big"),
        event_name=event_name,
    )


def encode_attributes(attributes: Mapping[str, AttributeValue]) -> list[KeyValue]:
    return [KeyValue(key=key, value=encode_value(value)) for key, value in attributes.items()]


def encode_value(value: AttributeValue) -> AnyValue:
    # bool before int: True is an int to Python, a boolean to OTLP.
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(array_value=ArrayValue(values=[encode_value(item) for item in value]))


def _attribute_field(key: str, value: AttributeValue) -> bytes:
    """Span field 9 (one KeyValue of `attributes`), encoded."""
    if isinstance(value, (str, bool, int, float)) and (
        not isinstance(value, str) or len(value) <= _CACHED_TEXT_MAX
    ):
        return _cached_attribute_field(key, value, type(value).__name__)
    return length_delimited(_ATTRIBUTES_FIELD, _key_value_bytes(key, value))


@functools.lru_cache(maxsize=8192)
def _cached_attribute_field(key: str, value: AttributeValue, kind: str) -> bytes:
    # `kind` is part of the key because True == 1 and 1 == 1.0 to a dict, not to OTLP.
    return length_delimited(_ATTRIBUTES_FIELD, _key_value_bytes(key, value))


def _key_value_bytes(key: str, value: AttributeValue) -> bytes:
    encoded: bytes = KeyValue(key=key, value=encode_value(value)).SerializeToString()
    return encoded


def length_delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: its tag, the payload's length, the payload."""
    return bytes([number << 3 | 2]) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _flags(parent: SpanContext | None) -> int:
    return _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)


# --- reading back (the demo's trees, tests) ---------------------------------------------

_SPAN_KINDS: Final = {value: kind for kind, value in _KINDS.items()}
_STATUS_OF: Final = {value: code for code, value in _STATUS_CODES.items()}


def decode_span(span: Span) -> SpanSpec:
    """The SpanSpec an OTLP span was encoded from (ids, times, attributes, status, ...)."""
    trace_id = int.from_bytes(span.trace_id, "big")
    parent = None
    if span.parent_span_id:
        remote = bool(span.flags & _IS_REMOTE)
        parent = _context(trace_id, int.from_bytes(span.parent_span_id, "big"), remote)
    return SpanSpec(
        name=span.name,
        context=_context(trace_id, int.from_bytes(span.span_id, "big"), False),
        parent=parent,
        kind=_SPAN_KINDS[span.kind],
        start_time=span.start_time_unix_nano,
        end_time=span.end_time_unix_nano,
        attributes=decode_attributes(span.attributes),
        events=tuple(
            EventSpec(e.name, e.time_unix_nano, decode_attributes(e.attributes))
            for e in span.events
        ),
        links=tuple(
            LinkSpec(
                _context(
                    int.from_bytes(link.trace_id, "big"),
                    int.from_bytes(link.span_id, "big"),
                    bool(link.flags & _IS_REMOTE),
                ),
                decode_attributes(link.attributes),
            )
            for link in span.links
        ),
        status=Status(_STATUS_OF[span.status.code], span.status.message or None),
    )


def decode_attributes(attributes: Sequence[KeyValue]) -> Attributes:
    return {item.key: decode_value(item.value) for item in attributes}


def decode_value(value: AnyValue) -> AttributeValue:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [decode_value(item) for item in value.array_value.values]  # type: ignore[misc]
    found: AttributeValue = getattr(value, kind) if kind else ""
    return found


def _context(trace_id: int, span_id: int, remote: bool) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(1))
