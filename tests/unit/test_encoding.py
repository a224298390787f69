"""exporter/sink/encoding.py and mapping/otlp.py: a request framed from spooled span bytes
is byte for byte the request the OpenTelemetry SDK's encoder builds from the same spans."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, Status

from exporter.mapping.ids import span_context
from exporter.mapping.options import default_scope
from exporter.mapping.otlp import SpanSpec, decode_span
from exporter.mapping.spans import map_run
from exporter.sink.encoding import Framer
from tests.golden.test_golden import cases

RESOURCE = Resource({"service.name": "orchestra", "service.instance.id": "i-1", "n": 3})


def readable(spec: SpanSpec, resource: Resource, scope: InstrumentationScope) -> ReadableSpan:
    """The SDK's span for a SpanSpec: what the exporter used to encode."""
    return ReadableSpan(
        name=spec.name,
        context=spec.context,
        parent=spec.parent,
        resource=resource,
        attributes=dict(spec.attributes),
        events=[Event(e.name, dict(e.attributes), timestamp=e.timestamp) for e in spec.events],
        links=[Link(link.context, dict(link.attributes)) for link in spec.links],
        kind=spec.kind,
        status=spec.status,
        start_time=spec.start_time,
        end_time=spec.end_time,
        instrumentation_scope=scope,
    )


def all_specs(shared_dir: Path) -> list[tuple[str, list[SpanSpec]]]:
    found = []
    for case in cases(shared_dir):
        mapped = map_run(case.workflow, case.run, case.steps, case.options)
        found.append((case.name, mapped.all_spans()))
    return found


def test_framed_requests_are_the_sdks_bytes(shared_dir: Path) -> None:
    checked = 0
    for scope in (default_scope("1.2.3"), InstrumentationScope("bare")):
        framer = Framer.of(RESOURCE, scope)
        for name, specs in all_specs(shared_dir):
            ours = framer.request([spec.serialize() for spec in specs])
            sdk = encode_spans([readable(s, RESOURCE, scope) for s in specs]).SerializeToString()
            assert ours == sdk, name
            checked += len(specs)
    assert checked > 60


def test_a_span_reads_back_as_it_was_built(shared_dir: Path) -> None:
    for name, specs in all_specs(shared_dir):
        for spec in specs:
            back = decode_span(spec.encode())
            status = (spec.status.status_code, spec.status.description)
            assert (back.status.status_code, back.status.description) == status, name
            plain = Status()  # Status has no equality of its own
            assert replace(back, status=plain) == replace(spec, status=plain), (name, spec.name)


def test_empty_batches_frame_to_nothing() -> None:
    assert Framer.of(RESOURCE, default_scope()).request([]) == b""


def test_cached_attribute_values_keep_their_otlp_type() -> None:
    """True == 1 == 1.0 to Python's cache keys; to OTLP they are a bool, an int, a double."""
    context = span_context(0x1234, 0x56)
    encoded = []
    for value in (1, True, 1.0, 1, "1", ["1"], "x" * 1000):
        spec = SpanSpec("s", context, None, SpanKind.INTERNAL, 1, 2, {"a": value})
        sdk = encode_spans([readable(spec, RESOURCE, default_scope())])
        assert spec.serialize() == sdk.resource_spans[0].scope_spans[0].spans[0].SerializeToString()
        encoded.append(spec.serialize())
    assert len(set(encoded)) == 6  # the second 1 is the first one again
