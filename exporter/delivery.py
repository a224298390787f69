"""The spool -> confirmed exports, with the workflow metrics counted on confirmation.

Mapped spans enter the ledger's spool with the capture that marks their steps seen, and
leave it only once the sink confirmed them, so an outage of the backend costs neither API
requests nor memory, and loses nothing (docs/design.md, "Delivery").
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from exporter.errors import ExportError, StateError
from exporter.mapping.options import MappingOptions
from exporter.problems import ProblemReporter
from exporter.results import PollResult
from exporter.sink.base import SpanSink
from exporter.spool import decode_span
from exporter.state import Capture, Ledger, Spooled
from exporter.telemetry import Telemetry
from exporter.workflow_metrics import samples_of

_NS = 1_000_000_000


@dataclass(frozen=True)
class DeliverySettings:
    export_batch_size: int = 512
    # Keeps each OTLP request well under the 4 MiB that gRPC receivers accept by default
    # (spooled JSON is larger than the protobuf it becomes, so this is conservative).
    export_batch_bytes: int = 3 * 1024 * 1024
    # After a failed export, wait 5, 10, 20 ... seconds (capped) before the next attempt;
    # polling goes on meanwhile and the spans wait in the spool.
    backoff_base_s: float = 5.0
    backoff_cap_s: float = 60.0


class Delivery:
    """Moves spans from the spool to the sink, oldest first, in bounded batches.

    Invariants: a spooled span is deleted, and counted in the workflow metrics, in the one
    transaction that follows the sink's confirmation; after a refusal, exports pause with
    capped exponential backoff (polling goes on). Called by the poll cycle, `backfill`
    and `export-run`.
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
        self._options = options
        self._telemetry = telemetry
        self._reporter = reporter
        self._settings = settings
        self._clock = clock
        self._monotonic = monotonic  # the backoff's clock: wall-clock jumps must not move it
        self._worker = ExportWorker()
        self._failures = 0
        self._resume_at = 0.0  # self._monotonic() before which no export is tried

    @property
    def sink_name(self) -> str:
        return self._sink.name

    def capture(self, captures: Sequence[Capture], result: PollResult) -> None:
        if captures:
            self._ledger.capture(captures, now_ns=int(self._clock() * _NS))
            result.runs_completed += sum(1 for item in captures if item.run_done)

    async def flush(self, result: PollResult, *, force: bool = False) -> None:
        """Send the spool until it is empty or refused (`force`: even while backing off)."""
        wait = self._resume_at - self._monotonic()
        if wait > 0 and not force:
            result.errors.append(f"{self._sink.name}: exports paused {wait:.0f}s more")
        else:
            await self._send_spool(result)
        result.pending_spans = self._ledger.pending_count()

    def close(self) -> None:
        self._worker.close()

    async def _send_spool(self, result: PollResult) -> None:
        after = 0
        while True:
            batch = _within_bytes(
                self._ledger.spooled(self._settings.export_batch_size, after_id=after),
                self._settings.export_batch_bytes,
            )
            if not batch:
                return
            after = batch[-1].id
            spans, unreadable = self._decode(batch)
            if spans and not await self._export(spans):
                self._export_failed(result, len(spans))
                return
            self._failures = 0
            self._confirm(batch, spans)
            result.spans_exported += len(spans)
            self._reporter.skipped("spooled_span", unreadable)

    async def _export(self, spans: Sequence[ReadableSpan]) -> bool:
        """The sink's confirmation. A sink that raises confirmed nothing: a refusal, with
        its backoff, rather than a poll that fails as a whole every interval."""
        try:
            return await self._worker.run(self._sink.export, spans)
        except Exception as exc:
            reason = f"export raised {type(exc).__name__}: {exc}"
            self._reporter.once(f"span sink {self._sink.name}", reason)
            return False

    def _confirm(self, batch: Sequence[Spooled], spans: Sequence[ReadableSpan]) -> None:
        now = self._clock()
        telemetry = self._telemetry
        samples = [sample for span in spans for sample in samples_of(span)]
        self._ledger.confirm([item.id for item in batch], telemetry.book.apply(samples, now))
        if telemetry.otlp is not None:
            telemetry.otlp.record(samples)
        telemetry.spans_exported.labels(self._sink.name).inc(len(spans))
        for span in spans:
            telemetry.export_lag.observe(max(0.0, now - (span.end_time or 0) / _NS))

    def _decode(self, batch: Sequence[Spooled]) -> tuple[list[ReadableSpan], int]:
        spans, unreadable = [], 0
        resource, scope = self._options.resource, self._options.scope
        for item in batch:
            try:
                spans.append(decode_span(item.payload, resource, scope))
            except StateError as exc:
                unreadable += 1  # dropped with the batch: it can never be sent
                self._reporter.once(f"spooled span #{item.id} of run {item.run_id}", str(exc))
        return spans, unreadable

    def _export_failed(self, result: PollResult, span_count: int) -> None:
        self._failures += 1
        result.export_failed = True
        self._telemetry.export_failures.labels(self._sink.name).inc()
        self._telemetry.spans_failed.labels(self._sink.name).inc(span_count)
        delay = min(
            self._settings.backoff_cap_s,
            self._settings.backoff_base_s * 2 ** min(self._failures - 1, 16),
        )
        self._resume_at = self._monotonic() + delay
        result.note_error(
            ExportError(
                f"{self._sink.name}: the span export was not confirmed; "
                f"spans stay spooled, next attempt in {delay:.0f}s"
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

    async def run(self, function: Callable[[Any], bool], argument: Any) -> bool:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name="orchestra-otel-export", daemon=True
            )
            self._thread.start()
        self._jobs.put((function, argument, loop, done))
        return await done

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(self._STOP)
            self._thread = None

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not self._STOP:
            function, argument, loop, done = job
            outcome: tuple[bool | None, BaseException | None]
            try:
                outcome = (bool(function(argument)), None)
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


def _within_bytes(batch: list[Spooled], budget: int) -> list[Spooled]:
    """The longest prefix within the byte budget (always at least one span)."""
    total = 0
    for index, item in enumerate(batch):
        total += len(item.payload)
        if total > budget and index > 0:
            return batch[:index]
    return batch
