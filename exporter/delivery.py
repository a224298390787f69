"""The spool -> confirmed exports, with the workflow metrics counted on confirmation.

Mapped spans (and failure logs) enter the ledger's spool with the capture that marks
their steps seen, as the OTLP bytes they are sent as, and leave it only once the sink
confirmed them, so an outage of the backend costs neither API requests nor memory, and
loses nothing (docs/design.md, "Delivery"). A request is framed around spooled bytes,
never decoded and encoded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from exporter.errors import ExportError, StateError
from exporter.mapping.options import MappingOptions
from exporter.problems import ProblemReporter
from exporter.results import PollResult
from exporter.sink.base import SpanSink
from exporter.sink.encoding import LOGS, TRACES, Framer, Signal
from exporter.spool import legacy_outgoing
from exporter.state import Capture, Ledger, Outgoing, Spooled
from exporter.telemetry import Telemetry
from exporter.workflow_metrics import SpoolFacts, decode_facts

_NS = 1_000_000_000
SIGNALS: tuple[Signal, ...] = (TRACES, LOGS)
# skipped_records{kind} of a spooled row that cannot be read ("spooled_span" since schema 1).
_UNREADABLE_KIND: Final = {TRACES: "spooled_span", LOGS: "spooled_log"}


@dataclass(frozen=True)
class DeliverySettings:
    export_batch_size: int = 512
    # Keeps each OTLP request well under the 4 MiB that gRPC receivers accept by default.
    export_batch_bytes: int = 3 * 1024 * 1024
    # After a failed export, wait 5, 10, 20 ... seconds (capped) before the next attempt;
    # polling goes on meanwhile and the records wait in the spool.
    backoff_base_s: float = 5.0
    backoff_cap_s: float = 60.0


@dataclass
class _Backoff:
    """One signal's export pause: spans and logs may go to different endpoints."""

    failures: int = 0
    resume_at: float = 0.0  # monotonic time before which no export is tried


@dataclass
class _Batch:
    ids: list[int] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    facts: list[SpoolFacts] = field(default_factory=list)
    unreadable: int = 0


class Delivery:
    """Moves records from the spool to the sink, oldest first, in bounded batches.

    Invariants: a spooled record is deleted, and counted in the workflow metrics, in the
    one transaction that follows the sink's confirmation; after a refusal, exports of that
    signal pause with capped exponential backoff (polling goes on). Called by the poll
    cycle, `backfill` and `export-run`.
    """

    def __init__(
        self,
        ledger: Ledger,
        sink: SpanSink,
        options: MappingOptions,
        telemetry: Telemetry,
        reporter: ProblemReporter,
        settings: DeliverySettings,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger = ledger
        self._sink = sink
        self._framer = Framer.of(options.resource, options.scope)
        self._telemetry = telemetry
        self._reporter = reporter
        self._settings = settings
        self._clock = clock
        self._monotonic = monotonic  # the backoff's clock: wall-clock jumps must not move it
        self._worker = ExportWorker()
        self._backoff = {signal: _Backoff() for signal in SIGNALS}
        # The totals confirmations add to: persisted ones first (older versions' labels
        # upgraded), so a restart neither loses nor double-counts.
        telemetry.book.load(
            ledger.metric_series(), {"gen_ai_provider_name": options.genai_provider}
        )

    def capture(self, captures: Sequence[Capture], result: PollResult) -> None:
        if captures:
            self._ledger.capture(captures, now_ns=int(self._clock() * _NS))
            result.runs_completed += sum(1 for item in captures if item.run_done)

    async def flush(self, result: PollResult, *, force: bool = False) -> None:
        """Send the spool until it is empty or refused (`force`: even while backing off)."""
        for signal in SIGNALS:
            wait = self._backoff[signal].resume_at - self._monotonic()
            if wait > 0 and not force:
                what = "exports" if signal == TRACES else "log exports"
                result.errors.append(f"{self._sink.name}: {what} paused {wait:.0f}s more")
            else:
                await self._send_spool(signal, result)
        result.pending_spans = self._ledger.pending_count(TRACES)
        result.pending_logs = self._ledger.pending_count(LOGS)

    def close(self) -> None:
        self._worker.close()

    async def _send_spool(self, signal: Signal, result: PollResult) -> None:
        after = 0
        while True:
            rows = self._ledger.spooled(self._settings.export_batch_size, after, signal)
            if not rows:
                return
            batch = self._batch(rows, signal)
            after = batch.ids[-1]
            count = len(batch.payloads)
            if count and not await self._send(signal, self._framer.request(batch.payloads), count):
                self._export_failed(signal, result, count)
                return
            self._backoff[signal].failures = 0
            self._confirm(signal, batch)
            if signal == TRACES:
                result.spans_exported += count
            else:
                result.logs_exported += count
            self._reporter.skipped(_UNREADABLE_KIND[signal], batch.unreadable)

    def _batch(self, rows: Sequence[Spooled], signal: Signal) -> _Batch:
        """The longest run of rows within the byte budget (always at least one row)."""
        batch, size = _Batch(), 0
        for row in rows:
            outgoing = self._readable(row, signal)
            if outgoing is not None:
                size += len(outgoing.payload)
                if size > self._settings.export_batch_bytes and batch.ids:
                    break
                batch.payloads.append(outgoing.payload)
                batch.facts.append(self._facts(row, outgoing.samples))
            else:
                batch.unreadable += 1  # dropped with the batch: it can never be sent
            batch.ids.append(row.id)
        return batch

    def _facts(self, row: Spooled, samples: str) -> SpoolFacts:
        """The row's metric samples; unreadable ones are dropped, the record still goes."""
        try:
            return decode_facts(samples)
        except (ValueError, KeyError, TypeError, IndexError):
            self._reporter.once(
                "metric samples of spooled records",
                "unreadable: the records are sent, their samples are not counted",
            )
            self._reporter.skipped("spooled_samples", 1)
            return SpoolFacts([])

    def _readable(self, row: Spooled, signal: Signal) -> Outgoing | None:
        if isinstance(row.payload, bytes):
            return Outgoing(signal, row.payload, row.samples or "")
        try:
            return legacy_outgoing(row.payload)  # spooled as JSON before schema 4
        except StateError as exc:
            self._reporter.once(f"spooled span #{row.id} of run {row.run_id}", str(exc))
            return None

    async def _send(self, signal: Signal, request: bytes, count: int) -> bool:
        """The sink's confirmation. A sink that raises confirmed nothing: a refusal, with
        its backoff, rather than a poll that fails as a whole every interval."""
        try:
            return await self._worker.run(lambda: self._sink.send(signal, request, count))
        except Exception as exc:
            reason = f"export raised {type(exc).__name__}: {exc}"
            self._reporter.once(f"span sink {self._sink.name}", reason)
            return False

    def _confirm(self, signal: Signal, batch: _Batch) -> None:
        now = self._clock()
        telemetry = self._telemetry
        samples = [sample for facts in batch.facts for sample in facts.samples]
        self._ledger.confirm(batch.ids, telemetry.book.apply(samples, now))
        if telemetry.otlp is not None:
            telemetry.otlp.record(samples)
        exported = telemetry.spans_exported if signal == TRACES else telemetry.logs_exported
        exported.labels(self._sink.name).inc(len(batch.payloads))
        if signal == TRACES:
            for facts in batch.facts:
                if facts.end_ns is not None:
                    telemetry.export_lag.observe(max(0.0, now - facts.end_ns / _NS))

    def _export_failed(self, signal: Signal, result: PollResult, count: int) -> None:
        backoff = self._backoff[signal]
        backoff.failures += 1
        if signal == TRACES:
            result.export_failed = True
            self._telemetry.export_failures.labels(self._sink.name).inc()
            self._telemetry.spans_failed.labels(self._sink.name).inc(count)
        else:
            result.log_export_failed = True
            self._telemetry.log_export_failures.labels(self._sink.name).inc()
        delay = min(
            self._settings.backoff_cap_s,
            self._settings.backoff_base_s * 2 ** min(backoff.failures - 1, 16),
        )
        backoff.resume_at = self._monotonic() + delay
        what = "span" if signal == TRACES else "log record"
        result.note_error(
            ExportError(
                f"{self._sink.name}: the {what} export was not confirmed; "
                f"{what}s stay spooled, next attempt in {delay:.0f}s"
            )
        )


class ExportWorker:
    """One long-lived thread for the sink's blocking exports.

    One thread, however many exports: a flood of connections or a slow backend cannot
    make the daemon start threads. A daemon thread, because an export hanging until its
    OTLP timeout must not hold SIGTERM past the shutdown grace; its spans stay spooled
    and are sent again on the next start.
    """

    _STOP = object()

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, function: Callable[[], bool]) -> bool:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name="orchestra-otel-export", daemon=True
            )
            self._thread.start()
        self._jobs.put((function, loop, done))
        return await done

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(self._STOP)
            self._thread = None

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not self._STOP:
            function, loop, done = job
            outcome: tuple[bool | None, BaseException | None]
            try:
                outcome = (bool(function()), None)
            except BaseException as exc:  # handed to the awaiting coroutine
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, done, *outcome)


def _settle(done: asyncio.Future[bool], result: bool | None, error: BaseException | None) -> None:
    if done.done():  # cancelled at shutdown
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(bool(result))
