"""Send framed OTLP request bytes through the SDK exporters' own transport.

The OpenTelemetry Python exporters read every OTEL_EXPORTER_OTLP_* setting themselves
(endpoint and per-signal endpoint, headers, timeout, compression, certificates, client
certificate and key, insecure) and retry as the specification says. We keep all of that
and replace only what turns SDK objects into a request, through a small seam:

* gRPC: the exporter's stub is swapped for one whose serializer passes bytes through,
  and `_translate_data` returns the bytes; `_export` (retries, reconnects) is the SDK's.
* HTTP: the exporter's `_client.export(bytes)` is the SDK's retrying HTTP client, the
  very call its own `export()` makes after encoding. What that `export()` does besides
  is skipped: its 64 MiB request-size check (no variable sets it; our batches have their
  own byte budget) and its self-metrics (OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED).

Two corrections to what the SDK does alone: with REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE set,
requests silently replaced the HTTP exporter's OTEL_EXPORTER_OTLP_CERTIFICATE (see
`_configured_ca_wins`); and a value the gRPC exporter refuses (a compression other than
gzip/none, a timeout that is no number) is a ConfigError, not a traceback. As the SDK
reads them: per-signal headers replace the generic list (no merge); gRPC uses
OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE/_KEY only beside OTEL_EXPORTER_OTLP_CERTIFICATE of
the same scope; INSECURE is gRPC's alone, an https:// endpoint is TLS whatever it says,
and INSECURE=false makes even an http:// endpoint try TLS; the HTTP exporter logs a
warning and uses its default for a compression or timeout it cannot read.

These are private attributes of opentelemetry-exporter-otlp, so pyproject.toml pins its
minor version (1.45), and tests/integration/test_transport.py proves
every variable, both protocols and both signals, against a real receiver, so an upgrade
that moves them fails loudly, not silently.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Final, Protocol

from exporter.errors import ConfigError
from exporter.sink.encoding import LOGS, TRACES, Signal

PROTOCOLS: Final = ("grpc", "http/protobuf")
_PACKAGES: Final = {
    "grpc": "opentelemetry.exporter.otlp.proto.grpc",
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http",
}
# signal -> (module, exporter class, gRPC method path, gRPC response module.class)
_SIGNALS: Final = {
    TRACES: (
        "trace_exporter",
        "OTLPSpanExporter",
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        "opentelemetry.proto.collector.trace.v1.trace_service_pb2.ExportTraceServiceResponse",
    ),
    LOGS: (
        "_log_exporter",
        "OTLPLogExporter",
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        "opentelemetry.proto.collector.logs.v1.logs_service_pb2.ExportLogsServiceResponse",
    ),
}


class BytesExporter(Protocol):
    def send(self, request: bytes, count: int) -> bool:
        """Deliver one framed request; True only when the receiver confirmed it."""
        ...

    def shutdown(self) -> None: ...


@dataclass(frozen=True)
class _Framed:
    """What the gRPC seam hands the SDK's `_export`: the bytes, and how many records."""

    request: bytes
    count: int


def sdk_exporter(protocol: str, module: str, class_name: str) -> Any:
    """An SDK OTLP exporter for the protocol, configured by the OTEL_* variables itself.

    Imported on demand: grpc is heavy to load, and only one protocol is ever used.
    """
    package = _PACKAGES.get(protocol)
    if package is None:
        allowed = " or ".join(_PACKAGES)
        problem = f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; use {allowed}"
        raise ConfigError([problem])
    exporter_class = getattr(importlib.import_module(f"{package}.{module}"), class_name)
    try:
        exporter = exporter_class()
    # What the exporter raises on a value it refuses (ValueError for a timeout that is no
    # number, its own exception class for a gRPC compression it lacks): all settings.
    except Exception as error:
        problem = f"OTEL_EXPORTER_OTLP_* ({protocol} {class_name}): {error}"
        raise ConfigError([problem]) from error
    if protocol == "http/protobuf":
        _configured_ca_wins(exporter._client._transport._session)
    return exporter


def _configured_ca_wins(session: Any) -> None:
    """Keep the CA file OTEL_EXPORTER_OTLP_(TRACES_|LOGS_|METRICS_)CERTIFICATE set.

    The HTTP exporters put it on a requests Session, and requests replaces a session's
    CA file with REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE from the environment when the
    request itself names none, as the exporter's never do (psf/requests#4726, kept until
    requests 3): with either set, as in many container images, the certificate was
    silently not trusted. Without the OTEL variable the environment's bundle applies.
    """
    ca_file = session.verify
    if not isinstance(ca_file, str):
        return
    merge = session.merge_environment_settings

    def merge_keeping_ca_file(
        url: str, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        settings: dict[str, Any] = merge(url, proxies, stream, verify, cert)
        if verify is None:
            settings["verify"] = ca_file
        return settings

    session.merge_environment_settings = merge_keeping_ca_file


def bytes_exporter(signal: Signal, protocol: str) -> BytesExporter:
    """The SDK's OTLP exporter of `signal` for `protocol`, sending bytes we framed."""
    module, class_name, method, response = _SIGNALS[signal]
    exporter = sdk_exporter(protocol, module, class_name)
    if protocol == "grpc":
        return _GrpcBytes(exporter, method, _class_at(response))
    return _HttpBytes(exporter)


class _GrpcBytes:
    def __init__(self, exporter: Any, method: str, response: Any) -> None:
        self._exporter = exporter

        class RawStub:
            def __init__(self, channel: Any) -> None:
                self.Export = channel.unary_unary(
                    method,
                    request_serializer=lambda request: request,
                    response_deserializer=response.FromString,
                )

        exporter._stub = RawStub  # the SDK rebuilds its client from it on reconnects
        exporter._client = RawStub(exporter._channel)
        exporter._translate_data = lambda framed: framed.request
        exporter._count_data = lambda framed: framed.count
        self._success = exporter._result.SUCCESS

    def send(self, request: bytes, count: int) -> bool:
        return bool(self._exporter._export(_Framed(request, count)) is self._success)

    def shutdown(self) -> None:
        self._exporter.shutdown()


class _HttpBytes:
    def __init__(self, exporter: Any) -> None:
        self._exporter = exporter

    def send(self, request: bytes, count: int) -> bool:
        if self._exporter._shutdown:
            return False
        return bool(self._exporter._client.export(request).success)

    def shutdown(self) -> None:
        self._exporter.shutdown()


def _class_at(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)
