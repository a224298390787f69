"""An in-process sink for tests of delivery: it reads each framed request it is sent back
into spans (or log records), keeps what it confirms, and refuses when told to."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from exporter.mapping.ids import trace_id_for_run
from exporter.mapping.options import MappingOptions
from exporter.mapping.otlp import SpanSpec
from exporter.sink.console import spans_of
from exporter.sink.encoding import LOGS, TRACES, Framer, Signal


class RecordingSink:
    """A sink that keeps the records of the requests it confirms.

    `refusing` makes it confirm nothing; `refused_signals` refuses one signal only (logs
    to a backend that is down while traces go elsewhere). Every request is counted,
    refused ones too. The `count` delivery passes must be the number of records framed:
    a request that says otherwise raises, which delivery takes as a refusal.
    """

    name = "recording"

    def __init__(self) -> None:
        self.spans: list[SpanSpec] = []
        self.logs: list[LogRecord] = []
        self.requests: list[tuple[Signal, int]] = []  # (signal, records) of every request
        self.refusing = False
        self.refused_signals: set[Signal] = set()

    @property
    def batches(self) -> list[int]:
        """Spans in each trace export request, refused ones too."""
        return [count for signal, count in self.requests if signal == TRACES]

    @property
    def attempts(self) -> int:
        """Trace export requests, refused ones too."""
        return len(self.batches)

    @property
    def log_attempts(self) -> int:
        return sum(1 for signal, _ in self.requests if signal == LOGS)

    def send(self, signal: Signal, request: bytes, count: int) -> bool:
        self.requests.append((signal, count))
        spans = spans_of(request) if signal == TRACES else []
        logs = log_records_of(request) if signal == LOGS else []
        if len(spans) + len(logs) != count:
            raise AssertionError(f"a {signal} request of {len(spans) + len(logs)} said {count}")
        if self.refusing or signal in self.refused_signals:
            return False
        self.spans.extend(spans)
        self.logs.extend(logs)
        return True

    def shutdown(self) -> None:
        pass

    def keys(self) -> list[tuple[int, int]]:
        """(trace id, span id) of every confirmed span, duplicates included."""
        return [(s.context.trace_id, s.context.span_id) for s in self.spans]

    def trace_ids(self) -> set[int]:
        return {trace_id for trace_id, _ in self.keys()}

    def roots(self) -> list[SpanSpec]:
        return [span for span in self.spans if span.parent is None]

    def of_run(self, run_id: str) -> list[str]:
        """Names of the confirmed spans of one run in export order (steps: node ids)."""
        trace_id = trace_id_for_run(run_id)
        return [s.name for s in self.spans if s.context.trace_id == trace_id]

    def duplicates(self) -> list[tuple[int, int]]:
        return [key for key, count in Counter(self.keys()).items() if count > 1]


def log_records_of(request: bytes) -> list[LogRecord]:
    """The log records of a framed ExportLogsServiceRequest."""
    message = ExportLogsServiceRequest.FromString(request)
    return [
        record
        for resource in message.resource_logs
        for scope in resource.scope_logs
        for record in scope.log_records
    ]


def framed_spans(spans: Sequence[SpanSpec], options: MappingOptions | None = None) -> bytes:
    """The framed ExportTraceServiceRequest delivery would send for these spans."""
    options = options or MappingOptions()
    framer = Framer.of(options.resource, options.scope)
    return framer.request([span.encode().SerializeToString() for span in spans])
