"""The test OTLP receiver, proven with the real OTLP exporters (gRPC and HTTP), no mocks."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from tests.support.otlp_receiver import (
    OtlpReceiver,
    ReceivedEvent,
    ReceivedLink,
    ReceivedSpan,
)

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
ROOT_ID = 0xB7AD6B7169203331
CHILD_ID = 0x00F067AA0BA902B7
LINK_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
LINK_SPAN_ID = 0x00F067AA0BA90201
START_NS = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z: keeps every digit
RESOURCE = {"service.name": "orchestra-otel-test", "service.instance.id": "r-1"}
SCOPE = InstrumentationScope("orchestra-otel.tests", "1.2.3")

CHILD_ATTRIBUTES: dict[str, Any] = {
    "str": "value",
    "bool": True,
    "int": -42,
    "big": 2**62,
    "float": 1.5,
    "strs": ("a", "b"),
    "ints": (1, 2, 3),
    "bools": (True, False),
    "floats": (0.5, 2.0),
    "raw": b"\x00\xff",
    "map": {"inner": ("x", "y"), "n": 7},
}

PROTOCOLS = ["grpc", "http"]
TRANSPORTS = ["grpc", "grpc+gzip", "http", "http+gzip", "http+deflate"]

ExporterFactory = Callable[..., SpanExporter]


def _context(span_id: int, trace_id: int = TRACE_ID) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))


def make_spans(trace_id: int = TRACE_ID) -> list[ReadableSpan]:
    """A root span and a CLIENT child with every field the receiver decodes."""
    resource = Resource(RESOURCE)
    root = ReadableSpan(
        name="workflow.run",
        context=_context(ROOT_ID, trace_id),
        resource=resource,
        kind=SpanKind.SERVER,
        start_time=START_NS,
        end_time=START_NS + 5_000_000_000,
        instrumentation_scope=SCOPE,
    )
    child = ReadableSpan(
        name="step.call",
        context=_context(CHILD_ID, trace_id),
        parent=_context(ROOT_ID, trace_id),
        resource=resource,
        attributes=CHILD_ATTRIBUTES,
        events=(Event("retry", {"attempt": 2, "reason": "timeout"}, timestamp=START_NS + 1),),
        links=(Link(_context(LINK_SPAN_ID, LINK_TRACE_ID), {"link.kind": "follows"}),),
        kind=SpanKind.CLIENT,
        status=Status(StatusCode.ERROR, "upstream said no"),
        start_time=START_NS + 1_000,
        end_time=START_NS + 2_000_000_001,
        instrumentation_scope=SCOPE,
    )
    return [root, child]


@pytest.fixture
def make_exporter(otlp_receiver: OtlpReceiver) -> Iterator[ExporterFactory]:
    """make_exporter("grpc" | "http" [+gzip|+deflate], timeout=2.0) -> real OTLP exporter."""
    created: list[SpanExporter] = []

    def factory(transport: str, timeout: float = 2.0) -> SpanExporter:
        protocol, _, compression = transport.partition("+")
        exporter: SpanExporter
        if protocol == "grpc":
            exporter = GrpcSpanExporter(
                endpoint=otlp_receiver.grpc_endpoint,
                insecure=True,
                timeout=timeout,
                compression=grpc.Compression.Gzip if compression else None,
            )
        else:
            exporter = HttpSpanExporter(
                endpoint=otlp_receiver.http_traces_url,
                timeout=timeout,
                compression=HttpCompression(compression) if compression else None,
            )
        created.append(exporter)
        return exporter

    yield factory
    for exporter in created:
        exporter.shutdown()


def timed_export(exporter: SpanExporter, spans: Sequence[ReadableSpan]) -> tuple[bool, float]:
    started = time.monotonic()
    result = exporter.export(spans)
    return result is SpanExportResult.SUCCESS, time.monotonic() - started


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_field_round_trips(
    otlp_receiver: OtlpReceiver, make_exporter: ExporterFactory, transport: str
) -> None:
    protocol = transport.partition("+")[0]
    assert make_exporter(transport).export(make_spans()) is SpanExportResult.SUCCESS

    root, child = otlp_receiver.wait_for_spans(2, timeout=5)
    assert child == ReceivedSpan(
        trace_id=f"{TRACE_ID:032x}",
        span_id=f"{CHILD_ID:016x}",
        parent_span_id=f"{ROOT_ID:016x}",
        name="step.call",
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_ns=START_NS + 1_000,
        end_ns=START_NS + 2_000_000_001,
        attributes={
            "str": "value",
            "bool": True,
            "int": -42,
            "big": 2**62,
            "float": 1.5,
            "strs": ["a", "b"],
            "ints": [1, 2, 3],
            "bools": [True, False],
            "floats": [0.5, 2.0],
            "raw": b"\x00\xff",
            "map": {"inner": ["x", "y"], "n": 7},
        },
        events=[ReceivedEvent("retry", START_NS + 1, {"attempt": 2, "reason": "timeout"})],
        links=[
            ReceivedLink(f"{LINK_TRACE_ID:032x}", f"{LINK_SPAN_ID:016x}", {"link.kind": "follows"})
        ],
        status_code=trace_pb2.Status.STATUS_CODE_ERROR,
        status_message="upstream said no",
        resource_attributes=RESOURCE,
        scope_name="orchestra-otel.tests",
        scope_version="1.2.3",
        protocol=protocol,
    )
    assert root.parent_span_id == ""
    assert root.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert root.status_code == trace_pb2.Status.STATUS_CODE_UNSET
    assert (otlp_receiver.request_count(), otlp_receiver.attempt_count(protocol)) == (1, 1)
    assert otlp_receiver.requests()[0].protocol == protocol


def test_http_compression_header_is_recorded(
    otlp_receiver: OtlpReceiver, make_exporter: ExporterFactory
) -> None:
    assert make_exporter("http+gzip").export(make_spans()) is SpanExportResult.SUCCESS
    assert otlp_receiver.requests("http")[0].headers["content-encoding"] == "gzip"


def test_grpc_accepts_requests_over_the_4mib_grpc_default(
    otlp_receiver: OtlpReceiver, make_exporter: ExporterFactory
) -> None:
    big = ReadableSpan(
        name="big",
        context=_context(ROOT_ID),
        attributes={"blob": "x" * (5 * 1024 * 1024)},
        start_time=START_NS,
        end_time=START_NS + 1,
    )
    assert make_exporter("grpc").export([big]) is SpanExportResult.SUCCESS
    assert len(otlp_receiver.spans()[0].attributes["blob"]) == 5 * 1024 * 1024


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_fail_next_is_retried_and_stored_once(
    otlp_receiver: OtlpReceiver, make_exporter: ExporterFactory, protocol: str
) -> None:
    otlp_receiver.fail_next(1)
    assert make_exporter(protocol).export(make_spans()) is SpanExportResult.SUCCESS

    first, second = otlp_receiver.attempt_times(protocol)
    assert 0.7 <= second - first < 2.0  # the exporters' first backoff: 1 s +-20 %
    assert otlp_receiver.attempt_count(protocol) == 2
    assert otlp_receiver.span_count() == 2
    assert otlp_receiver.duplicate_count() == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retry_after_hint_replaces_the_backoff(
    otlp_receiver: OtlpReceiver, make_exporter: ExporterFactory, protocol: str
) -> None:
    otlp_receiver.fail_next(
        2, grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED, http_status=429, retry_after=0.05
    )
    assert make_exporter(protocol).export(make_spans()) is SpanExportResult.SUCCESS

    # Two hinted waits of 0.05 s; the exporters' own backoff would take 0.8 s at least.
    times = otlp_receiver.attempt_times(protocol)
    assert times[-1] - times[0] < 0.7
    assert otlp_receiver.attempt_count(protocol) == 3
    assert otlp_receiver.span_count() == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reject_next_fails_without_retry(
    otlp_receiver: OtlpReceiver, make_exporter: ExporterFactory, protocol: str
) -> None:
    exporter = make_exporter(protocol)
    otlp_receiver.reject_next(1)
    assert exporter.export(make_spans()) is SpanExportResult.FAILURE
    assert otlp_receiver.attempt_count(protocol) == 1  # export() returned: no retry
    assert otlp_receiver.span_count() == 0
    assert exporter.export(make_spans()) is SpanExportResult.SUCCESS


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_set_down_answers_unavailable_until_up(
    otlp_receiver: OtlpReceiver, make_exporter: ExporterFactory, protocol: str
) -> None:
    exporter = make_exporter(protocol, timeout=0.5)
    otlp_receiver.set_down(True, retry_after=0.05)

    assert exporter.export(make_spans()) is SpanExportResult.FAILURE
    assert otlp_receiver.attempt_count(protocol) > 1  # retried while down
    assert otlp_receiver.span_count() == 0

    otlp_receiver.set_down(False)
    assert exporter.export(make_spans()) is SpanExportResult.SUCCESS
    assert otlp_receiver.span_count() == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stop_is_a_real_outage_and_start_reuses_the_ports(
    otlp_receiver: OtlpReceiver, make_exporter: ExporterFactory, protocol: str
) -> None:
    exporter = make_exporter(protocol)
    assert exporter.export(make_spans()) is SpanExportResult.SUCCESS  # opens a connection
    endpoints = (otlp_receiver.grpc_endpoint, otlp_receiver.http_endpoint)

    otlp_receiver.stop()
    for port in (otlp_receiver.grpc_port, otlp_receiver.http_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    ok, elapsed = timed_export(exporter, make_spans())
    assert not ok
    assert elapsed < 2.5  # exporter timeout=2
    assert otlp_receiver.attempt_count() == 1

    otlp_receiver.start()
    assert (otlp_receiver.grpc_endpoint, otlp_receiver.http_endpoint) == endpoints
    assert exporter.export(make_spans()) is SpanExportResult.SUCCESS
    assert otlp_receiver.span_count() == 4


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_delayed_answer_times_out_but_is_stored(
    otlp_receiver: OtlpReceiver, make_exporter: ExporterFactory, protocol: str
) -> None:
    otlp_receiver.set_delay(0.6)
    ok = make_exporter(protocol, timeout=0.3).export(make_spans()) is SpanExportResult.SUCCESS

    assert not ok
    # The client gave up while the receiver still held the request (it stores the spans
    # only once the delay is over): nothing was stored when export() returned.
    assert otlp_receiver.span_count() == 0
    # The receiver still accepts the request the client gave up on: a retry would duplicate it.
    assert len(otlp_receiver.wait_for_spans(2, timeout=2)) == 2


# --------------------------------------------------------------------------- environment


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_env_points_exporters_at_the_receiver(
    otlp_receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in otlp_receiver.env(protocol).items():
        monkeypatch.setenv(name, value)
    exporter_class = GrpcSpanExporter if protocol == "grpc" else HttpSpanExporter
    exporter = exporter_class(timeout=2)
    try:
        assert exporter.export(make_spans()) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    expected = "grpc" if protocol == "grpc" else "http"
    assert {span.protocol for span in otlp_receiver.spans()} == {expected}


def test_env_rejects_unknown_protocol(otlp_receiver: OtlpReceiver) -> None:
    with pytest.raises(ValueError, match="http/json"):
        otlp_receiver.env("http/json")


def test_endpoints_need_a_start() -> None:
    with pytest.raises(RuntimeError, match="not been started"):
        _ = OtlpReceiver().grpc_endpoint


# --------------------------------------------------------------------------- raw HTTP


def post(
    receiver: OtlpReceiver,
    body: bytes,
    content_type: str = "application/x-protobuf",
    path: str = "/v1/traces",
    **headers: str,
) -> int:
    request = urllib.request.Request(
        receiver.http_endpoint + path,
        data=body,
        method="POST",
        headers={"Content-Type": content_type, **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_http_error_answers(otlp_receiver: OtlpReceiver) -> None:
    assert post(otlp_receiver, b"\xff\xff not protobuf") == 400
    assert post(otlp_receiver, b"not gzip", **{"Content-Encoding": "gzip"}) == 400
    assert post(otlp_receiver, b"", path="/v1/profiles") == 404
    assert post(otlp_receiver, b"\xff\xff not protobuf", path="/v1/logs") == 400
    assert post(otlp_receiver, b"", content_type="text/plain") == 415
    assert post(otlp_receiver, b"{not json", content_type="application/json") == 400
    assert otlp_receiver.request_count() == 0


def test_http_accepts_otlp_json_and_raw_deflate(otlp_receiver: OtlpReceiver) -> None:
    span = {
        "traceId": f"{TRACE_ID:032x}",
        "spanId": f"{ROOT_ID:016x}",
        "name": "from-json",
        "kind": 2,
        "startTimeUnixNano": str(START_NS),
        "endTimeUnixNano": str(START_NS + 1),
        "attributes": [{"key": "n", "value": {"intValue": "5"}}],
        "links": [{"traceId": f"{LINK_TRACE_ID:032x}", "spanId": f"{LINK_SPAN_ID:016x}"}],
    }
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    assert post(otlp_receiver, json.dumps(document).encode(), "application/json") == 200

    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    payload = make_request_bytes()
    body = raw_deflate.compress(payload) + raw_deflate.flush()
    assert post(otlp_receiver, body, **{"Content-Encoding": "deflate"}) == 200

    received = otlp_receiver.spans()
    assert (received[0].name, received[0].start_ns) == ("from-json", START_NS)
    assert received[0].trace_id == f"{TRACE_ID:032x}"
    assert received[0].attributes == {"n": 5}
    assert received[0].links[0].span_id == f"{LINK_SPAN_ID:016x}"
    assert [span.name for span in received[1:]] == ["only"]


def make_request_bytes() -> bytes:
    request = trace_service_pb2.ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name = "only"
    span.trace_id = TRACE_ID.to_bytes(16, "big")
    span.span_id = CHILD_ID.to_bytes(8, "big")
    data: bytes = request.SerializeToString()
    return data


# --------------------------------------------------------------------------- queries


def test_duplicates_traces_and_clear(
    otlp_receiver: OtlpReceiver, make_exporter: ExporterFactory
) -> None:
    exporter = make_exporter("http")
    other_trace = 0x11111111111111111111111111111111
    for spans in (make_spans(), make_spans(), make_spans(other_trace)):
        assert exporter.export(spans) is SpanExportResult.SUCCESS

    assert otlp_receiver.span_count() == 6
    assert otlp_receiver.duplicate_count() == 2
    assert set(otlp_receiver.duplicate_spans().values()) == {2}
    assert len(otlp_receiver.unique_span_keys()) == 4
    traces = otlp_receiver.traces()
    assert sorted(traces) == sorted([f"{TRACE_ID:032x}", f"{other_trace:032x}"])
    assert [span.name for span in traces[f"{other_trace:032x}"]] == ["workflow.run", "step.call"]

    otlp_receiver.clear()
    assert (otlp_receiver.span_count(), otlp_receiver.request_count()) == (0, 0)
    assert otlp_receiver.attempt_count() == 0


def test_wait_for_spans_explains_a_timeout(otlp_receiver: OtlpReceiver) -> None:
    otlp_receiver.fail_next(3)
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"expected >= 1 spans.*got 0 spans.*faults=3"):
        otlp_receiver.wait_for_spans(1, timeout=0.1)
    assert time.monotonic() - started < 1.0


def test_context_manager_stops_quickly() -> None:
    with OtlpReceiver() as receiver:
        port = receiver.http_port
        assert receiver.is_running
        stopping = time.monotonic()
    assert not receiver.is_running
    assert time.monotonic() - stopping < 1.0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
