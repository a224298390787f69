"""OTLP sink: the SDK's own exporters, chosen and configured as the spec says.

The SDK reads OTEL_EXPORTER_OTLP_PROTOCOL only in auto-configuration, so we read it
here and pick the gRPC or HTTP/protobuf class; every other OTEL_EXPORTER_OTLP_*
variable (endpoint, headers, timeout, compression, certificate, insecure) is read by
the exporter itself, so it means exactly what it means for every OpenTelemetry
Python program. We call `export()` directly and trust only its result: the SDK's
BatchSpanProcessor ignores failures and drops spans when its queue is full.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from exporter.errors import ConfigError

log = logging.getLogger(__name__)

PROTOCOLS: Final = ("grpc", "http/protobuf")
DEFAULT_PROTOCOL: Final = "grpc"  # what the Python SDK's auto-configuration picks


def otlp_protocol(environ: Mapping[str, str]) -> str:
    raw = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    return (raw or DEFAULT_PROTOCOL).strip().lower()


def otlp_endpoint(environ: Mapping[str, str]) -> str | None:
    """The endpoint the user set, if any (the exporter itself reads the same variables)."""
    return environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )


_PACKAGES: Final = {
    "grpc": "opentelemetry.exporter.otlp.proto.grpc",
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http",
}


def otlp_exporter(protocol: str, signal: str, class_name: str) -> Any:
    """The SDK's OTLP exporter of a signal for the protocol, configured by OTEL_* itself.

    Imported on demand: grpc is heavy to load, and only one protocol is ever used.
    """
    package = _PACKAGES.get(protocol)
    if package is None:
        allowed = " or ".join(_PACKAGES)
        problem = f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; use {allowed}"
        raise ConfigError([problem])
    return getattr(importlib.import_module(f"{package}.{signal}"), class_name)()


def build_span_exporter(protocol: str) -> SpanExporter:
    exporter: SpanExporter = otlp_exporter(protocol, "trace_exporter", "OTLPSpanExporter")
    return exporter


class OtlpSink:
    def __init__(self, protocol: str | None = None) -> None:
        self.protocol = protocol or otlp_protocol(os.environ)
        self.name = f"otlp/{self.protocol}"
        self._exporter = build_span_exporter(self.protocol)

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        if not spans:
            return True
        result = self._exporter.export(spans)
        return result is SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._exporter.shutdown()


def probe_endpoint(protocol: str) -> bool:
    """An empty export request: proves address, TLS, headers and protocol at once."""
    exporter = build_span_exporter(protocol)
    try:
        return exporter.export([]) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
