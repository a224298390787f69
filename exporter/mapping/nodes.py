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
from exporter.mapping.content import as_text
from exporter.mapping.genai import (
    Attributes,
    integration_attributes,
    integration_content,
    model_attributes,
    model_content,
)

Record = Mapping[str, object]
AttributeBuilder = Callable[[Record, Record], Attributes]
ContentBuilder = Callable[[object, object], Attributes]


def _no_attributes(inputs: Record, outputs: Record) -> Attributes:
    return {}


def generic_content(input_name: str, output_name: str) -> ContentBuilder:
    """Inputs and outputs kept whole, as JSON text, under our own names."""

    def build(inputs: object, outputs: object) -> Attributes:
        found: Attributes = {}
        if inputs is not None:
            found[input_name] = as_text(inputs)
        if outputs is not None:
            found[output_name] = as_text(outputs)
        return found

    return build


def _model_content(inputs: object, outputs: object) -> Attributes:
    return model_content(_as_mapping(inputs), _as_mapping(outputs))


def _integration_content(inputs: object, outputs: object) -> Attributes:
    return integration_content(_as_mapping(inputs), outputs)


@dataclass(frozen=True)
class NodeKind:
    """How steps of one node type are rendered as spans."""

    span_kind: SpanKind
    attributes: AttributeBuilder
    content: ContentBuilder


STEP_CONTENT: Final = generic_content(attr.STEP_INPUT, attr.STEP_OUTPUT)

# Model steps are calls to a model server: CLIENT spans, the GenAI `chat` operation.
MODEL: Final = NodeKind(SpanKind.CLIENT, model_attributes, _model_content)
# Integrations (Slack, CRMs, ...) are tools the workflow executes: `execute_tool`.
INTEGRATION: Final = NodeKind(
    SpanKind.INTERNAL, lambda inputs, _: integration_attributes(inputs), _integration_content
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


def _as_mapping(value: object) -> Record:
    return value if isinstance(value, Mapping) else {}
