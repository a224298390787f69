"""The daemon's own metrics (Prometheus exposition) and the health/readiness verdicts.

One registry per process object (not prometheus_client's global one), so tests and the
demo can run several daemons in one process. API request counts are read from the
client's own counters at scrape time rather than counted twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.mapping.options import MappingOptions
from exporter.mapping.spans import WorkflowInfo
from exporter.schedule import PollSchedule
from exporter.source.client import ClientStats
from exporter.workflow_metrics import (
    BookCollector,
    InFlightCollector,
    MetricBook,
    RunsInFlight,
    Sample,
)

PREFIX: Final = "orchestra_otel"
PENDING_SPANS_METRIC: Final = "orchestra_otel.pending_spans"  # its OTLP name
POLL_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Telemetry:
    """The process's own metrics (orchestra_otel_*) and the workflow metrics' registry.

    Built once per process by `app.open_runtime`; the poll-cycle parts write to it, the
    /metrics handler and the OTLP metrics reader read it.
    """

    def __init__(self, max_workflows: int = 200, max_nodes: int = 100) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.book = MetricBook(max_workflows, max_nodes)
        self.registry.register(BookCollector(self.book))
        self.in_flight = RunsInFlight(self.book)
        self.registry.register(InFlightCollector(self.in_flight))
        counter, gauge = self._counter, self._gauge
        self.polls = counter("polls", "Polls run, by result", "result")
        self.poll_duration = Histogram(
            f"{PREFIX}_poll_duration_seconds",
            "Duration of one poll",
            buckets=POLL_BUCKETS,
            registry=self.registry,
        )
        self.last_successful_poll = gauge(
            "last_successful_poll_timestamp_seconds",
            "Unix time of the last poll in which the API answered every request",
        )
        self.spans_exported = counter("spans_exported", "Spans the sink confirmed", "sink")
        self.spans_failed = counter(
            "spans_failed", "Spans in export requests the sink refused", "sink"
        )
        self.logs_exported = counter(
            "logs_exported", "Failure log records the sink confirmed", "sink"
        )
        self.log_export_failures = counter(
            "log_export_failures", "Log export requests the sink did not confirm", "sink"
        )
        self.export_lag = Histogram(
            f"{PREFIX}_export_lag_seconds",
            "Time from a span's end to the sink's confirmation",
            buckets=(1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 21600, 86400),
            registry=self.registry,
        )
        self.export_failures = counter(
            "export_failures", "Export requests the sink did not confirm", "sink"
        )
        self.pending_spans = gauge(
            "pending_spans", "Spans spooled in the ledger, waiting for the sink"
        )
        self.skipped_records = counter(
            "skipped_records", "Records that could not be used (logged once each)", "kind"
        )
        self.unpriced_steps = counter(
            "unpriced_model_steps",
            "Model steps exported without cost: ORCHESTRA_PRICES has no price for the model",
            "model",
        )
        self.poll_overruns = counter(
            "poll_overruns", "Poll ticks skipped because the poll before was still running"
        )
        self.poll_tick = gauge(
            "poll_tick_seconds",
            "How often the daemon wakes to poll what is due (compare with the poll duration)",
        )
        self.history_paging_stopped = counter(
            "history_paging_stopped",
            "History passes ended early: a page repeated runs already seen, or the page cap",
            "reason",
        )
        self.api_auth_failing = gauge(
            "api_auth_failing", "1 while the API rejects the key (401/403)"
        )
        self.state = HealthState()
        self.otlp: MetricRecorder | None = None  # set when metrics are pushed over OTLP
        self._schedule: _ScheduleCollector | None = None

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(f"{PREFIX}_{name}", documentation, labels, registry=self.registry)

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(f"{PREFIX}_{name}", documentation, registry=self.registry)

    def watch_schedule(self, schedule: PollSchedule, clock: Callable[[], float]) -> None:
        """The adaptive poll schedule, read at scrape time; a newer poller's replaces it
        (a backfill that resumes builds a second poller on the same process metrics)."""
        if self._schedule is not None:
            self.registry.unregister(self._schedule)
        self._schedule = _ScheduleCollector(schedule, clock)
        self.registry.register(self._schedule)

    def watch_client(
        self, stats: Callable[[], ClientStats], paused: Callable[[], float] = lambda: 0.0
    ) -> None:
        """Read the client's counters, and its Retry-After pause, at scrape/probe time."""
        self.registry.register(_ClientCollector(stats, paused))
        self.state.api_paused = paused

    def discovered(self, workflows: Iterable[WorkflowInfo], options: MappingOptions) -> None:
        """Discovery's view: zero series for every workflow and graph node this replica owns
        (so that alert rules see their first failure), and no in-flight state of the others.
        """
        owned = list(workflows)
        for info in owned:
            self.book.seed_workflow(info, options)
        self.in_flight.retain({info.workflow_id for info in owned})


class MetricRecorder(Protocol):
    def record(self, samples: Sequence[Sample]) -> None: ...

    def shutdown(self) -> None: ...


class _ClientCollector(Collector):
    def __init__(self, stats: Callable[[], ClientStats], paused: Callable[[], float]) -> None:
        self._stats = stats
        self._paused = paused

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        requests = CounterMetricFamily(
            f"{PREFIX}_api_requests",
            "Orchestra API requests, by endpoint and outcome (HTTP status or error kind)",
            labels=["endpoint", "outcome"],
        )
        for (endpoint, outcome), count in sorted(stats.requests.items()):
            requests.add_metric([endpoint, outcome], count)
        yield requests
        retries = CounterMetricFamily(
            f"{PREFIX}_api_retries", "Orchestra API requests retried", labels=["endpoint"]
        )
        for endpoint, count in sorted(stats.retries.items()):
            retries.add_metric([endpoint], count)
        yield retries
        yield CounterMetricFamily(
            f"{PREFIX}_api_rate_limited", "429 answers from the API", value=stats.rate_limited
        )
        yield CounterMetricFamily(
            f"{PREFIX}_api_retry_after",
            "Retry-After answers that paused every request of the client",
            value=stats.retry_after_pauses,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_api_retry_after_capped",
            "Retry-After answers longer than ORCHESTRA_API_MAX_RETRY_AFTER, cut to it",
            value=stats.retry_after_capped,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_api_paused_seconds",
            "Seconds the client still waits before its next request (a Retry-After)",
            value=self._paused(),
        )


class _ScheduleCollector(Collector):
    def __init__(self, schedule: PollSchedule, clock: Callable[[], float]) -> None:
        self._schedule = schedule
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        states = GaugeMetricFamily(
            f"{PREFIX}_workflows_polled",
            "Owned workflows by poll state: in_flight (polled at ORCHESTRA_POLL_INTERVAL_MIN), "
            "active (ORCHESTRA_POLL_INTERVAL) or idle (backing off to _MAX)",
            labels=["state"],
        )
        for state, count in self._schedule.states().items():
            states.add_metric([state], count)
        yield states
        due_in = self._schedule.due_in(self._clock())
        spread = GaugeMetricFamily(
            f"{PREFIX}_next_poll_seconds",
            "Seconds until the next poll of the owned workflows: the soonest, the median "
            "and the latest",
            labels=["stat"],
        )
        if due_in:
            for stat, value in (
                ("min", due_in[0]),
                ("median", due_in[len(due_in) // 2]),
                ("max", due_in[-1]),
            ):
                spread.add_metric([stat], value)
        yield spread


@dataclass
class HealthState:
    """What /readyz judges by; written by the poller, read by the HTTP thread."""

    last_poll_ok: float = 0.0  # time.time() of the last poll the API fully answered
    export_failing: bool = False
    logs_failing: bool = False
    pending_logs: int = 0
    auth_failing: bool = False
    ledger_failing: bool = False
    pending_spans: int = 0
    api_paused: Callable[[], float] = lambda: 0.0  # seconds of Retry-After left

    def readiness(self, poll_interval: float, now: float | None = None) -> tuple[bool, list[str]]:
        now = time.time() if now is None else now
        stale_after = max(3 * poll_interval, 60.0)
        reasons = []
        if self.auth_failing:
            reasons.append("the Orchestra API rejects the API key (401/403)")
        if not self.last_poll_ok:
            reasons.append("no successful poll yet")
        elif now - self.last_poll_ok > stale_after:
            age = now - self.last_poll_ok
            reasons.append(f"no successful poll for {age:.0f}s (limit {stale_after:.0f}s)")
        if self.ledger_failing:
            reasons.append("the state file cannot be read or written (see the log)")
        paused = self.api_paused()
        if paused > 0:
            reasons.append(f"the Orchestra API asked for a pause (Retry-After): {paused:.0f}s left")
        if self.export_failing:
            reasons.append(f"the span export is failing; {self.pending_spans} spans spooled")
        if self.logs_failing:
            reasons.append(f"the log export is failing; {self.pending_logs} log records spooled")
        return not reasons, reasons
