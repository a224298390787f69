"""Settings -> the sink a command exports to: the one place that picks sink classes."""

from __future__ import annotations

import io
import logging
from typing import Literal, TextIO

from exporter.config import Settings
from exporter.sink.base import SpanSink, TeeSink
from exporter.sink.console import OtlpJsonSink, TreeSink
from exporter.sink.otlp import OtlpSink

log = logging.getLogger(__name__)

# export: run, once, export-run, backfill. demo: trees on the terminal, and OTLP too when
# an endpoint is set. check: nothing leaves the process (OTLP JSON into a buffer).
Purpose = Literal["export", "demo", "check"]


def build_sink(settings: Settings, purpose: Purpose, *, stream: TextIO | None = None) -> SpanSink:
    if purpose == "check":
        return OtlpJsonSink(io.StringIO())
    if purpose == "demo":
        trees = TreeSink(stream)
        return TeeSink(_otlp(settings), trees) if settings.otlp_enabled else trees
    if not settings.otlp_enabled:
        log.info(
            "OTEL_EXPORTER_OTLP_ENDPOINT is not set: sending to the SDK default endpoint "
            "(localhost:4317 for grpc, localhost:4318 for http/protobuf)"
        )
    return _otlp(settings)


def _otlp(settings: Settings) -> SpanSink:
    """OTLP over gRPC or HTTP/protobuf, as OTEL_EXPORTER_OTLP_(TRACES_|LOGS_)PROTOCOL say."""
    logs = settings.otlp_logs_protocol if settings.otlp_logs else None
    return OtlpSink(settings.otlp_protocol, logs)
