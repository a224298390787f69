"""What the mapping is told by the settings: pure data, no defaults read from anywhere else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporter.mapping import attributes as attr
from exporter.mapping.cost import PriceTable
from exporter.mapping.logs import ExceptionSignal

SpanNames = Literal["node", "semconv"]
TraceparentMode = Literal["link", "parent"]
DEFAULT_PROVIDER: Final = "arcee"


def default_scope(version: str | None = None) -> InstrumentationScope:
    return InstrumentationScope(attr.SCOPE_NAME, version, attr.SCHEMA_URL)


@dataclass(frozen=True)
class MappingOptions:
    resource: Resource = field(default_factory=Resource.get_empty)
    scope: InstrumentationScope = field(default_factory=default_scope)
    capture_content: bool = False
    content_max_length: int = 2048
    openinference: bool = False  # also write OpenInference names (Arize Phoenix)
    # gen_ai.provider.name on model spans: Orchestra serves Arcee's models itself.
    genai_provider: str = DEFAULT_PROVIDER
    # node: spans named by node id (what a workflow author recognises); semconv: the
    # GenAI conventions' names (chat {model}, execute_tool {tool}, invoke_workflow {name}).
    span_names: SpanNames = "node"
    # The run input holding a caller's W3C traceparent, and what the root does with it.
    traceparent_input: str = "traceparent"
    traceparent_mode: TraceparentMode = "link"
    prices: PriceTable | None = None  # ORCHESTRA_PRICES: no table, no cost
    wait_spans: bool = False  # ORCHESTRA_WAIT_SPANS
    # OTEL_LOGS_EXPORTER: failed steps and runs also as OTLP log records.
    failure_logs: bool = False
    # OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN: exceptions as span events, logs, or both.
    exception_signal: ExceptionSignal = "spans"
