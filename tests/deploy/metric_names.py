"""The metrics orchestra-otel publishes at /metrics: the single reference list.

The alert rules (deploy/prometheus) and the Grafana dashboard (deploy/grafana) may only use
these names and their labels; tests/deploy checks both against this module, and a test of a
real scrape can compare the daemon's output with it (`family_of` maps a scraped sample name
back to its metric).

Names are written as PromQL sees them: counters with `_total`, histograms without a suffix
(their series are `_bucket{le}`, `_sum` and `_count`). Every series also carries the
scrape's `job` and `instance` labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    labels: frozenset[str] = frozenset()
    exemplars: bool = False  # OpenMetrics exemplars {trace_id="<32 hex>"}


def _m(name: str, kind: Kind, *labels: str, exemplars: bool = False) -> Metric:
    return Metric(name, kind, frozenset(labels), exemplars)


_STEP = ("workflow_id", "workflow", "node", "node_type", "outcome")
_RUN = ("workflow_id", "workflow", "outcome")

# Workflow metrics: counters and histograms counted once per step/run when first exported,
# persisted across restarts (the counters of known workflows and nodes start at 0); the
# in-flight gauges are what the last poll of each workflow saw.
WORKFLOW_METRICS: Final = (
    # exemplars only on the outcome="failed" series
    _m("orchestra_steps_total", "counter", *_STEP, exemplars=True),
    _m("orchestra_runs_total", "counter", *_RUN),
    _m("orchestra_step_duration_seconds", "histogram", *_STEP, exemplars=True),
    _m("orchestra_run_duration_seconds", "histogram", *_RUN, exemplars=True),
    _m(
        "gen_ai_client_token_usage",
        "histogram",
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_token_type",
    ),
    _m(
        "gen_ai_client_operation_duration_seconds",
        "histogram",
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "error_type",  # only on failures
    ),
    _m("orchestra_runs_in_flight", "gauge", "workflow_id", "workflow"),
    _m("orchestra_run_in_flight_oldest_age_seconds", "gauge", "workflow_id", "workflow"),
)

WORKFLOW_METRICS += (
    _m("orchestra_cost_total", "counter", "workflow_id", "workflow", "model", "currency"),
    _m("orchestra_step_wait_seconds", "histogram", "workflow_id", "workflow", exemplars=True),
    _m("orchestra_run_overhead_seconds", "histogram", "workflow_id", "workflow", exemplars=True),
)

# The daemon's own metrics.
SELF_METRICS: Final = (
    _m("orchestra_otel_polls_total", "counter", "result"),
    _m("orchestra_otel_poll_duration_seconds", "histogram"),
    _m("orchestra_otel_last_successful_poll_timestamp_seconds", "gauge"),
    _m("orchestra_otel_spans_exported_total", "counter", "sink"),
    _m("orchestra_otel_spans_failed_total", "counter", "sink"),
    _m("orchestra_otel_export_failures_total", "counter", "sink"),
    _m("orchestra_otel_pending_spans", "gauge"),
    _m("orchestra_otel_export_lag_seconds", "histogram"),
    _m("orchestra_otel_skipped_records_total", "counter", "kind"),
    _m("orchestra_otel_api_requests_total", "counter", "endpoint", "outcome"),
    _m("orchestra_otel_api_retries_total", "counter", "endpoint"),
    _m("orchestra_otel_api_rate_limited_total", "counter"),
    _m("orchestra_otel_api_auth_failing", "gauge"),
    _m("orchestra_otel_history_paging_stopped_total", "counter", "reason"),
    _m("orchestra_otel_unpriced_model_steps_total", "counter", "model"),
    _m("orchestra_otel_api_retry_after_total", "counter"),
    _m("orchestra_otel_api_retry_after_capped_total", "counter"),
    _m("orchestra_otel_api_paused_seconds", "gauge"),
    _m("orchestra_otel_logs_exported_total", "counter", "sink"),
    _m("orchestra_otel_poll_overruns_total", "counter"),
    _m("orchestra_otel_poll_tick_seconds", "gauge"),
    _m("orchestra_otel_workflows_polled", "gauge", "state"),
    _m("orchestra_otel_next_poll_seconds", "gauge", "stat"),
    _m("orchestra_otel_log_export_failures_total", "counter", "sink"),
)

METRICS: Final = {m.name: m for m in WORKFLOW_METRICS + SELF_METRICS}

SCRAPE_LABELS: Final = frozenset({"job", "instance"})
HISTOGRAM_SUFFIXES: Final = ("_bucket", "_sum", "_count")
# prometheus_client may add `<name>_created` series to counters and histograms.
OPTIONAL_SUFFIXES: Final = ("_created",)


def series_names(metric: Metric) -> tuple[str, ...]:
    """The sample names a metric shows up as in PromQL and in a scrape."""
    if metric.kind == "histogram":
        return tuple(metric.name + suffix for suffix in HISTOGRAM_SUFFIXES)
    return (metric.name,)


# Every name a query may select.
METRIC_NAMES: Final = frozenset(name for m in METRICS.values() for name in series_names(m))


def family_of(sample_name: str) -> Metric | None:
    """The metric a scraped or queried sample name belongs to, or None."""
    if sample_name in METRICS:
        return METRICS[sample_name]
    for suffix in HISTOGRAM_SUFFIXES + OPTIONAL_SUFFIXES:
        if not sample_name.endswith(suffix):
            continue
        base = sample_name.removesuffix(suffix)
        for candidate in (base, base + "_total"):
            metric = METRICS.get(candidate)
            if metric is None:
                continue
            if suffix in OPTIONAL_SUFFIXES and metric.kind == "gauge":
                continue
            if suffix in HISTOGRAM_SUFFIXES and metric.kind != "histogram":
                continue
            return metric
    return None


def labels_of(sample_name: str) -> frozenset[str]:
    """Label names a series of that sample name may carry (scrape labels included)."""
    metric = family_of(sample_name)
    if metric is None:
        raise KeyError(sample_name)
    extra = {"le"} if sample_name.endswith("_bucket") else set()
    return metric.labels | SCRAPE_LABELS | extra
