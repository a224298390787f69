"""Spans and metrics checked against the OpenTelemetry semantic conventions' registry.

Every span of every golden file, and every golden case mapped again in both naming
modes with content capture on, is checked: each gen_ai.*, error.* and exception.*
attribute exists, is not deprecated and has the registry's type; enum values are the
registry's (gen_ai.provider.name: a member, or our documented custom value); each
operation's required attributes are there and its span kind is right; captured messages
validate against the conventions' JSON schemas. The GenAI metrics get the same: names,
units, instruments, attribute keys, bucket advice. Facts come from ../shared/semconv when
present, else from the committed table in facts.py (see its docstring).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from exporter.mapping import attributes as attr
from exporter.mapping.options import DEFAULT_PROVIDER
from exporter.mapping.spans import map_run
from exporter.sink.encoding import Framer, to_otlp_dict
from exporter.workflow_metrics import DEFINITIONS
from tests.conformance.facts import (
    GENAI_VERSION,
    SEMCONV,
    TABLE,
    Facts,
    facts,
    in_ci,
    load_registry,
    registry_present,
)
from tests.golden.test_golden import TESTDATA, cases

NAMESPACES = ("gen_ai.", "error.", "exception.")
SCHEMAS = {
    attr.GEN_AI_INPUT_MESSAGES: "gen-ai-input-messages.json",
    attr.GEN_AI_OUTPUT_MESSAGES: "gen-ai-output-messages.json",
}
_KIND = {"SPAN_KIND_CLIENT": "client", "SPAN_KIND_INTERNAL": "internal"}
# Enums are open in the conventions; error.type's only member is the fallback _OTHER, and
# its note asks for the error's own low-cardinality code: any value is right there.
CUSTOM_VALUES_EXPECTED = frozenset({attr.ERROR_TYPE})
_EXCEPTION_NAME = re.compile(r"[A-Za-z_][\w.]*(?:Error|Exception|Timeout|Failure|Exit)")


# --- the spans under test ---------------------------------------------------------------


def golden_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(TESTDATA.glob("*.json")):
        if path.name != "graphs.json" and not path.name.endswith(".logs.json"):
            yield path.name, json.loads(path.read_text(encoding="utf-8"))


def remapped_documents(shared_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every golden case again, capture on, in both naming modes, also at a tiny limit."""
    for case in cases(shared_dir):
        for names in ("node", "semconv"):
            for limit in (2048, 64):
                options = dataclasses.replace(
                    case.options, capture_content=True, span_names=names, content_max_length=limit
                )
                mapped = map_run(case.workflow, case.run, case.steps, options)
                framer = Framer.of(options.resource, options.scope)
                yield f"{case.name} ({names}, {limit})", to_otlp_dict(framer, mapped.all_spans())


def spans_of(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for resource in document["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            yield from scope["spans"]


def all_spans(shared_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    found = [
        (f"{where}: {span['name']}", span)
        for where, document in [*golden_documents(), *remapped_documents(shared_dir)]
        for span in spans_of(document)
    ]
    assert len(found) > 50, "the walk must see the golden spans"
    return found


def typed(value: dict[str, Any]) -> tuple[str, Any]:
    """(registry type, Python value) of an OTLP JSON AnyValue."""
    if "stringValue" in value:
        return "string", value["stringValue"]
    if "intValue" in value:
        return "int", int(value["intValue"])
    if "doubleValue" in value:
        return "double", float(value["doubleValue"])
    if "boolValue" in value:
        return "boolean", value["boolValue"]
    if "arrayValue" in value:
        items = [typed(v) for v in value["arrayValue"].get("values", [])]
        kinds = {kind for kind, _ in items}
        return (f"{kinds.pop()}[]" if len(kinds) == 1 else "mixed[]"), [v for _, v in items]
    raise AssertionError(f"unexpected value {value}")


def attributes_of(holder: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    return {a["key"]: typed(a["value"]) for a in holder.get("attributes", [])}


# --- the checks -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def semconv() -> Facts:
    if not registry_present() and in_ci():
        pytest.fail(f"CI must have the registry files at {SEMCONV}", pytrace=False)
    return facts()


def problems_of_attribute(facts: Facts, name: str, kind: str, value: Any) -> list[str]:
    fact = facts.attributes.get(name)
    if fact is None:
        return [f"{name}: not in the registry"]
    found = []
    if fact.deprecated:
        found.append(f"{name}: deprecated")
    expected = "string" if fact.type in ("enum", "any") else fact.type
    if fact.type == "any":
        expected = kind  # any type will do
    if kind != expected:
        found.append(f"{name}: {kind}, the registry says {fact.type}")
    custom = CUSTOM_VALUES_EXPECTED | {attr.GEN_AI_PROVIDER_NAME}
    if fact.type == "enum" and name not in custom and value not in fact.members:
        found.append(f"{name}: {value!r} is not one of {sorted(fact.members)}")
    if name == attr.GEN_AI_PROVIDER_NAME and value not in fact.members | {DEFAULT_PROVIDER}:
        found.append(f"{name}: {value!r} is neither a member nor our documented custom value")
    return found


def problems_of_span(facts: Facts, span: dict[str, Any]) -> list[str]:
    found: list[str] = []
    attributes = attributes_of(span)
    for name, (kind, value) in attributes.items():
        if name.startswith(NAMESPACES):
            found += problems_of_attribute(facts, name, kind, value)
    operation = attributes.get(attr.GEN_AI_OPERATION_NAME, ("", None))[1]
    if operation in facts.spans:
        definition = facts.spans[operation]
        missing = definition.required - set(attributes)
        if missing:
            found.append(f"{operation}: required {sorted(missing)} missing")
        if _KIND.get(span.get("kind", "")) != definition.span_kind:
            found.append(f"{operation}: kind {span.get('kind')}, not {definition.span_kind}")
        strangers = {n for n in attributes if n.startswith("gen_ai.")} - definition.allowed
        if strangers:
            found.append(f"{operation}: {sorted(strangers)} are not in its definition")
    if span.get("status", {}).get("code") == "STATUS_CODE_ERROR" and "error.type" not in attributes:
        found.append("an ERROR span without error.type")
    for event in span.get("events", []):
        found += problems_of_event(facts, event)
    return found


def problems_of_event(facts: Facts, event: dict[str, Any]) -> list[str]:
    if event["name"] != "exception":
        return []
    attributes = attributes_of(event)
    found = [f"exception event: {n} not allowed" for n in set(attributes) - facts.exception_event]
    if not {"exception.type", "exception.message"} & set(attributes):
        found.append("exception event with neither exception.type nor exception.message")
    kind = attributes.get("exception.type", ("string", None))[1]
    if kind is not None and not _EXCEPTION_NAME.fullmatch(kind):
        found.append(f"exception.type {kind!r} is not an exception type name")
    for name, (value_kind, value) in attributes.items():
        found += problems_of_attribute(facts, name, value_kind, value)
    return found


def test_every_span_follows_the_conventions(semconv: Facts, shared_dir: Path) -> None:
    problems = [
        f"{where}: {problem}"
        for where, span in all_spans(shared_dir)
        for problem in problems_of_span(semconv, span)
    ]
    assert not problems, f"{len(problems)} problems ({semconv.source}):\n" + "\n".join(
        dict.fromkeys(problems)
    )


def problems_of_log(facts: Facts, record: dict[str, Any], span_ids: set[str]) -> list[str]:
    """A failure log: ERROR, tied to a span of its trace, its attributes registered."""
    found: list[str] = []
    if record.get("severityNumber") != "SEVERITY_NUMBER_ERROR":
        found.append(f"severity {record.get('severityNumber')}, not ERROR")
    if record.get("spanId") not in span_ids:
        found.append(f"span id {record.get('spanId')} is no span of the golden trace")
    attributes = attributes_of(record)
    if "error.type" not in attributes:
        found.append("a failure log without error.type")
    for name, (kind, value) in attributes.items():
        if name.startswith(NAMESPACES):
            found += problems_of_attribute(facts, name, kind, value)
    exception_type = attributes.get("exception.type", ("string", None))[1]
    if exception_type is not None and not _EXCEPTION_NAME.fullmatch(exception_type):
        found.append(f"exception.type {exception_type!r} is not an exception type name")
    return found


def test_every_failure_log_follows_the_conventions(semconv: Facts) -> None:
    checked, problems = 0, []
    for path in sorted(TESTDATA.glob("*.logs.json")):
        spans = json.loads(path.with_name(path.name.replace(".logs", "")).read_text("utf-8"))
        span_ids = {span["spanId"] for span in spans_of(spans)}
        for resource in json.loads(path.read_text(encoding="utf-8"))["resourceLogs"]:
            for scope in resource["scopeLogs"]:
                for record in scope["logRecords"]:
                    checked += 1
                    problems += [
                        f"{path.name}: {p}" for p in problems_of_log(semconv, record, span_ids)
                    ]
    assert checked >= 6, "the walk must see the golden failure logs"
    assert not problems, "\n".join(problems)


def message_schemas() -> dict[str, dict[str, Any]]:
    docs = SEMCONV / GENAI_VERSION / "docs" / "gen-ai"
    if not docs.is_dir():
        if in_ci():
            pytest.fail(f"CI must have the message schemas at {docs}", pytrace=False)
        pytest.skip(f"the GenAI message schemas are not at {docs} (../shared is absent)")
    return {
        name: json.loads((docs / file).read_text(encoding="utf-8"))
        for name, file in SCHEMAS.items()
    }


def test_captured_messages_validate_against_the_schemas(shared_dir: Path) -> None:
    schemas = message_schemas()
    checked = 0
    for where, span in all_spans(shared_dir):
        for name, (_, value) in attributes_of(span).items():
            if name in schemas:
                try:
                    jsonschema.validate(json.loads(value), schemas[name])
                except (ValueError, jsonschema.ValidationError) as exc:
                    pytest.fail(f"{where}: {name} = {value!r}: {exc}")
                checked += 1
    assert checked >= 20, "the walk must meet captured messages"


def test_the_genai_metrics_follow_the_conventions(semconv: Facts) -> None:
    ours = {d.otlp_name: d for d in DEFINITIONS if d.otlp_name.startswith("gen_ai.")}
    assert set(ours) == set(semconv.metrics)
    for name, fact in semconv.metrics.items():
        definition = ours[name]
        keys = {attr.METRIC_ATTRIBUTES.get(label, label) for label in definition.labels}
        assert definition.unit == fact.unit, name
        assert definition.kind == fact.instrument, name
        assert fact.required <= keys, (name, sorted(fact.required - keys))
        assert keys <= fact.allowed, (name, sorted(keys - fact.allowed))
        assert tuple(definition.buckets) == fact.buckets, name
        for key in keys:
            fact_of_key = semconv.attributes.get(key)
            assert fact_of_key is not None and not fact_of_key.deprecated, (name, key)


def test_facts_table_agrees_with_the_registry() -> None:
    if not registry_present():
        if in_ci():
            pytest.fail(f"CI must have the registry files at {SEMCONV}", pytrace=False)
        pytest.skip(f"no registry files at {SEMCONV}: the committed table is used")
    registry = load_registry()
    for name, fact in TABLE.attributes.items():
        found = registry.attributes.get(name)
        assert found is not None, name
        assert (found.type, found.deprecated) == (fact.type, fact.deprecated), name
        if not fact.deprecated:
            assert found.members == fact.members, name
    assert registry.spans == TABLE.spans
    assert registry.metrics == TABLE.metrics
    assert registry.exception_event == TABLE.exception_event
