"""Failures as OTLP log records, tied to their spans. Pure.

Every failed step and failed run is also an ERROR log record with the span's trace and
span ids, stamped at the step's (or run's) end, its error message as the body, and the
workflow, run, node and `error.type` as attributes (with content capture on, the step's
content too). Grafana (Loki to Tempo), Elastic and Datadog link such a log to its trace.

With OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN=logs an exception is recorded on the log
record (`exception.*` attributes, the v1.44 conventions' "log-exception") instead of as a
span event; with `logs/dup`, in both places (docs/design.md, "Failures as logs").
"""

from __future__ import annotations

from typing import Final, Literal

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from exporter.mapping import attributes as attr
from exporter.mapping.content import truncate
from exporter.mapping.failure import Failure
from exporter.mapping.genai import Attributes
from exporter.mapping.otlp import SpanSpec, make_log_record

ExceptionSignal = Literal["spans", "logs", "logs/dup"]

# The span attributes a failure log carries: what a log search filters by.
_FROM_SPAN: Final = (
    attr.WORKFLOW_ID,
    attr.WORKFLOW_NAME,
    attr.RUN_ID,
    attr.STEP_ID,
    attr.NODE_ID,
    attr.NODE_TYPE,
    attr.GEN_AI_OPERATION_NAME,
    attr.ERROR_TYPE,
)
# ... and with content capture on, the content it holds.
_CONTENT: Final = (
    attr.GEN_AI_INPUT_MESSAGES,
    attr.GEN_AI_OUTPUT_MESSAGES,
    attr.GEN_AI_TOOL_CALL_ARGUMENTS,
    attr.GEN_AI_TOOL_CALL_RESULT,
    attr.STEP_INPUT,
    attr.STEP_OUTPUT,
    attr.RUN_INPUT,
    attr.RUN_OUTPUT,
)


def exception_events_on_spans(signal: ExceptionSignal) -> bool:
    return signal != "logs"


def failure_log(
    span: SpanSpec, failure: Failure, signal: ExceptionSignal, max_length: int
) -> LogRecord:
    """The ERROR log record of a failed span (its attributes are already bounded)."""
    attributes: Attributes = {
        name: span.attributes[name] for name in (*_FROM_SPAN, *_CONTENT) if name in span.attributes
    }
    if signal != "spans" and failure.is_exception:
        attributes[attr.EXCEPTION_MESSAGE] = truncate(failure.message, max_length)
        if failure.exception_type is not None:
            attributes[attr.EXCEPTION_TYPE] = failure.exception_type
        if failure.stacktrace:
            attributes[attr.EXCEPTION_STACKTRACE] = truncate(failure.stacktrace, max_length)
    return make_log_record(
        trace_id=span.context.trace_id,
        span_id=span.context.span_id,
        time_ns=span.end_time,
        body=span.status.description or failure.message[:max_length],
        attributes=attributes,
    )
