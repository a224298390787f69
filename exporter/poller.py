"""One poll cycle: discover what is due, fetch only that, map it, export it, record it.

The request budget (DESIGN.md section 3) is kept here: per poll one run-history call
per workflow (further pages only while they still hold unseen runs), one steps call per
run that is in flight or just ended, and none for runs already captured. Mapped spans go
to the ledger's spool first and leave it only when the sink confirmed them, so an outage
of the backend costs neither API requests nor memory, and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from opentelemetry.sdk.trace import ReadableSpan

from exporter.errors import (
    ApiAuthError,
    ApiError,
    ApiNotFoundError,
    ExportError,
    MappingError,
    StateError,
)
from exporter.mapping.graph import graph_from_api
from exporter.mapping.spans import MappingOptions, Problem, RunSpans, WorkflowInfo, map_run
from exporter.mapping.timeparse import parse_optional_timestamp_ns
from exporter.sink.base import SpanSink
from exporter.source.client import MAX_PAGE_SIZE, OrchestraClient
from exporter.source.models import RejectedRecord, Run, Workflow
from exporter.spool import decode_span, encode_span
from exporter.state import Capture, Ledger, Spooled
from exporter.telemetry import Telemetry
from exporter.workflow_metrics import samples_of

log = logging.getLogger(__name__)

_NS = 1_000_000_000
_T = TypeVar("_T")


@dataclass(frozen=True)
class PollSettings:
    workflows: tuple[str, ...] = ()  # empty: every workflow the key can see
    lookback_s: float = 3600.0
    shard: tuple[int, int] = (0, 1)
    export_batch_size: int = 512
    # Keeps each OTLP request well under the 4 MiB that gRPC receivers accept by default
    # (spooled JSON is larger than the protobuf it becomes, so this is conservative).
    export_batch_bytes: int = 3 * 1024 * 1024
    retention_s: float = 7 * 86_400.0
    # After a failed export, wait 5, 10, 20 ... seconds (capped) before the next attempt;
    # polling goes on meanwhile and the spans wait in the spool.
    export_backoff_base_s: float = 5.0
    export_backoff_cap_s: float = 60.0


@dataclass
class PollResult:
    workflows: int = 0
    runs_seen: int = 0
    runs_completed: int = 0
    spans_exported: int = 0
    requests: int = 0
    runs_in_flight: int = 0
    pending_spans: int = 0
    errors: list[str] = field(default_factory=list)
    auth_failed: bool = False
    api_failed: bool = False
    export_failed: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        text = (
            f"poll: {self.workflows} workflows, {self.runs_seen} runs seen, "
            f"{self.runs_completed} completed, {self.spans_exported} spans exported, "
            f"{self.requests} requests, backlog {self.runs_in_flight} runs in flight"
            f" / {self.pending_spans} spans unsent"
        )
        if self.errors:
            text += f", {len(self.errors)} errors"
        return text


def owns_workflow(workflow_id: str, shard: tuple[int, int]) -> bool:
    """Stable across processes and machines (unlike hash(), which is salted per process)."""
    index, count = shard
    if count <= 1:
        return True
    digest = hashlib.sha256(workflow_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count == index


class Poller:
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
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.sink = sink
        self.options = options
        self.settings = settings
        self.clock = clock
        self.telemetry = telemetry or Telemetry()
        self.telemetry.book.load(ledger.metric_series())
        self.workflows: dict[str, WorkflowInfo] = {}
        self.discovered = False
        self._reported: set[tuple[str, str]] = set()
        self.skipped_records = 0
        self._export_failures = 0
        self._export_resume_at = 0.0  # time.monotonic() before which no export is tried
        self._next_prune = 0.0

    # --- discovery ---------------------------------------------------------------------

    async def discover(self) -> None:
        """Refresh names and graphs; with ORCHESTRA_WORKFLOWS=all, also the workflow set."""
        listed = await self.client.list_workflows()
        found = {wf.workflow_id: _workflow_info(wf) for wf in listed}
        wanted = self.settings.workflows or tuple(found)
        missing = [wid for wid in self.settings.workflows if wid not in found]
        if missing:
            self._report_once(
                "discovery", f"workflow(s) not visible to this API key: {', '.join(missing)}"
            )
        self.workflows = {
            wid: found.get(wid, WorkflowInfo(wid))
            for wid in wanted
            if owns_workflow(wid, self.settings.shard)
        }
        self.discovered = True
        self.telemetry.discovered(self.workflows.values(), self.options)
        log.debug("discovery: %d workflows owned by this replica", len(self.workflows))

    def _fallback_workflows(self) -> None:
        """Without discovery we can still poll explicitly configured workflows."""
        if not self.workflows and self.settings.workflows:
            self.workflows = {
                wid: WorkflowInfo(wid)
                for wid in self.settings.workflows
                if owns_workflow(wid, self.settings.shard)
            }

    # --- the poll ----------------------------------------------------------------------

    async def poll(self) -> PollResult:
        started = time.monotonic()
        result = await self._poll()
        self._observe(result, time.monotonic() - started)
        return result

    async def _poll(self) -> PollResult:
        result = PollResult()
        before = self.client.stats.total_requests
        if not self.discovered:
            try:
                await self.discover()
            except ApiError as exc:
                self._note_error(result, exc)
                self._fallback_workflows()
        result.workflows = len(self.workflows)
        gathered = await asyncio.gather(
            *(self._collect_workflow(info, result) for info in self.workflows.values()),
            return_exceptions=True,
        )
        captures: list[Capture] = []
        for item in gathered:
            if isinstance(item, BaseException):
                if not isinstance(item, Exception):
                    raise item
                self._note_error(result, item)
            else:
                captures.extend(item)
        self.capture(captures, result)
        await self.flush(result)
        self._prune_if_due()
        result.requests = self.client.stats.total_requests - before
        return result

    async def export_run(self, workflow_id: str, run_id: str) -> PollResult:
        """Export one run now, whatever the ledger says (backfill, debugging)."""
        result = PollResult(workflows=1)
        before = self.client.stats.total_requests
        if not self.discovered:
            try:
                await self.discover()
            except ApiError as exc:
                log.warning("workflow names unavailable: %s", exc)
        info = self.workflows.get(workflow_id) or WorkflowInfo(workflow_id)
        try:
            run = await self.client.get_run(workflow_id, run_id)
            item = await self._collect_run(info, run, result, already=frozenset())
        except ApiError as exc:
            self._note_error(result, exc)
            item = None
        result.runs_seen = 1
        self.capture([item] if item else [], result)
        await self.flush(result, force=True)
        result.requests = self.client.stats.total_requests - before
        return result

    async def _collect_workflow(self, info: WorkflowInfo, result: PollResult) -> list[Capture]:
        now_ns = int(self.clock() * _NS)
        since = self.ledger.workflow_since(info.workflow_id)
        if since is None:
            first_since = now_ns - int(self.settings.lookback_s * _NS)
            since = self.ledger.register_workflow(
                info.workflow_id, since_ns=first_since, now_ns=now_ns
            )
        due = await self._due_runs(info.workflow_id, since, now_ns)
        self.telemetry.in_flight.observe(info, due, self.options)
        result.runs_seen += len(due)
        collected = await asyncio.gather(
            *(self.collect_due(info, run, result) for run in due), return_exceptions=True
        )
        outgoing = []
        for item in collected:
            if isinstance(item, BaseException):
                if not isinstance(item, Exception):
                    raise item
                self._note_error(result, item)
            elif item is not None:
                outgoing.append(item)
        return outgoing

    async def _due_runs(self, workflow_id: str, since_ns: int, now_ns: int) -> list[Run]:
        """Runs of the history that are unseen or unfinished, paging only as far as needed."""
        due: dict[str, Run] = {}
        offset = 0
        while True:
            page = await self.client.list_runs(workflow_id, limit=MAX_PAGE_SIZE, offset=offset)
            states = self.ledger.run_states(workflow_id, [run.id for run in page])
            oldest_unseen = False
            for run in page:
                state = states.get(run.id)
                oldest_unseen = False
                if state is not None and state.done:
                    continue
                if state is None:
                    if _ended_before(run, since_ns):
                        continue
                    oldest_unseen = True
                due.setdefault(run.id, run)
            # Newest first: the next page can hold unseen runs only if this page's oldest
            # run is unseen too (the runs before it were seen in earlier polls).
            if len(page) < MAX_PAGE_SIZE or not oldest_unseen:
                break
            offset += len(page)
        self.ledger.track_runs(workflow_id, [(r.id, r.status) for r in due.values()], now_ns)
        for run_id in self.ledger.open_runs(workflow_id):
            if run_id not in due:  # fell off the history pages while still open
                try:
                    due[run_id] = await self.client.get_run(workflow_id, run_id)
                except ApiNotFoundError:
                    # Gone from the API: close it, or it would be asked for at every poll.
                    self._report_once(f"run {run_id}", "tracked run no longer exists (404)")
                    gone = Capture(workflow_id, run_id, None, {}, None, run_done=True)
                    self.ledger.capture([gone], now_ns)
        return list(due.values())

    async def collect_due(self, info: WorkflowInfo, run: Run, result: PollResult) -> Capture | None:
        """Fetch the steps of a run and map what the ledger has not captured yet."""
        already = self.ledger.captured_steps(run.id)
        return await self._collect_run(info, run, result, already=already)

    async def _collect_run(
        self,
        info: WorkflowInfo,
        run: Run,
        result: PollResult,
        *,
        already: frozenset[str] | set[str],
    ) -> Capture | None:
        steps = await self.client.get_steps(info.workflow_id, run.id)
        mapped = map_run(info, run, steps, self.options, already_exported=already)
        self.telemetry.book.seed_spans(mapped.all_spans())
        self._report_problems(info.workflow_id, mapped.problems)
        if not mapped.run_terminal:
            result.runs_in_flight += 1
        return _capture_of(info.workflow_id, run, mapped)

    # --- spool and export -------------------------------------------------------------

    def capture(self, captures: Sequence[Capture], result: PollResult) -> None:
        if not captures:
            return
        self.ledger.capture(captures, now_ns=int(self.clock() * _NS))
        result.runs_completed += sum(1 for item in captures if item.run_done)

    async def flush(self, result: PollResult, *, force: bool = False) -> None:
        """Send the spool, oldest first, in bounded batches, until empty or refused.

        After a refusal, exports pause with capped exponential backoff (unless `force`):
        a backend that is down is not hammered, and the spool keeps everything meanwhile.
        """
        wait = self._export_resume_at - time.monotonic()
        if wait > 0 and not force:
            result.errors.append(f"{self.sink.name}: exports paused {wait:.0f}s more")
        else:
            await self._send_spool(result)
        result.pending_spans = self.ledger.pending_count()

    async def _send_spool(self, result: PollResult) -> None:
        after = 0
        while True:
            batch = _within_bytes(
                self.ledger.spooled(self.settings.export_batch_size, after_id=after),
                self.settings.export_batch_bytes,
            )
            if not batch:
                return
            after = batch[-1].id
            spans, unreadable = self._decode(batch)
            if spans and not await in_daemon_thread(self.sink.export, spans):
                self._export_failed(result, len(spans))
                return
            self._export_failures = 0
            self._confirm(batch, spans)
            result.spans_exported += len(spans)
            self._count_skipped("spooled_span", unreadable)

    def _confirm(self, batch: Sequence[Spooled], spans: Sequence[ReadableSpan]) -> None:
        now = self.clock()
        telemetry = self.telemetry
        samples = [sample for span in spans for sample in samples_of(span)]
        self.ledger.confirm([item.id for item in batch], telemetry.book.apply(samples, now))
        if telemetry.otlp is not None:
            telemetry.otlp.record(samples)
        telemetry.spans_exported.labels(self.sink.name).inc(len(spans))
        for span in spans:
            telemetry.export_lag.observe(max(0.0, now - (span.end_time or 0) / _NS))

    def _decode(self, batch: Sequence[Spooled]) -> tuple[list[ReadableSpan], int]:
        spans, unreadable = [], 0
        for item in batch:
            try:
                spans.append(decode_span(item.payload, self.options.resource, self.options.scope))
            except StateError as exc:
                unreadable += 1  # dropped with the batch: it can never be sent
                self._report_once(f"spooled span #{item.id} of run {item.run_id}", str(exc))
        return spans, unreadable

    def _export_failed(self, result: PollResult, span_count: int) -> None:
        self._export_failures += 1
        result.export_failed = True
        self.telemetry.export_failures.labels(self.sink.name).inc()
        self.telemetry.spans_failed.labels(self.sink.name).inc(span_count)
        delay = min(
            self.settings.export_backoff_cap_s,
            self.settings.export_backoff_base_s * 2 ** min(self._export_failures - 1, 16),
        )
        self._export_resume_at = time.monotonic() + delay
        self._note_error(
            result,
            ExportError(
                f"{self.sink.name}: the span export was not confirmed; "
                f"spans stay spooled, next attempt in {delay:.0f}s"
            ),
        )

    def _prune_if_due(self) -> None:
        """Forget runs finished longer ago than the retention, at most once an hour."""
        now = self.clock()
        if now < self._next_prune:
            return
        self._next_prune = now + 3600
        cutoff_ns = int((now - self.settings.retention_s) * _NS)
        removed = self.ledger.prune(cutoff_ns)
        if removed:
            log.info("ledger: forgot %d runs finished before the retention period", removed)

    # --- reporting ---------------------------------------------------------------------

    def _observe(self, result: PollResult, duration: float) -> None:
        telemetry = self.telemetry
        telemetry.poll_duration.observe(duration)
        telemetry.polls.labels("ok" if result.ok else "error").inc()
        telemetry.pending_spans.set(result.pending_spans)
        state = telemetry.state
        state.pending_spans = result.pending_spans
        if not result.api_failed:
            state.last_poll_ok = self.clock()
            telemetry.last_successful_poll.set(state.last_poll_ok)
        if result.spans_exported or result.export_failed:
            state.export_failing = result.export_failed and result.pending_spans > 0

    def _count_skipped(self, kind: str, count: int = 1) -> None:
        if count:
            self.skipped_records += count
            self.telemetry.skipped_records.labels(kind).inc(count)

    def report_rejected(self, endpoint: str, record: RejectedRecord) -> None:
        """A record of an API answer failed validation: logged once, counted, skipped."""
        self._count_skipped(f"{endpoint}_record")
        self._report_once(f"{endpoint} record #{record.index}", f"skipped: {record.reason}")

    def _note_error(self, result: PollResult, exc: BaseException) -> None:
        if isinstance(exc, ApiError):
            result.api_failed = True
        if isinstance(exc, ApiAuthError):
            result.auth_failed = True
        result.errors.append(str(exc))
        log.debug("poll error", exc_info=exc)

    def _report_problems(self, workflow_id: str, problems: Sequence[Problem]) -> None:
        for problem in problems:
            if problem.skipped:
                self._count_skipped(problem.record.split(" ", 1)[0])
            action = "skipped" if problem.skipped else "exported with what is valid"
            self._report_once(problem.record, f"{problem.reason} ({action}; {workflow_id})")

    def _report_once(self, record: str, reason: str) -> None:
        key = (record, reason)
        if key in self._reported:
            return
        if len(self._reported) > 10_000:  # bounded: a flood of bad records must not grow RAM
            self._reported.clear()
        self._reported.add(key)
        log.warning("%s: %s", record, reason)


async def in_daemon_thread(function: Callable[[_T], bool], argument: _T) -> bool:
    """Run a blocking export off the event loop, in a thread nobody waits for at exit.

    asyncio.to_thread's pool is joined when the loop closes, so an export hanging until
    its OTLP timeout would hold SIGTERM past the shutdown grace; a daemon thread does not.
    Its spans stay spooled and are sent again on the next start.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()

    def settle(result: bool | None, error: BaseException | None) -> None:
        if done.done():  # cancelled at shutdown
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(bool(result))

    def work() -> None:
        result, error = None, None
        try:
            result = function(argument)
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="orchestra-otel-export", daemon=True).start()
    return await done


def _within_bytes(batch: list[Spooled], budget: int) -> list[Spooled]:
    """The longest prefix within the byte budget (always at least one span)."""
    total = 0
    for index, item in enumerate(batch):
        total += len(item.payload)
        if total > budget and index > 0:
            return batch[:index]
    return batch


def _workflow_info(workflow: Workflow) -> WorkflowInfo:
    return WorkflowInfo(workflow.workflow_id, workflow.name, graph_from_api(workflow.graph))


def _ended_before(run: Run, since_ns: int) -> bool:
    """True for runs that finished before this workflow's export window opened."""
    try:
        end = parse_optional_timestamp_ns(run.end_time)
    except MappingError:
        return False  # cannot tell: export rather than lose it
    return end is not None and end < since_ns


def _capture_of(workflow_id: str, run: Run, mapped: RunSpans) -> Capture | None:
    # A terminal run whose root could not be built is done all the same: polling it
    # again would only repeat the same problem.
    if not mapped.steps and mapped.root is None and not mapped.run_terminal:
        return None
    return Capture(
        workflow_id=workflow_id,
        run_id=run.id,
        status=run.status,
        step_spans={step_id: encode_span(span) for step_id, span in mapped.steps.items()},
        root_span=encode_span(mapped.root) if mapped.root is not None else None,
        run_done=mapped.run_terminal,
    )
