"""One poll cycle: discover what is due, fetch only that, map it, export it, record it.

The cycle composes parts that each do one job: `WorkflowSet` (discovery and sharding),
`Collector` (due runs, steps, mapping), `Delivery` (spool to confirmed exports) and
`ProblemReporter` (bad records said once, counted). This module wires them and turns the
outcome of a poll into health and metrics (docs/design.md, "Metrics and health").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from exporter.collect import CollectObserver, Collector
from exporter.delivery import Delivery, DeliverySettings
from exporter.discovery import WorkflowSet
from exporter.errors import ApiError, StateError
from exporter.mapping.options import MappingOptions
from exporter.mapping.spans import RunSpans, WorkflowInfo
from exporter.problems import ProblemReporter
from exporter.results import PollResult
from exporter.schedule import PollSchedule, ScheduleSettings
from exporter.sink.base import SpanSink
from exporter.source.client import OrchestraClient
from exporter.source.history import POLL_MAX_PAGES, HistoryPaginator, StopReason
from exporter.source.models import Run
from exporter.state import Ledger
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)

_NS = 1_000_000_000
PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True)
class PollSettings:
    workflows: tuple[str, ...] = ()  # empty: every workflow the key can see
    lookback_s: float = 3600.0
    shard: tuple[int, int] = (0, 1)
    export_batch_size: int = 512
    retention_s: float = 7 * 86_400.0
    history_max_pages: int = POLL_MAX_PAGES
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)


class Poller:
    """The daemon's poll cycle, and the parts `backfill`, `export-run` and `check` reuse.

    Invariant: one poll at a time (the scheduler runs it with max_instances=1). Each part
    fails on its own: a workflow whose history cannot be read does not stop the others,
    and a refused export leaves everything spooled. Built by `app.open_runtime`.
    """

    def __init__(
        self,
        client: OrchestraClient,
        ledger: Ledger,
        sink: SpanSink,
        options: MappingOptions,
        settings: PollSettings,
        *,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.settings = settings
        self.telemetry = telemetry or Telemetry()
        self._clock = clock
        self.reporter = ProblemReporter(self.telemetry)
        self.workflows = WorkflowSet(
            client, self.reporter, selected=settings.workflows, shard=settings.shard
        )
        # Workflow counters exist at 0 from discovery on: increase() sees a first failure.
        self.workflows.listeners.append(
            lambda found: self.telemetry.discovered(found.values(), options)
        )
        self.paginator = self.history_paginator(settings.history_max_pages)
        self.schedule = PollSchedule(settings.schedule)
        self.telemetry.watch_schedule(self.schedule, clock)
        self._observer = _PollObserver(self.telemetry, options, self.schedule, clock)
        self.collector = Collector(
            client,
            ledger,
            options,
            self.paginator,
            self.reporter,
            lookback_s=settings.lookback_s,
            clock=clock,
            observer=self._observer,
        )
        self.delivery = Delivery(
            ledger,
            sink,
            options,
            self.telemetry,
            self.reporter,
            DeliverySettings(export_batch_size=settings.export_batch_size),
            clock=clock,
            monotonic=monotonic,
        )
        self._next_prune = 0.0

    def history_paginator(self, max_pages: int) -> HistoryPaginator:
        return HistoryPaginator(self.client, max_pages=max_pages, on_stop=self._paging_stopped)

    async def poll(self) -> PollResult:
        started = time.monotonic()
        result = PollResult()
        before = self.client.stats.total_requests
        try:
            await self._poll(result)
        except StateError as exc:
            result.note_error(exc)
        result.requests = self.client.stats.total_requests - before
        self._observe(result, time.monotonic() - started)
        return result

    async def _poll(self, result: PollResult) -> None:
        if not self.workflows.discovered:
            try:
                await self.workflows.refresh()
            except ApiError as exc:
                result.note_error(exc)
                self.workflows.use_configured()
        owned = self.workflows.workflows
        now = self._clock()
        due = [owned[wid] for wid in self.schedule.due(owned, now)]
        result.workflows = len(due)
        self._observer.listed_now.clear()
        captures = await self.collector.collect(due, result)
        for info in due:
            if info.workflow_id not in self._observer.listed_now:
                self.schedule.failed(info.workflow_id, now)
        self.delivery.capture(captures, result)
        await self.delivery.flush(result)
        self._prune_if_due()

    async def export_run(self, workflow_id: str, run_id: str) -> PollResult:
        """Export one run now, whatever the ledger says (backfill, debugging)."""
        result = PollResult(workflows=1, runs_seen=1)
        before = self.client.stats.total_requests
        if not self.workflows.discovered:
            try:
                await self.workflows.refresh()
            except ApiError as exc:
                self.reporter.once("discovery", f"workflow names unavailable: {exc}")
        info = self.workflows.info(workflow_id)
        try:
            run = await self.client.get_run(workflow_id, run_id)
            capture = await self.collector.collect_run(info, run, result, already=frozenset())
            self.delivery.capture([capture] if capture else [], result)
            await self.delivery.flush(result, force=True)
        except (ApiError, StateError) as exc:
            result.note_error(exc)
        result.requests = self.client.stats.total_requests - before
        return result

    def close(self) -> None:
        self.delivery.close()

    def _prune_if_due(self) -> None:
        """Forget runs finished longer ago than the retention, at most once an hour."""
        now = self._clock()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_S
        removed = self.ledger.prune(int((now - self.settings.retention_s) * _NS))
        if removed:
            log.info("ledger: forgot %d runs finished before the retention period", removed)

    def _paging_stopped(self, workflow_id: str, reason: StopReason, offset: int) -> None:
        self.telemetry.history_paging_stopped.labels(reason).inc()
        why = {
            "repeated": "a history page brought no run id not already seen (the API "
            "seems to ignore offset)",
            "capped": f"stopped at the cap of {offset} runs for one pass",
        }[reason]
        self.reporter.once(f"history of workflow {workflow_id}", f"paging stopped: {why}")

    def _observe(self, result: PollResult, duration: float) -> None:
        telemetry = self.telemetry
        telemetry.poll_duration.observe(duration)
        telemetry.polls.labels("ok" if result.ok else "error").inc()
        state = telemetry.state
        state.ledger_failing = result.ledger_failed
        if result.ledger_failed:
            return  # the spool could not be read: the last known backlog stands
        telemetry.pending_spans.set(result.pending_spans)
        state.pending_spans = result.pending_spans
        if not result.api_failed and not self.schedule.failing():
            state.last_poll_ok = self._clock()
            telemetry.last_successful_poll.set(state.last_poll_ok)
        if result.spans_exported or result.export_failed:
            state.export_failing = result.export_failed and result.pending_spans > 0
        if result.logs_exported or result.log_export_failed:
            state.logs_failing = result.log_export_failed and result.pending_logs > 0
        state.pending_logs = result.pending_logs


class _PollObserver(CollectObserver):
    """What each workflow's listing showed: its next poll, its runs in flight, and zero
    series for nodes discovery did not know."""

    def __init__(
        self,
        telemetry: Telemetry,
        options: MappingOptions,
        schedule: PollSchedule,
        clock: Callable[[], float],
    ) -> None:
        self._telemetry = telemetry
        self._options = options
        self._schedule = schedule
        self._clock = clock
        self.listed_now: set[str] = set()  # workflows listed in the poll under way

    def listed(self, info: WorkflowInfo, due: Sequence[Run]) -> None:
        self.listed_now.add(info.workflow_id)
        in_flight = self._telemetry.in_flight.observe(info, due, self._options)
        self._schedule.polled(
            info.workflow_id, self._clock(), in_flight=in_flight > 0, new_runs=bool(due)
        )

    def mapped(self, spans: RunSpans) -> None:
        self._telemetry.book.seed_spans(spans.all_spans())
