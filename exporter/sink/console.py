"""Console sinks: readable trace trees for people, OTLP JSON lines for programs.

Both read the framed requests the OTLP sink sends, so they show what was delivered.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from typing import TextIO

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import StatusCode

from exporter.mapping import attributes as attr
from exporter.mapping.ids import format_trace_id
from exporter.mapping.otlp import SpanSpec, decode_span
from exporter.sink.encoding import TRACES, Signal, parse_request, request_to_dict
from exporter.textsafe import escape_control


class TreeSink:
    """Prints each trace as an indented tree: what would show up in Jaeger."""

    name = "console"

    MAX_REMEMBERED_TRACES = 1000

    def __init__(self, stream: TextIO | None = None, *, color: bool | None = None) -> None:
        self._stream = stream or sys.stdout
        self._color = self._stream.isatty() if color is None else color
        # Steps shown while their run was in flight, so the finished run's tree is whole.
        self._earlier: OrderedDict[int, list[SpanSpec]] = OrderedDict()

    def send(self, signal: Signal, request: bytes, count: int) -> bool:
        if signal == TRACES:
            self.show(spans_of(request))
        return True

    def show(self, spans: Sequence[SpanSpec]) -> None:
        for lines in render_traces(self._with_earlier_steps(spans), color=self._color):
            self._stream.write("\n".join(lines) + "\n\n")
        self._stream.flush()

    def _with_earlier_steps(self, spans: Sequence[SpanSpec]) -> list[SpanSpec]:
        finished = {s.context.trace_id for s in spans if _is_root(s)}
        shown = list(spans)
        for span in spans:
            trace_id = span.context.trace_id if span.context else 0
            if trace_id not in finished:
                self._earlier.setdefault(trace_id, []).append(span)
                self._earlier.move_to_end(trace_id)
        for trace_id in finished:
            shown.extend(self._earlier.pop(trace_id, []))
        while len(self._earlier) > self.MAX_REMEMBERED_TRACES:
            self._earlier.popitem(last=False)
        return shown

    def shutdown(self) -> None:
        self._stream.flush()


class OtlpJsonSink:
    """One OTLP JSON export request per line (the Collector's file format)."""

    name = "otlp-json"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def send(self, signal: Signal, request: bytes, count: int) -> bool:
        if count:
            document = request_to_dict(parse_request(signal, request))
            self._stream.write(json.dumps(document, ensure_ascii=False) + "\n")
            self._stream.flush()
        return True

    def shutdown(self) -> None:
        self._stream.flush()


def spans_of(request: bytes) -> list[SpanSpec]:
    """The spans of a framed ExportTraceServiceRequest."""
    message = ExportTraceServiceRequest()
    message.ParseFromString(request)
    return [
        decode_span(span)
        for resource in message.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


def render_traces(spans: Sequence[SpanSpec], *, color: bool = False) -> list[list[str]]:
    """One list of lines per trace, children indented under their parent."""
    by_trace: dict[int, list[SpanSpec]] = defaultdict(list)
    for span in spans:
        if span.context is not None:
            by_trace[span.context.trace_id].append(span)
    return [_render_trace(trace_id, group, color) for trace_id, group in by_trace.items()]


def _render_trace(trace_id: int, spans: list[SpanSpec], color: bool) -> list[str]:
    ids = {span.context.span_id for span in spans if span.context is not None}
    children: dict[int | None, list[SpanSpec]] = defaultdict(list)
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children[parent if parent in ids else None].append(span)
    for group in children.values():
        group.sort(key=lambda s: (s.start_time or 0, s.name))
    root = next((s for s in spans if _is_root(s)), None)
    origin = (root or min(spans, key=lambda s: s.start_time or 0)).start_time or 0
    workflow = (root.attributes or {}).get(attr.WORKFLOW_NAME) if root else None
    workflow = escape_control(workflow) if isinstance(workflow, str) else None
    header = f"trace {format_trace_id(trace_id)}"
    if root is None:
        header += f" (steps of a run still in flight{f': {workflow}' if workflow else ''})"
    lines = [header]

    def walk(span: SpanSpec, depth: int) -> None:
        lines.append("  " * (depth + 1) + _describe(span, origin, color))
        if span.context is not None:
            for child in children.get(span.context.span_id, []):
                walk(child, depth + 1)

    for top in children.get(None, []):
        walk(top, 0)
    return lines


def _is_root(span: SpanSpec) -> bool:
    # A run joined to its caller's trace has a remote parent: still the root of the run.
    return span.parent is None or span.parent.is_remote


def _describe(span: SpanSpec, origin: int, color: bool) -> str:
    """One line for a span; every text that came from the API is escaped."""
    attributes = span.attributes or {}
    duration_ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    offset_ms = ((span.start_time or 0) - origin) / 1e6
    failed = span.status.status_code is StatusCode.ERROR
    mark = "FAILED" if failed else "ok"
    if color:
        mark = f"\033[31m{mark}\033[0m" if failed else f"\033[32m{mark}\033[0m"
    details = [str(attributes[key]) for key in (attr.NODE_TYPE,) if key in attributes]
    if attr.GEN_AI_REQUEST_MODEL in attributes:
        details.append(str(attributes[attr.GEN_AI_REQUEST_MODEL]))
    if attr.GEN_AI_USAGE_INPUT_TOKENS in attributes:
        details.append(
            f"tokens {attributes[attr.GEN_AI_USAGE_INPUT_TOKENS]!s}"
            f"/{attributes.get(attr.GEN_AI_USAGE_OUTPUT_TOKENS, '?')!s}"
        )
    if attr.GEN_AI_TOOL_NAME in attributes:
        details.append(str(attributes[attr.GEN_AI_TOOL_NAME]))
    details.extend(_time_and_money(attributes))
    name = escape_control(span.name)
    text = f"{name}  {_format_ms(duration_ms)} at +{_format_ms(offset_ms)}  {mark}"
    if details:
        text += "  [" + escape_control(", ".join(details)) + "]"
    if failed and span.status.description:
        text += f"  -- {escape_control(span.status.description)}"
    return text


def _time_and_money(attributes: Mapping[str, object]) -> list[str]:
    """Where the time went and what it cost: the wait before a step, a run's overhead."""
    found = []
    for key, label in ((attr.STEP_WAIT, "waited"), (attr.RUN_OVERHEAD, "overhead")):
        seconds = attributes.get(key)
        if isinstance(seconds, (int, float)):
            found.append(f"{label} {_format_ms(seconds * 1000)}")
    cost = attributes.get(attr.COST_TOTAL)
    if isinstance(cost, (int, float)):
        found.append(f"cost {cost:.6f} {attributes.get(attr.COST_CURRENCY, '')}".rstrip())
    return found


def _format_ms(value: float) -> str:
    return f"{value / 1000:.2f}s" if value >= 1000 else f"{value:.0f}ms"
