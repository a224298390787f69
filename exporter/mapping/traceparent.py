"""A caller's W3C traceparent found in a run's inputs: the run joins the caller's trace.

Services start runs through Orchestra's execute endpoint with input variables; one of
them (ORCHESTRA_TRACEPARENT_INPUT, default `traceparent`) may carry the caller's span
context. The root then links to that span, or, in `parent` mode, becomes its child, and
the whole run moves into the caller's trace (docs/design.md, "Callers' traces").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from opentelemetry.trace import SpanContext, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_MAX_LENGTH: Final = 512  # a traceparent is 55 characters; anything far longer is not one


@dataclass(frozen=True)
class CallerContext:
    """The caller's span context, or why the input could not be used (`problem`)."""

    context: SpanContext | None
    problem: str | None = None


NO_CALLER: Final = CallerContext(None)


def caller_context(inputs: object, key: str) -> CallerContext:
    if not key or not isinstance(inputs, Mapping) or key not in inputs:
        return NO_CALLER
    value = inputs[key]
    if not isinstance(value, str) or len(value) > _MAX_LENGTH:
        return CallerContext(None, f"inputs.{key} is not a W3C traceparent (ignored)")
    extracted = TraceContextTextMapPropagator().extract({"traceparent": value.strip()})
    context = get_current_span(extracted).get_span_context()
    if not context.is_valid:
        return CallerContext(None, f"inputs.{key} is not a W3C traceparent (ignored)")
    return CallerContext(context)
