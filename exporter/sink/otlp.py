"""The OTLP sink: framed requests of spans and log records, to the configured endpoints.

The SDK reads OTEL_EXPORTER_OTLP_PROTOCOL only in auto-configuration, so we read it (and
the per-signal OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / _LOGS_PROTOCOL) here and pick the gRPC
or HTTP/protobuf exporter; every other OTEL_EXPORTER_OTLP_* variable is read by the
exporter itself, so it means exactly what it means for every OpenTelemetry Python
program. We trust only the exporter's answer: a request is confirmed or it is not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Final

from exporter.sink.encoding import LOGS, TRACES, Signal
from exporter.sink.transport import PROTOCOLS, BytesExporter, bytes_exporter, sdk_exporter

log = logging.getLogger(__name__)

DEFAULT_PROTOCOL: Final = "grpc"  # what the Python SDK's auto-configuration picks
__all__ = ["PROTOCOLS", "OtlpSink", "otlp_endpoint", "otlp_protocol", "sdk_exporter"]


def otlp_protocol(environ: Mapping[str, str], signal: str = "TRACES") -> str:
    raw = environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    return (raw or DEFAULT_PROTOCOL).strip().lower()


def otlp_endpoint(environ: Mapping[str, str], signal: str = "TRACES") -> str | None:
    """The endpoint the user set, if any (the exporter itself reads the same variables)."""
    return environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )


class OtlpSink:
    """Spans to the traces endpoint and, when logs are on, failure logs to the logs one."""

    def __init__(self, protocol: str | None = None, logs_protocol: str | None = None) -> None:
        self.protocol = protocol or otlp_protocol(os.environ)
        self.name = f"otlp/{self.protocol}"
        self._exporters: dict[str, BytesExporter] = {TRACES: bytes_exporter(TRACES, self.protocol)}
        if logs_protocol is not None:
            self._exporters[LOGS] = bytes_exporter(LOGS, logs_protocol)

    def send(self, signal: Signal, request: bytes, count: int) -> bool:
        exporter = self._exporters.get(signal)
        if exporter is None:
            # Log records spooled while logs were on, now turned off: nowhere to send them.
            log.info("OTEL_LOGS_EXPORTER is none: %d spooled log records dropped", count)
            return True
        return exporter.send(request, count)

    def shutdown(self) -> None:
        for exporter in self._exporters.values():
            exporter.shutdown()


def probe_endpoint(protocol: str) -> bool:
    """An empty export request: proves address, TLS, headers and protocol at once."""
    exporter = bytes_exporter(TRACES, protocol)
    try:
        return exporter.send(b"", 0)
    finally:
        exporter.shutdown()
