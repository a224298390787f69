"""The node-type registry: what each kind of Orchestra node becomes as a span.

One entry per node type gives its span kind, its GenAI operation, the builder of its
attributes and the builder of its opt-in content. Adding a node type is one entry here
(plus a golden file); spans.py never branches on a type name. The trace contract behind
these choices is docs/design.md, "Trace shape".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from opentelemetry.trace import SpanKind

from exporter.mapping import attributes as attr
from exporter.mapping.content import fitted_text
from exporter.mapping.genai import (
    Attributes,
    integration_attributes,
    integration_content,
    model_attributes,
    model_content,
)
from exporter.mapping.options import MappingOptions

Record = Mapping[str, object]
# (inputs, outputs, options) -> attributes; (raw inputs, raw outputs, options) -> content.
AttributeBuilder = Callable[[Record, Record, MappingOptions], Attributes]
ContentBuilder = Callable[[object, object, MappingOptions], Attributes]
# The semantic conventions' span name from the span's attributes, or None: keep node id.
Namer = Callable[[Attributes], "str | None"]


def _no_attributes(inputs: Record, outputs: Record, options: MappingOptions) -> Attributes:
    return {}


def _no_name(attributes: Attributes) -> str | None:
    return None


def generic_content(input_name: str, output_name: str) -> ContentBuilder:
    """Inputs and outputs as JSON text (plain text stays text), under our own names."""

    def build(inputs: object, outputs: object, options: MappingOptions) -> Attributes:
        found: Attributes = {}
        limit = options.content_max_length
        if inputs is not None:
            found[input_name] = fitted_text(inputs, limit)
        if outputs is not None:
            found[output_name] = fitted_text(outputs, limit)
        return found

    return build


def semconv_name(operation: str, subject_attribute: str) -> Namer:
    """`{operation} {subject}`, or the operation alone when the subject is unknown."""

    def name(attributes: Attributes) -> str:
        subject = attributes.get(subject_attribute)
        return f"{operation} {subject}" if isinstance(subject, str) and subject else operation

    return name


def _model_attributes(inputs: Record, outputs: Record, options: MappingOptions) -> Attributes:
    return model_attributes(inputs, outputs, options.genai_provider)


def _model_content(inputs: object, outputs: object, options: MappingOptions) -> Attributes:
    return model_content(as_mapping(inputs), as_mapping(outputs), options.content_max_length)


def _integration_attributes(inputs: Record, outputs: Record, options: MappingOptions) -> Attributes:
    return integration_attributes(inputs)


def _integration_content(inputs: object, outputs: object, options: MappingOptions) -> Attributes:
    return integration_content(as_mapping(inputs), outputs, options.content_max_length)


@dataclass(frozen=True)
class NodeKind:
    """How steps of one node type are rendered as spans."""

    span_kind: SpanKind
    attributes: AttributeBuilder
    content: ContentBuilder
    semconv_name: Namer = _no_name


STEP_CONTENT: Final = generic_content(attr.STEP_INPUT, attr.STEP_OUTPUT)

# Model steps are calls to a model server: CLIENT spans, the GenAI `chat` operation.
MODEL: Final = NodeKind(
    SpanKind.CLIENT,
    _model_attributes,
    _model_content,
    semconv_name(attr.OP_CHAT, attr.GEN_AI_REQUEST_MODEL),
)
# Integrations (Slack, CRMs, ...) are tools the workflow executes: `execute_tool`.
INTEGRATION: Final = NodeKind(
    SpanKind.INTERNAL,
    _integration_attributes,
    _integration_content,
    semconv_name(attr.OP_EXECUTE_TOOL, attr.GEN_AI_TOOL_NAME),
)
# Code, retrieval, conditions and types we do not know: our own names only.
GENERIC: Final = NodeKind(SpanKind.INTERNAL, _no_attributes, STEP_CONTENT)

# Node types with a rendering of their own; every other type is GENERIC.
REGISTRY: Final[Mapping[str, NodeKind]] = {
    attr.NODE_TYPE_MODEL: MODEL,
    attr.NODE_TYPE_INTEGRATION: INTEGRATION,
}


def node_kind(node_type: str, inputs: Record) -> NodeKind:
    """The registry entry of a node type; a step that calls an app is a tool all the same."""
    kind = REGISTRY.get(node_type)
    if kind is not None:
        return kind
    return INTEGRATION if "app_name" in inputs else GENERIC


def infer_node_type(inputs: Record, outputs: Record) -> str:
    """docs/design.md: model, integration, code or unknown, from what the record carries."""
    if outputs.get("object") == "chat.completion" or ("model" in inputs and "messages" in inputs):
        return attr.NODE_TYPE_MODEL
    if "app_name" in inputs:
        return attr.NODE_TYPE_INTEGRATION
    data = outputs.get("data")
    if isinstance(data, Mapping) and "sandbox_id" in data:
        return attr.NODE_TYPE_CODE
    return attr.NODE_TYPE_UNKNOWN


def as_mapping(value: object) -> Record:
    """The value when it is a JSON object, else an empty one: records are untrusted."""
    return value if isinstance(value, Mapping) else {}
