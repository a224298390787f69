"""What the OpenTelemetry semantic conventions say about the names orchestra-otel writes.

Two sources of the same facts: the conventions' own data files in ../shared/semconv
(GenAI from tag v1.41.1, error.* and exception.* from v1.44.0), read when they are there
(CI always has them), and TABLE below, written out from those files, used when they are
not. test_facts_table_agrees_with_the_registry keeps the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

GENAI_VERSION: Final = "v1.41.1"
ERRORS_VERSION: Final = "v1.44.0"
SEMCONV: Final = Path(__file__).resolve().parents[3] / "shared" / "semconv"


@dataclass(frozen=True)
class AttributeFact:
    type: str  # string, int, double, boolean, string[], any, or enum
    members: frozenset[str] = frozenset()  # for enums (open: custom values are allowed)
    deprecated: bool = False


@dataclass(frozen=True)
class SpanFact:
    span_kind: str
    required: frozenset[str]
    allowed: frozenset[str]  # every attribute the span definition names


@dataclass(frozen=True)
class MetricFact:
    unit: str
    instrument: str
    required: frozenset[str]
    allowed: frozenset[str]
    # The explicit bucket advice of gen-ai-metrics.md (prose, not in the YAML files).
    buckets: tuple[float, ...] = ()


@dataclass(frozen=True)
class Facts:
    source: str
    attributes: Mapping[str, AttributeFact]
    spans: Mapping[str, SpanFact]  # by gen_ai.operation.name
    metrics: Mapping[str, MetricFact]
    exception_event: frozenset[str] = field(default_factory=frozenset)


# The span definition of each operation we write.
SPAN_GROUPS: Final = {
    "chat": "span.gen_ai.inference.client",
    "execute_tool": "span.gen_ai.execute_tool.internal",
    "invoke_workflow": "span.gen_ai.invoke_workflow.internal",
}
METRIC_NAMES: Final = ("gen_ai.client.token.usage", "gen_ai.client.operation.duration")
TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

_METRIC_ATTRIBUTES: Final = frozenset(
    {"server.address", "server.port", "gen_ai.response.model", "gen_ai.request.model",
     "gen_ai.provider.name", "gen_ai.operation.name"}
)  # fmt: skip

# Written out from the registry files (GENAI_VERSION, ERRORS_VERSION): only the attributes
# orchestra-otel writes, plus the deprecated one it must not write.
TABLE: Final = Facts(
    source=f"committed table ({GENAI_VERSION} GenAI, {ERRORS_VERSION} error/exception)",
    attributes={
        "error.type": AttributeFact("enum", frozenset({"_OTHER"})),
        "exception.message": AttributeFact("string"),
        "exception.stacktrace": AttributeFact("string"),
        "exception.type": AttributeFact("string"),
        "gen_ai.input.messages": AttributeFact("any"),
        "gen_ai.operation.name": AttributeFact(
            "enum",
            frozenset(
                {
                    "chat",
                    "generate_content",
                    "text_completion",
                    "embeddings",
                    "retrieval",
                    "create_agent",
                    "invoke_agent",
                    "execute_tool",
                    "invoke_workflow",
                }
            ),
        ),
        "gen_ai.output.messages": AttributeFact("any"),
        "gen_ai.provider.name": AttributeFact(
            "enum",
            frozenset(
                {
                    "openai",
                    "gcp.gen_ai",
                    "gcp.vertex_ai",
                    "gcp.gemini",
                    "anthropic",
                    "cohere",
                    "azure.ai.inference",
                    "azure.ai.openai",
                    "ibm.watsonx.ai",
                    "aws.bedrock",
                    "perplexity",
                    "x_ai",
                    "deepseek",
                    "groq",
                    "mistral_ai",
                }
            ),
        ),
        "gen_ai.request.max_tokens": AttributeFact("int"),
        "gen_ai.request.model": AttributeFact("string"),
        "gen_ai.request.stream": AttributeFact("boolean"),
        "gen_ai.request.temperature": AttributeFact("double"),
        "gen_ai.request.top_k": AttributeFact("double"),
        "gen_ai.request.top_p": AttributeFact("double"),
        "gen_ai.response.finish_reasons": AttributeFact("string[]"),
        "gen_ai.response.id": AttributeFact("string"),
        "gen_ai.response.model": AttributeFact("string"),
        "gen_ai.system": AttributeFact("enum", deprecated=True),
        "gen_ai.token.type": AttributeFact("enum", frozenset({"input", "output"})),
        "gen_ai.tool.call.arguments": AttributeFact("any"),
        "gen_ai.tool.call.result": AttributeFact("any"),
        "gen_ai.tool.name": AttributeFact("string"),
        "gen_ai.tool.type": AttributeFact("string"),
        "gen_ai.usage.cache_read.input_tokens": AttributeFact("int"),
        "gen_ai.usage.input_tokens": AttributeFact("int"),
        "gen_ai.usage.output_tokens": AttributeFact("int"),
        "gen_ai.usage.reasoning.output_tokens": AttributeFact("int"),
        "gen_ai.workflow.name": AttributeFact("string"),
    },
    spans={
        "chat": SpanFact(
            "client",
            frozenset({"gen_ai.operation.name", "gen_ai.provider.name"}),
            frozenset(
                {
                    "gen_ai.provider.name",
                    "gen_ai.operation.name",
                    "server.address",
                    "server.port",
                    "gen_ai.request.model",
                    "gen_ai.request.top_k",
                    "gen_ai.request.max_tokens",
                    "gen_ai.request.choice.count",
                    "gen_ai.request.temperature",
                    "gen_ai.request.top_p",
                    "gen_ai.request.stop_sequences",
                    "gen_ai.request.frequency_penalty",
                    "gen_ai.request.presence_penalty",
                    "gen_ai.request.seed",
                    "gen_ai.request.stream",
                    "gen_ai.output.type",
                    "gen_ai.response.id",
                    "gen_ai.response.model",
                    "gen_ai.response.finish_reasons",
                    "gen_ai.response.time_to_first_chunk",
                    "gen_ai.usage.input_tokens",
                    "gen_ai.usage.cache_read.input_tokens",
                    "gen_ai.usage.cache_creation.input_tokens",
                    "gen_ai.usage.output_tokens",
                    "gen_ai.usage.reasoning.output_tokens",
                    "gen_ai.conversation.id",
                    "gen_ai.system_instructions",
                    "gen_ai.input.messages",
                    "gen_ai.output.messages",
                    "gen_ai.tool.definitions",
                    "error.type",
                }
            ),
        ),
        "execute_tool": SpanFact(
            "internal",
            frozenset({"gen_ai.operation.name", "gen_ai.tool.name"}),
            frozenset(
                {
                    "gen_ai.operation.name",
                    "gen_ai.tool.name",
                    "gen_ai.tool.call.id",
                    "gen_ai.tool.description",
                    "gen_ai.tool.type",
                    "gen_ai.tool.call.arguments",
                    "gen_ai.tool.call.result",
                    "error.type",
                }
            ),
        ),
        "invoke_workflow": SpanFact(
            "internal",
            frozenset({"gen_ai.operation.name"}),
            frozenset(
                {
                    "gen_ai.operation.name",
                    "error.type",
                    "gen_ai.workflow.name",
                    "gen_ai.input.messages",
                    "gen_ai.output.messages",
                }
            ),
        ),
    },
    metrics={
        "gen_ai.client.token.usage": MetricFact(
            "{token}",
            "histogram",
            frozenset({"gen_ai.provider.name", "gen_ai.operation.name", "gen_ai.token.type"}),
            _METRIC_ATTRIBUTES | {"gen_ai.token.type"},
            TOKEN_BUCKETS,
        ),
        "gen_ai.client.operation.duration": MetricFact(
            "s",
            "histogram",
            frozenset({"gen_ai.provider.name", "gen_ai.operation.name"}),
            _METRIC_ATTRIBUTES | {"error.type"},
            DURATION_BUCKETS,
        ),
    },
    exception_event=frozenset(
        {"exception.type", "exception.message", "exception.stacktrace", "exception.escaped"}
    ),
)


def registry_present() -> bool:
    return (SEMCONV / GENAI_VERSION / "model" / "gen-ai" / "registry.yaml").is_file()


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def facts() -> Facts:
    """The registry's facts when its files are beside the repository, else the table."""
    return load_registry() if registry_present() else TABLE


# --- reading the registry files ---------------------------------------------------------


def load_registry() -> Facts:
    genai = SEMCONV / GENAI_VERSION / "model" / "gen-ai"
    errors = SEMCONV / ERRORS_VERSION / "model"
    attributes: dict[str, AttributeFact] = {}
    for path in (genai / "registry.yaml", errors / "error" / "registry.yaml",
                 errors / "exceptions" / "registry.yaml"):  # fmt: skip
        attributes.update(_attribute_facts(path, deprecated=False))
    for name, fact in _attribute_facts(genai / "deprecated" / "registry-deprecated.yaml", True):
        attributes.setdefault(name, fact)
    groups = {g["id"]: g for g in _groups(genai / "spans.yaml")}
    spans = {op: _span_fact(groups, group) for op, group in SPAN_GROUPS.items()}
    metric_groups = {g["id"]: g for g in _groups(genai / "metrics.yaml")}
    metrics = {
        name: _metric_fact(metric_groups, f"metric.{name}", TABLE.metrics[name].buckets)
        for name in METRIC_NAMES
    }
    event = next(g for g in _groups(errors / "exceptions" / "events.yaml") if g.get("name"))
    return Facts(
        source=f"registry files in {SEMCONV}",
        attributes=attributes,
        spans=spans,
        metrics=metrics,
        exception_event=frozenset(a["ref"] for a in event["attributes"]),
    )


def _groups(path: Path) -> list[dict[str, Any]]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return list(document["groups"])


def _attribute_facts(path: Path, deprecated: bool) -> Iterator[tuple[str, AttributeFact]]:
    for group in _groups(path):
        for attribute in group.get("attributes", []):
            if "id" not in attribute:
                continue
            kind = attribute["type"]
            members: frozenset[str] = frozenset()
            if isinstance(kind, dict):
                members = frozenset(str(m["value"]) for m in kind["members"])
                kind = "enum"
            yield (
                attribute["id"],
                AttributeFact(str(kind), members, deprecated or "deprecated" in attribute),
            )


def _chain(groups: Mapping[str, dict[str, Any]], group_id: str) -> list[dict[str, Any]]:
    chain = []
    current: str | None = group_id
    while current is not None and current in groups:
        chain.append(groups[current])
        current = groups[current].get("extends")
    return chain


def _refs(chain: list[dict[str, Any]]) -> tuple[frozenset[str], frozenset[str]]:
    """(required, allowed): the most derived group's requirement level wins."""
    levels: dict[str, object] = {}
    for group in chain:
        for attribute in group.get("attributes", []):
            if "ref" in attribute and attribute.get("requirement_level") is not None:
                levels.setdefault(attribute["ref"], attribute["requirement_level"])
            elif "ref" in attribute:
                levels.setdefault(attribute["ref"], None)
    for group in reversed(chain):  # a bare ref keeps the level its parent group gave it
        for attribute in group.get("attributes", []):
            if "ref" in attribute and levels.get(attribute["ref"]) is None:
                levels[attribute["ref"]] = attribute.get("requirement_level")
    required = frozenset(name for name, level in levels.items() if level == "required")
    return required, frozenset(levels)


def _span_fact(groups: Mapping[str, dict[str, Any]], group_id: str) -> SpanFact:
    chain = _chain(groups, group_id)
    required, allowed = _refs(chain)
    return SpanFact(str(chain[0]["span_kind"]), required, allowed)


def _metric_fact(
    groups: Mapping[str, dict[str, Any]], group_id: str, buckets: tuple[float, ...]
) -> MetricFact:
    chain = _chain(groups, group_id)
    required, allowed = _refs(chain)
    metric = chain[0]
    return MetricFact(str(metric["unit"]), str(metric["instrument"]), required, allowed, buckets)
