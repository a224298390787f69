"""Send framed OTLP request bytes through the SDK exporters' own transport.

The OpenTelemetry Python exporters read every OTEL_EXPORTER_OTLP_* setting themselves
(endpoint and per-signal endpoint, headers, timeout, compression, certificates, client
certificate and key, insecure) and retry as the specification says. We keep all of that
and replace only what turns SDK objects into a request, through a small seam:

* gRPC: the exporter's stub is swapped for one whose serializer passes bytes through,
  and `_translate_data` returns the bytes; `_export` (retries, reconnects) is the SDK's.
* HTTP: the exporter's `_client.export(bytes)` is the SDK's retrying HTTP client, the
  very call its own `export()` makes after encoding.

These are private attributes of opentelemetry-exporter-otlp; pyproject.toml pins the
minor versions, and tests/unit/test_transport.py proves every variable against a real
receiver, so an upgrade that moves them fails loudly, not silently.
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
    return getattr(importlib.import_module(f"{package}.{module}"), class_name)()


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
