"""Spans -> OTLP protobuf and OTLP JSON (encoding only; transport lives elsewhere).

OTLP JSON differs from protobuf's generic JSON mapping in one way that matters: trace
and span ids are hex strings, not base64 (OTLP specification, "JSON Protobuf Encoding").
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, Final

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan

_ID_KEYS: Final = frozenset({"traceId", "spanId", "parentSpanId"})


def to_protobuf(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    request: ExportTraceServiceRequest = encode_spans(spans)
    return request


def to_otlp_dict(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    document: dict[str, Any] = MessageToDict(to_protobuf(spans), preserving_proto_field_name=False)
    _hex_ids(document)
    return document


def to_otlp_json(spans: Sequence[ReadableSpan], *, indent: int | None = None) -> str:
    return json.dumps(to_otlp_dict(spans), indent=indent, ensure_ascii=False)


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
