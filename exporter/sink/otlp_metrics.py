"""The workflow metrics, pushed over OTLP with the traces (same endpoint settings).

Counters are observed from the persisted totals (so they survive restarts, as on
/metrics); histograms are recorded as spans are confirmed, each measurement in the
context of its run's trace, so the SDK attaches exemplars with the trace id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Histogram, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, set_span_in_context

from exporter.mapping.attributes import METRIC_ATTRIBUTES, SCOPE_NAME
from exporter.mapping.ids import span_context
from exporter.sink.transport import sdk_exporter
from exporter.telemetry import PENDING_SPANS_METRIC, HealthState
from exporter.workflow_metrics import DEFINITIONS, MetricBook, MetricDef, Sample

log = logging.getLogger(__name__)


def build_metric_exporter(protocol: str) -> MetricExporter:
    exporter: MetricExporter = sdk_exporter(protocol, "metric_exporter", "OTLPMetricExporter")
    return exporter


class OtlpMetrics:
    def __init__(
        self,
        book: MetricBook,
        health: HealthState,
        resource: Resource,
        exporter: MetricExporter,
    ) -> None:
        views = [
            View(
                instrument_name=d.otlp_name,
                aggregation=ExplicitBucketHistogramAggregation(d.buckets),
            )
            for d in DEFINITIONS
            if d.kind == "histogram"
        ]
        # The interval comes from OTEL_METRIC_EXPORT_INTERVAL (default 60 s).
        reader = PeriodicExportingMetricReader(exporter)
        self._provider = MeterProvider(resource=resource, metric_readers=[reader], views=views)
        meter = self._provider.get_meter(SCOPE_NAME)
        self._histograms: dict[str, Histogram] = {}
        for definition in DEFINITIONS:
            if definition.kind == "counter":
                meter.create_observable_counter(
                    definition.otlp_name,
                    callbacks=[_counter_callback(book, definition)],
                    unit=definition.unit,
                    description=definition.help,
                )
            else:
                self._histograms[definition.name] = meter.create_histogram(
                    definition.otlp_name, unit=definition.unit, description=definition.help
                )
        meter.create_observable_gauge(
            PENDING_SPANS_METRIC,
            callbacks=[lambda _options: [Observation(health.pending_spans)]],
            unit="{span}",
            description="Spans spooled in the ledger, waiting for the sink",
        )

    def record(self, samples: Sequence[Sample]) -> None:
        for sample in samples:
            histogram = self._histograms.get(sample.metric.name)
            if histogram is not None:
                histogram.record(
                    sample.value, _attributes(sample.metric, sample.labels), _trace_context(sample)
                )

    def shutdown(self) -> None:
        try:
            self._provider.shutdown(timeout_millis=5_000)
        except Exception as exc:  # shutting down must never mask the exit status
            log.debug("metrics shutdown: %s", exc)


def _counter_callback(
    book: MetricBook, definition: MetricDef
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        for (name, labels), series in list(book.series.items()):
            if name == definition.name:
                yield Observation(series.count, _attributes(definition, labels))

    return observe


def _attributes(definition: MetricDef, labels: Sequence[str]) -> dict[str, str]:
    return {
        METRIC_ATTRIBUTES.get(name, name): value
        for name, value in zip(definition.labels, labels, strict=True)
        if value
    }


def _trace_context(sample: Sample) -> Context:
    """The sample's span as the current one: the SDK takes exemplars from it."""
    context = span_context(int(sample.trace_id, 16), int(sample.span_id, 16))
    return set_span_in_context(NonRecordingSpan(context))
