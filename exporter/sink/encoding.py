"""Export requests framed around spooled OTLP bytes, and OTLP JSON (encoding only).

A span (or log record) is serialised once, when it is mapped; an export request is the
repeated fields around those bytes, joined without decoding them: ExportTraceServiceRequest
= ResourceSpans{resource, ScopeSpans{scope, spans..., schema_url}}, and the same for logs.
Protobuf writes the fields of a message in field-number order, so the request is byte for
byte what the SDK would build from the same spans (tests/unit/test_encoding.py).

OTLP JSON differs from protobuf's generic JSON mapping in one way that matters: trace
and span ids are hex strings, not base64 (OTLP specification, "JSON Protobuf Encoding").
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope as PbScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporter.mapping.otlp import SpanSpec, encode_attributes, length_delimited

Signal = Literal["traces", "logs"]
TRACES: Final = "traces"
LOGS: Final = "logs"
_ID_KEYS: Final = frozenset({"traceId", "spanId", "parentSpanId"})


@dataclass(frozen=True)
class Framer:
    """The resource and scope of this process, encoded once, around any batch."""

    resource_bytes: bytes
    scope_bytes: bytes
    schema_url: str
    resource_schema_url: str = ""

    @classmethod
    def of(cls, resource: Resource, scope: InstrumentationScope) -> Framer:
        # The SDK's attribute types are wider than ours; resource values are ours or OTel's.
        encoded_resource = PbResource(attributes=encode_attributes(cast(Any, resource.attributes)))
        encoded_scope = PbScope(
            name=scope.name,
            version=scope.version or "",
            attributes=encode_attributes(cast(Any, scope.attributes or {})),
        )
        return cls(
            encoded_resource.SerializeToString(),
            encoded_scope.SerializeToString(),
            scope.schema_url or "",
            resource.schema_url or "",
        )

    def request(self, payloads: Sequence[bytes]) -> bytes:
        """ExportTraceServiceRequest or ExportLogsServiceRequest (the same layout) bytes.

        Spans are field 2 of ScopeSpans, log records field 2 of ScopeLogs; the scope is
        field 1 and the schema URL field 3 of both, as in ResourceSpans / ResourceLogs.
        """
        if not payloads:
            return b""
        scoped = length_delimited(1, self.scope_bytes) + b"".join(
            length_delimited(2, p) for p in payloads
        )
        if self.schema_url:
            scoped += length_delimited(3, self.schema_url.encode())
        resource = length_delimited(1, self.resource_bytes) + length_delimited(2, scoped)
        if self.resource_schema_url:
            resource += length_delimited(3, self.resource_schema_url.encode())
        return length_delimited(1, resource)


def span_request(framer: Framer, spans: Sequence[SpanSpec]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(framer.request([span.serialize() for span in spans]))
    return request


def to_otlp_dict(framer: Framer, spans: Sequence[SpanSpec]) -> dict[str, Any]:
    return request_to_dict(span_request(framer, spans))


def to_otlp_json(framer: Framer, spans: Sequence[SpanSpec], *, indent: int | None = None) -> str:
    return json.dumps(to_otlp_dict(framer, spans), indent=indent, ensure_ascii=False)


Request = ExportTraceServiceRequest | ExportLogsServiceRequest


def request_to_dict(request: Request) -> dict[str, Any]:
    document: dict[str, Any] = MessageToDict(request, preserving_proto_field_name=False)
    _hex_ids(document)
    return document


def parse_request(signal: Signal, payload: bytes) -> Request:
    message: Request = (
        ExportTraceServiceRequest() if signal == TRACES else ExportLogsServiceRequest()
    )
    message.ParseFromString(payload)
    return message


def _hex_ids(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)
