"""Every OTEL_EXPORTER_OTLP_* variable, through our bytes seam, against a real receiver.

exporter/sink/transport.py keeps the SDK exporters' own transport and swaps only what
turns SDK objects into a request. These tests prove that the seam loses none of the
configuration: each one sets variables in the process environment (the SDK exporters read
it when they are built), builds the sink as the product does (settings -> build_sink),
sends framed requests (exporter/sink/encoding.py Framer) to the real test receiver over
sockets, and asserts what the receiver saw: where the request went, its headers, its
encoding, the TLS handshake, and that it decodes to exactly the records sent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from exporter.config import load_settings
from exporter.errors import ConfigError
from exporter.mapping.otlp import SpanSpec, make_log_record
from exporter.sink.encoding import LOGS, TRACES, Framer, Signal, parse_request
from exporter.sink.factory import build_sink
from tests.support.otlp_receiver import (
    GRPC_LOGS_METHOD,
    GRPC_TRACES_METHOD,
    OtlpReceiver,
    flatten_logs,
    flatten_request,
)
from tests.support.tls import ServerTls, TcpRelay, make_self_signed_cert

PROTOCOLS = ["grpc", "http/protobuf"]
SIGNALS: list[Signal] = [TRACES, LOGS]
# "generic": OTEL_EXPORTER_OTLP_X; "signal": OTEL_EXPORTER_OTLP_TRACES_X / _LOGS_X
SCOPES = ["generic", "signal"]
GRPC_METHODS = {TRACES: GRPC_TRACES_METHOD, LOGS: GRPC_LOGS_METHOD}

FRAMER = Framer.of(
    Resource({"service.name": "orchestra-otel-transport-test"}),
    InstrumentationScope("orchestra-otel.tests.transport", "0.1.0"),
)
TRACE_ID = 0x5B8EFFF798038103D269B633813FC60C
ROOT_ID = 0xEEE19B7EC3C1B174
STEP_ID = 0x0123456789ABCDEF
START_NS = 1_767_225_600_000_000_000
# Settings that must not leak in from the machine: proxies would route 127.0.0.1 away,
# CA bundles would decide the TLS tests.
_MACHINE_VARIABLES = frozenset(
    {
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "grpc_proxy",
        "no_proxy",
        "requests_ca_bundle",
        "curl_ca_bundle",
        "ssl_cert_file",
    }
)
# Expected failures: at 0.5 s the first retry (backoff >= 0.8 s) is already past the
# deadline, so a refused send returns at once instead of after the 10 s default.
FAIL_FAST_TIMEOUT = "0.5"
HANG_TIMEOUT_S = 1.0
# The SDK default is 10 s: a bound under it proves the variable was obeyed, and is still
# 9 times the timeout for a busy machine.
HANG_RETURN_BOUND_S = 9.0


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Batch:
    signal: Signal
    request: bytes
    count: int


def _context(span_id: int) -> SpanContext:
    return SpanContext(TRACE_ID, span_id, is_remote=False, trace_flags=TraceFlags(1))


def _spans(filler: str) -> list[SpanSpec]:
    root = SpanSpec(
        name="workflow.run",
        context=_context(ROOT_ID),
        parent=None,
        kind=SpanKind.SERVER,
        start_time=START_NS,
        end_time=START_NS + 5_000_000_000,
        attributes={"test.run": "r-1", "test.steps": 1},
    )
    step = SpanSpec(
        name="step.call",
        context=_context(STEP_ID),
        parent=_context(ROOT_ID),
        kind=SpanKind.CLIENT,
        start_time=START_NS + 1_000,
        end_time=START_NS + 2_000_000_000,
        attributes={"test.filler": filler, "test.ratio": 0.5, "test.ok": False},
        status=Status(StatusCode.ERROR, "upstream said no"),
    )
    return [root, step]


def make_batch(signal: Signal, *, filler: str = "") -> Batch:
    """A request framed as the product frames it, of two spans or two log records."""
    if signal == TRACES:
        payloads = [span.encode().SerializeToString() for span in _spans(filler)]
    else:
        payloads = [
            make_log_record(
                trace_id=TRACE_ID,
                span_id=span_id,
                time_ns=START_NS + 2_000_000_000,
                body="step failed",
                attributes={"test.filler": filler, "test.step": "call"},
            ).SerializeToString()
            for span_id in (ROOT_ID, STEP_ID)
        ]
    return Batch(signal, FRAMER.request(payloads), len(payloads))


def compressible_batch(signal: Signal) -> Batch:
    """A request of about 200 kB that gzip shrinks to a few hundred bytes."""
    return make_batch(signal, filler="orchestra workflow step " * 8_000)


def send(batch: Batch) -> bool:
    """Build the sink from the environment as the daemon does, send, shut it down."""
    sink = build_sink(load_settings(require_api_key=False), "export")
    try:
        return sink.send(batch.signal, batch.request, batch.count)
    finally:
        sink.shutdown()


def received(receiver: OtlpReceiver, signal: Signal) -> list[Any]:
    return list(receiver.spans()) if signal == TRACES else list(receiver.logs())


def expected(batch: Batch, protocol: str) -> list[Any]:
    """The records the receiver must hold after `batch` arrived once over `protocol`."""
    label = "grpc" if protocol == "grpc" else "http"
    message = parse_request(batch.signal, batch.request)
    if batch.signal == TRACES:
        return list(flatten_request(message, label))
    return list(flatten_logs(message, label))


def assert_delivered_once(receiver: OtlpReceiver, batch: Batch, protocol: str) -> None:
    records = expected(batch, protocol)
    assert records, "the batch holds records"
    assert received(receiver, batch.signal) == records


def assert_refused(receiver: OtlpReceiver, batch: Batch) -> None:
    assert received(receiver, batch.signal) == []
    assert receiver.calls() == [], "no request reached the receiver's handlers"


# --------------------------------------------------------------------------- environment


def variable(name: str, scope: str, signal: Signal) -> str:
    """OTEL_EXPORTER_OTLP_<name>, or its per-signal form OTEL_EXPORTER_OTLP_TRACES_<name>."""
    if scope == "generic":
        return f"OTEL_EXPORTER_OTLP_{name}"
    return f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}"


def endpoint_for(receiver: OtlpReceiver, protocol: str) -> str:
    return receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint


def signal_url(receiver: OtlpReceiver, signal: Signal) -> str:
    """The full per-signal HTTP URL, as OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT wants it."""
    return f"{receiver.http_endpoint}/v1/{signal}"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Only what each test sets: no OTEL_*, proxy or CA bundle variable of the machine.

    Logs are sent whatever endpoint variables a test sets (OTEL_LOGS_EXPORTER=otlp).
    """
    for name in list(os.environ):
        if name.startswith("OTEL_") or name.lower() in _MACHINE_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "otlp")
    return monkeypatch


def point_at(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver, protocol: str) -> None:
    """All OtlpReceiver.env() sets: the endpoint, the protocol, insecure or the CA file."""
    for name, value in receiver.env(protocol).items():
        monkeypatch.setenv(name, value)


def aim(monkeypatch: pytest.MonkeyPatch, protocol: str, endpoint: str) -> None:
    """Only the protocol and the generic endpoint: the test sets the rest."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)


@pytest.fixture
def prefixed_receiver() -> Iterator[OtlpReceiver]:
    """HTTP paths under /otlp, as a collector behind a reverse proxy serves them."""
    with OtlpReceiver(http_path_prefix="/otlp") as receiver:
        yield receiver


@dataclass(frozen=True)
class Certificates:
    server: ServerTls  # the receiver's self-signed certificate and key
    client_cert: Path  # a client certificate the mTLS receiver trusts
    client_key: Path
    foreign_cert: Path  # a CA that signed neither: "someone else's certificate"
    foreign_key: Path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    root = tmp_path_factory.mktemp("certificates")
    made = [
        make_self_signed_cert(root / name, common_name=f"orchestra-otel test {name}")
        for name in ("server", "client", "foreign")
    ]
    # tests/support/tls.py falls back to the openssl command; without either this is a
    # broken test machine, not a reason to skip the TLS variables silently.
    assert all(pair is not None for pair in made), "cryptography or openssl is needed"
    (server_cert, server_key), (client_cert, client_key), (foreign_cert, foreign_key) = [
        pair for pair in made if pair is not None
    ]
    return Certificates(
        ServerTls(server_cert, server_key), client_cert, client_key, foreign_cert, foreign_key
    )


@pytest.fixture
def tls_receiver(certificates: Certificates) -> Iterator[OtlpReceiver]:
    with OtlpReceiver(tls=certificates.server) as receiver:
        yield receiver


@pytest.fixture
def mtls_receiver(certificates: Certificates) -> Iterator[OtlpReceiver]:
    server = certificates.server
    tls = ServerTls(server.cert, server.key, client_ca=certificates.client_cert)
    with OtlpReceiver(tls=tls) as receiver:
        yield receiver


@pytest.fixture
def foreign_ca_bundles(
    clean_env: pytest.MonkeyPatch, certificates: Certificates
) -> pytest.MonkeyPatch:
    """REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE set, as in many container images, to a CA
    that did not sign the receiver's certificate: OTEL_EXPORTER_OTLP_CERTIFICATE must win."""
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(certificates.foreign_cert))
    clean_env.setenv("CURL_CA_BUNDLE", str(certificates.foreign_cert))
    return clean_env


# --------------------------------------------------------------------------- endpoint


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_generic_endpoint_gets_the_signal_path_appended(
    clean_env: pytest.MonkeyPatch, prefixed_receiver: OtlpReceiver, protocol: str, signal: Signal
) -> None:
    point_at(clean_env, prefixed_receiver, protocol)
    batch = make_batch(signal)

    assert send(batch)

    assert_delivered_once(prefixed_receiver, batch, protocol)
    path = GRPC_METHODS[signal] if protocol == "grpc" else f"/otlp/v1/{signal}"
    assert [call.path for call in prefixed_receiver.calls()] == [path]


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_per_signal_endpoint_wins_over_the_generic_one(
    clean_env: pytest.MonkeyPatch, prefixed_receiver: OtlpReceiver, protocol: str, signal: Signal
) -> None:
    with OtlpReceiver() as decoy:
        point_at(clean_env, decoy, protocol)
        per_signal = (
            prefixed_receiver.grpc_endpoint
            if protocol == "grpc"
            else signal_url(prefixed_receiver, signal)
        )
        clean_env.setenv(variable("ENDPOINT", "signal", signal), per_signal)
        batch = make_batch(signal)

        assert send(batch)

        assert decoy.calls() == []
    assert_delivered_once(prefixed_receiver, batch, protocol)
    path = GRPC_METHODS[signal] if protocol == "grpc" else f"/otlp/v1/{signal}"
    assert [call.path for call in prefixed_receiver.calls()] == [path]


@pytest.mark.parametrize("signal", SIGNALS)
def test_the_http_per_signal_endpoint_is_used_as_is(
    clean_env: pytest.MonkeyPatch, prefixed_receiver: OtlpReceiver, signal: Signal
) -> None:
    """Without /v1/<signal> in it, the request goes to the bare path (and meets a 404)."""
    point_at(clean_env, prefixed_receiver, "http/protobuf")
    clean_env.setenv(variable("ENDPOINT", "signal", signal), prefixed_receiver.http_endpoint)
    clean_env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", FAIL_FAST_TIMEOUT)
    batch = make_batch(signal)

    assert send(batch) is False

    assert [(call.path, call.signal) for call in prefixed_receiver.calls()] == [("/otlp", "")]
    assert received(prefixed_receiver, signal) == []


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_headers_arrive_url_decoded_with_lower_cased_names(
    clean_env: pytest.MonkeyPatch, otlp_receiver: OtlpReceiver, protocol: str, signal: Signal
) -> None:
    point_at(clean_env, otlp_receiver, protocol)
    clean_env.setenv(
        "OTEL_EXPORTER_OTLP_HEADERS",
        "X-Tenant=acme,Authorization=Bearer%20tok%3D%3D,x-note=a%2Cb%20c",
    )
    batch = make_batch(signal)

    assert send(batch)

    assert_delivered_once(otlp_receiver, batch, protocol)
    [call] = otlp_receiver.calls()
    assert call.headers["x-tenant"] == "acme"
    assert call.headers["authorization"] == "Bearer tok=="
    assert call.headers["x-note"] == "a,b c"


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_per_signal_headers_replace_the_generic_ones(
    clean_env: pytest.MonkeyPatch, otlp_receiver: OtlpReceiver, protocol: str, signal: Signal
) -> None:
    """The SDK takes the per-signal list instead of the generic one: no merge."""
    point_at(clean_env, otlp_receiver, protocol)
    clean_env.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=generic,x-generic-only=1")
    clean_env.setenv(variable("HEADERS", "signal", signal), "x-tenant=per%20signal")
    batch = make_batch(signal)

    assert send(batch)

    [call] = otlp_receiver.calls()
    assert call.headers["x-tenant"] == "per signal"
    assert "x-generic-only" not in call.headers


# --------------------------------------------------------------------------- compression


@pytest.mark.parametrize("compression", ["generic gzip", "signal gzip", "none"])
@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_gzip_compresses_the_bytes_on_the_wire_and_they_decode_to_the_same_records(
    clean_env: pytest.MonkeyPatch,
    otlp_receiver: OtlpReceiver,
    protocol: str,
    signal: Signal,
    compression: str,
) -> None:
    """Through a relay that counts what the client sent: gRPC's grpc-encoding is not in
    the metadata a server sees, the size on the wire is."""
    port = otlp_receiver.grpc_port if protocol == "grpc" else otlp_receiver.http_port
    batch = compressible_batch(signal)
    with TcpRelay((otlp_receiver.host, port)) as relay:
        aim(clean_env, protocol, f"http://127.0.0.1:{relay.port}")
        if compression != "none":
            scope = compression.split()[0]
            clean_env.setenv(variable("COMPRESSION", scope, signal), "gzip")

        assert send(batch)

        on_the_wire = relay.bytes_from_clients
    assert_delivered_once(otlp_receiver, batch, protocol)
    [call] = otlp_receiver.calls()
    if compression == "none":
        assert on_the_wire > len(batch.request)
        assert "content-encoding" not in call.headers
    else:
        assert on_the_wire < len(batch.request) // 20, (on_the_wire, len(batch.request))
        if protocol != "grpc":
            assert call.headers["content-encoding"] == "gzip"


# --------------------------------------------------------------------------- timeout


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_hanging_receiver_is_given_up_after_the_timeout(
    clean_env: pytest.MonkeyPatch,
    otlp_receiver: OtlpReceiver,
    protocol: str,
    signal: Signal,
    scope: str,
) -> None:
    point_at(clean_env, otlp_receiver, protocol)
    clean_env.setenv(variable("TIMEOUT", scope, signal), str(HANG_TIMEOUT_S))
    otlp_receiver.set_hang(True)

    started = time.monotonic()
    delivered = send(make_batch(signal))
    elapsed = time.monotonic() - started

    assert delivered is False
    otlp_receiver.wait_for_calls(1)  # the request did arrive, and was held
    assert received(otlp_receiver, signal) == []
    assert elapsed >= HANG_TIMEOUT_S * 0.8, f"gave up after {elapsed:.2f}s, before the timeout"
    assert elapsed < HANG_RETURN_BOUND_S, f"still waiting after {elapsed:.2f}s"


# --------------------------------------------------------------------------- TLS


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_trusted_certificate_lets_the_request_through(
    foreign_ca_bundles: pytest.MonkeyPatch,
    tls_receiver: OtlpReceiver,
    certificates: Certificates,
    protocol: str,
    signal: Signal,
    scope: str,
) -> None:
    env = foreign_ca_bundles
    aim(env, protocol, endpoint_for(tls_receiver, protocol))
    env.setenv(variable("CERTIFICATE", scope, signal), str(certificates.server.cert))
    batch = make_batch(signal)

    assert send(batch)

    assert_delivered_once(tls_receiver, batch, protocol)
    assert tls_receiver.tls_handshake_failures() == 0


@pytest.mark.parametrize("trusted", ["nothing", "another CA"])
@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_untrusted_certificate_fails_the_send_without_a_crash(
    foreign_ca_bundles: pytest.MonkeyPatch,
    tls_receiver: OtlpReceiver,
    certificates: Certificates,
    protocol: str,
    signal: Signal,
    trusted: str,
) -> None:
    env = foreign_ca_bundles
    aim(env, protocol, endpoint_for(tls_receiver, protocol))
    env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", FAIL_FAST_TIMEOUT)
    if trusted == "another CA":
        env.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(certificates.foreign_cert))
    batch = make_batch(signal)

    assert send(batch) is False

    assert_refused(tls_receiver, batch)
    if protocol != "grpc":  # the gRPC server does not report failed handshakes
        tls_receiver.wait_for_tls_handshake_failures(1)  # the client did connect


@pytest.mark.parametrize("signal", SIGNALS)
def test_http_still_trusts_the_environment_bundle_without_the_otel_variable(
    clean_env: pytest.MonkeyPatch,
    tls_receiver: OtlpReceiver,
    certificates: Certificates,
    signal: Signal,
) -> None:
    """The fix that lets OTEL_EXPORTER_OTLP_CERTIFICATE win takes nothing else away."""
    aim(clean_env, "http/protobuf", tls_receiver.http_endpoint)
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(certificates.server.cert))
    batch = make_batch(signal)

    assert send(batch)

    assert_delivered_once(tls_receiver, batch, "http/protobuf")


@pytest.mark.parametrize("client", ["generic", "signal", "none", "untrusted"])
@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mutual_tls_needs_the_client_certificate_and_key(
    foreign_ca_bundles: pytest.MonkeyPatch,
    mtls_receiver: OtlpReceiver,
    certificates: Certificates,
    protocol: str,
    signal: Signal,
    client: str,
) -> None:
    """gRPC reads the client pair only beside a CA file of the same scope, so the
    per-signal case sets the per-signal CERTIFICATE too."""
    env = foreign_ca_bundles
    aim(env, protocol, endpoint_for(mtls_receiver, protocol))
    scope = "signal" if client == "signal" else "generic"
    env.setenv(variable("CERTIFICATE", scope, signal), str(certificates.server.cert))
    if client in ("generic", "signal"):
        env.setenv(variable("CLIENT_CERTIFICATE", scope, signal), str(certificates.client_cert))
        env.setenv(variable("CLIENT_KEY", scope, signal), str(certificates.client_key))
    elif client == "untrusted":
        env.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(certificates.foreign_cert))
        env.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(certificates.foreign_key))
    if client in ("none", "untrusted"):
        env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", FAIL_FAST_TIMEOUT)
    batch = make_batch(signal)

    delivered = send(batch)

    if client in ("generic", "signal"):
        assert delivered
        assert_delivered_once(mtls_receiver, batch, protocol)
        return
    assert delivered is False
    assert_refused(mtls_receiver, batch)
    if protocol != "grpc":
        mtls_receiver.wait_for_tls_handshake_failures(1)


# --------------------------------------------------------------------------- insecure (gRPC)


def _schemeless(receiver: OtlpReceiver) -> str:
    return f"{receiver.host}:{receiver.grpc_port}"


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("signal", SIGNALS)
def test_insecure_true_speaks_plaintext_to_a_schemeless_endpoint(
    clean_env: pytest.MonkeyPatch, otlp_receiver: OtlpReceiver, signal: Signal, scope: str
) -> None:
    aim(clean_env, "grpc", _schemeless(otlp_receiver))
    clean_env.setenv(variable("INSECURE", scope, signal), "true")
    batch = make_batch(signal)

    assert send(batch)

    assert_delivered_once(otlp_receiver, batch, "grpc")


@pytest.mark.parametrize(
    ("endpoint", "insecure"),
    [
        ("schemeless", "false"),
        ("schemeless", None),  # TLS is the default without a scheme
        ("https", "true"),  # the https scheme wins over the variable
        ("http", "false"),  # the Python SDK lets the variable win over http://
    ],
)
@pytest.mark.parametrize("signal", SIGNALS)
def test_tls_towards_a_plaintext_receiver_fails(
    clean_env: pytest.MonkeyPatch,
    otlp_receiver: OtlpReceiver,
    signal: Signal,
    endpoint: str,
    insecure: str | None,
) -> None:
    address = _schemeless(otlp_receiver)
    aim(clean_env, "grpc", address if endpoint == "schemeless" else f"{endpoint}://{address}")
    if insecure is not None:
        clean_env.setenv("OTEL_EXPORTER_OTLP_INSECURE", insecure)
    clean_env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", FAIL_FAST_TIMEOUT)
    batch = make_batch(signal)

    assert send(batch) is False

    assert_refused(otlp_receiver, batch)


@pytest.mark.parametrize("signal", SIGNALS)
def test_insecure_false_reaches_a_tls_receiver_at_a_schemeless_endpoint(
    clean_env: pytest.MonkeyPatch,
    tls_receiver: OtlpReceiver,
    certificates: Certificates,
    signal: Signal,
) -> None:
    aim(clean_env, "grpc", _schemeless(tls_receiver))
    clean_env.setenv("OTEL_EXPORTER_OTLP_INSECURE", "false")
    clean_env.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(certificates.server.cert))
    batch = make_batch(signal)

    assert send(batch)

    assert_delivered_once(tls_receiver, batch, "grpc")


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("signal", SIGNALS)
def test_the_per_signal_protocol_wins_over_the_generic_one(
    clean_env: pytest.MonkeyPatch, otlp_receiver: OtlpReceiver, signal: Signal
) -> None:
    """Read by us (exporter/sink/otlp.py, exporter/config.py), not by the exporters."""
    point_at(clean_env, otlp_receiver, "grpc")
    clean_env.setenv(variable("PROTOCOL", "signal", signal), "http/protobuf")
    clean_env.setenv(variable("ENDPOINT", "signal", signal), signal_url(otlp_receiver, signal))
    batch = make_batch(signal)

    assert send(batch)

    assert_delivered_once(otlp_receiver, batch, "http/protobuf")


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("name", "value"),
    [("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"), ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon")],
)
def test_a_value_the_grpc_exporter_refuses_is_a_configuration_error(
    clean_env: pytest.MonkeyPatch, otlp_receiver: OtlpReceiver, name: str, value: str
) -> None:
    """Not a traceback: the daemon prints configuration errors and exits 2."""
    point_at(clean_env, otlp_receiver, "grpc")
    clean_env.setenv(name, value)

    with pytest.raises(ConfigError) as raised:
        build_sink(load_settings(require_api_key=False), "export")

    assert value in " ".join(raised.value.problems)


@pytest.mark.parametrize(
    ("name", "value"),
    [("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"), ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon")],
)
def test_the_http_exporter_falls_back_to_its_defaults_on_bad_values(
    clean_env: pytest.MonkeyPatch, otlp_receiver: OtlpReceiver, name: str, value: str
) -> None:
    """The HTTP exporter logs a warning and uses no compression / 10 s, as the SDK does."""
    point_at(clean_env, otlp_receiver, "http/protobuf")
    clean_env.setenv(name, value)
    batch = make_batch(TRACES)

    assert send(batch)

    assert_delivered_once(otlp_receiver, batch, "http/protobuf")
    [call] = otlp_receiver.calls()
    assert "content-encoding" not in call.headers
