"""Console sinks: readable trace trees for people, OTLP JSON lines for programs."""

from __future__ import annotations

import sys
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from typing import TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from exporter.mapping import attributes as attr
from exporter.mapping.ids import format_trace_id
from exporter.sink.encoding import to_otlp_json
from exporter.textsafe import escape_control


class TreeSink:
    """Prints each trace as an indented tree: what would show up in Jaeger."""

    name = "console"

    MAX_REMEMBERED_TRACES = 1000

    def __init__(self, stream: TextIO | None = None, *, color: bool | None = None) -> None:
        self._stream = stream or sys.stdout
        self._color = self._stream.isatty() if color is None else color
        # Steps shown while their run was in flight, so the finished run's tree is whole.
        self._earlier: OrderedDict[int, list[ReadableSpan]] = OrderedDict()

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        for lines in render_traces(self._with_earlier_steps(spans), color=self._color):
            self._stream.write("\n".join(lines) + "\n\n")
        self._stream.flush()
        return True

    def _with_earlier_steps(self, spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
        finished = {s.context.trace_id for s in spans if s.parent is None and s.context}
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
    """One OTLP JSON ExportTraceServiceRequest per line (the Collector's file format)."""

    name = "otlp-json"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        if spans:
            self._stream.write(to_otlp_json(spans) + "\n")
            self._stream.flush()
        return True

    def shutdown(self) -> None:
        self._stream.flush()


def render_traces(spans: Sequence[ReadableSpan], *, color: bool = False) -> list[list[str]]:
    """One list of lines per trace, children indented under their parent."""
    by_trace: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        if span.context is not None:
            by_trace[span.context.trace_id].append(span)
    return [_render_trace(trace_id, group, color) for trace_id, group in by_trace.items()]


def _render_trace(trace_id: int, spans: list[ReadableSpan], color: bool) -> list[str]:
    ids = {span.context.span_id for span in spans if span.context is not None}
    children: dict[int | None, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children[parent if parent in ids else None].append(span)
    for group in children.values():
        group.sort(key=lambda s: (s.start_time or 0, s.name))
    root = next((s for s in spans if s.parent is None), None)
    origin = (root or min(spans, key=lambda s: s.start_time or 0)).start_time or 0
    workflow = (root.attributes or {}).get(attr.WORKFLOW_NAME) if root else None
    workflow = escape_control(workflow) if isinstance(workflow, str) else None
    header = f"trace {format_trace_id(trace_id)}"
    if root is None:
        header += f" (steps of a run still in flight{f': {workflow}' if workflow else ''})"
    lines = [header]

    def walk(span: ReadableSpan, depth: int) -> None:
        lines.append("  " * (depth + 1) + _describe(span, origin, color))
        if span.context is not None:
            for child in children.get(span.context.span_id, []):
                walk(child, depth + 1)

    for top in children.get(None, []):
        walk(top, 0)
    return lines


def _describe(span: ReadableSpan, origin: int, color: bool) -> str:
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
    name = escape_control(span.name)
    text = f"{name}  {_format_ms(duration_ms)} at +{_format_ms(offset_ms)}  {mark}"
    if details:
        text += "  [" + escape_control(", ".join(details)) + "]"
    if failed and span.status.description:
        text += f"  -- {escape_control(span.status.description)}"
    return text


def _format_ms(value: float) -> str:
    return f"{value / 1000:.2f}s" if value >= 1000 else f"{value:.0f}ms"
