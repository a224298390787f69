"""Delivery in process: the spool to a sink that confirms or refuses, on clocks we move.

Invariants (exporter/delivery.py): spans leave the spool oldest first in bounded batches,
each deleted and counted in the workflow metrics only in the transaction that follows the
sink's confirmation; a refusal leaves everything spooled and pauses exports 5, 10, 20 ...
seconds (capped at 60) on the monotonic clock while polling goes on; a spooled span that
cannot be read back is dropped, said once and counted, and never blocks the rest.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from exporter.delivery import Delivery, DeliverySettings, ExportWorker
from exporter.emulator import ManualClock
from exporter.mapping import attributes as attr
from exporter.mapping.ids import span_context
from exporter.mapping.spans import MappingOptions
from exporter.problems import ProblemReporter
from exporter.results import PollResult
from exporter.spool import encode_span
from exporter.state import Capture, Ledger
from exporter.telemetry import Telemetry
from exporter.workflow_metrics import MetricBook
from tests.unit.inprocess import START, RecordingSink

NS = 1_000_000_000
WF = "wf-1"


def _span(run: int, step: int | None) -> ReadableSpan:
    """A step span (or the root, step None) of run number `run`, as the mapping makes it."""
    trace_id = 0x1000 + run
    attributes: dict[str, str] = {attr.WORKFLOW_ID: WF, attr.WORKFLOW_NAME: "joke"}
    if step is None:
        attributes[attr.RUN_STATUS] = "completed"
    else:
        attributes |= {
            attr.STEP_ID: f"step-{run}-{step}",
            attr.NODE_ID: f"node-{step}",
            attr.NODE_TYPE: "code",
            attr.STEP_STATUS: "completed",
        }
    start = int(START * NS) - 60 * NS
    return ReadableSpan(
        name="joke" if step is None else f"node-{step}",
        context=span_context(trace_id, 0x100 + (0 if step is None else step + 1)),
        parent=None if step is None else span_context(trace_id, 0x100),
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        start_time=start,
        end_time=start + NS,
    )


def _capture(run: int, steps: int) -> Capture:
    """A finished run: `steps` step spans and its root."""
    return Capture(
        workflow_id=WF,
        run_id=f"run-{run}",
        status="completed",
        step_spans={f"run-{run}/s{i}": encode_span(_span(run, i)) for i in range(steps)},
        root_span=encode_span(_span(run, None)),
        run_done=True,
    )


class Setup:
    def __init__(
        self, ledger: Ledger, settings: DeliverySettings, sink: RecordingSink | None = None
    ) -> None:
        self.ledger = ledger
        self.sink = sink or RecordingSink()
        self.telemetry = Telemetry()
        self.reporter = ProblemReporter(self.telemetry)
        self.clock = ManualClock(START)
        self.monotonic = ManualClock(1_000.0)
        self.delivery = Delivery(
            ledger,
            self.sink,
            MappingOptions(),
            self.telemetry,
            self.reporter,
            settings,
            clock=self.clock,
            monotonic=self.monotonic,
        )

    def flush(self, *, force: bool = False) -> PollResult:
        result = PollResult()
        asyncio.run(self.delivery.flush(result, force=force))
        return result

    def capture(self, *captures: Capture) -> None:
        self.delivery.capture(captures, PollResult())

    def counted(self, metric: str) -> float:
        return sum(s.count for (name, _), s in self.telemetry.book.series.items() if name == metric)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with Ledger(tmp_path / "ledger.db") as ledger:
        made = Setup(ledger, DeliverySettings(export_batch_size=4))
        yield made
        made.delivery.close()


def test_the_spool_goes_out_oldest_first_in_batches_and_is_confirmed(setup: Setup) -> None:
    setup.capture(_capture(1, 3), _capture(2, 5))  # 4 + 6 spans
    result = setup.flush()

    assert result.spans_exported == 10 and result.pending_spans == 0 and result.ok
    assert setup.sink.batches == [4, 4, 2]
    assert [s.name for s in setup.sink.spans[:4]] == ["node-0", "node-1", "node-2", "joke"]
    assert setup.ledger.pending_count() == 0
    # Nothing left: a second flush sends nothing.
    assert setup.flush().spans_exported == 0 and setup.sink.attempts == 3


def test_batches_stay_within_the_byte_budget(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        one_span = len(encode_span(_span(1, 0)))
        made = Setup(
            ledger, DeliverySettings(export_batch_size=100, export_batch_bytes=3 * one_span)
        )
        made.capture(_capture(1, 9))  # 10 spans of about the same size
        result = made.flush()
        made.delivery.close()
    assert result.spans_exported == 10
    assert sum(made.sink.batches) == 10 and max(made.sink.batches) <= 3


def test_a_span_larger_than_the_budget_still_goes_out_alone(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        made = Setup(ledger, DeliverySettings(export_batch_bytes=10))
        made.capture(_capture(1, 2))
        result = made.flush()
        made.delivery.close()
    assert result.spans_exported == 3 and made.sink.attempts == 3


def test_a_refused_export_keeps_everything_spooled_and_backs_off(setup: Setup) -> None:
    setup.capture(_capture(1, 3), _capture(2, 3))
    setup.sink.refusing = True
    schedule = []
    for _ in range(6):
        attempts = setup.sink.attempts
        refused = setup.flush()
        assert setup.sink.attempts == attempts + 1, "one attempt per due flush, not more"
        assert refused.export_failed and refused.spans_exported == 0
        assert refused.pending_spans == 8 == setup.ledger.pending_count()
        delay = float(refused.errors[-1].split("next attempt in ")[1].rstrip("s"))
        schedule.append(delay)
        # Until the pause is over, polls do not try again.
        setup.monotonic.advance(delay - 0.5)
        paused = setup.flush()
        assert setup.sink.attempts == attempts + 1
        assert "exports paused" in paused.errors[-1]
        assert not paused.export_failed and paused.pending_spans == 8
        setup.monotonic.advance(0.5)

    assert schedule == [5, 10, 20, 40, 60, 60]
    assert setup.sink.spans == [] and setup.counted("orchestra_steps") == 0
    failures = setup.telemetry.export_failures.labels("recording")._value.get()
    assert failures == 6

    setup.sink.refusing = False
    delivered = setup.flush()
    assert delivered.spans_exported == 8 and delivered.ok and delivered.pending_spans == 0
    assert setup.sink.duplicates() == []
    # Success resets the backoff: the next refusal pauses 5 s again.
    setup.capture(_capture(3, 1))
    setup.sink.refusing = True
    assert "next attempt in 5s" in setup.flush().errors[-1]


def test_the_backoff_follows_the_monotonic_clock_not_the_wall_clock(setup: Setup) -> None:
    setup.capture(_capture(1, 1))
    setup.sink.refusing = True
    setup.flush()
    setup.sink.refusing = False
    setup.clock.advance(3_600)  # the wall clock jumps (NTP, a suspended VM)
    assert setup.flush().spans_exported == 0
    setup.monotonic.advance(5)
    assert setup.flush().spans_exported == 2


class RaisingSink(RecordingSink):
    """A sink that breaks instead of answering (a console whose stdout was closed)."""

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        if self.refusing:
            self.batches.append(len(spans))
            raise BrokenPipeError("[Errno 32] Broken pipe")
        return super().export(spans)


def test_a_sink_that_raises_is_a_refusal_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    sink = RaisingSink()
    setup = Setup(ledger, DeliverySettings(), sink)
    setup.capture(_capture(1, 2))
    sink.refusing = True
    with caplog.at_level(logging.WARNING, logger="exporter.problems"):
        first = setup.flush()
        setup.monotonic.advance(5)
        second = setup.flush()

    for result in (first, second):
        assert result.export_failed and result.pending_spans == 3
    assert "next attempt in 5s" in first.errors[-1]
    assert "next attempt in 10s" in second.errors[-1]
    said = [r.getMessage() for r in caplog.records if "BrokenPipeError" in r.getMessage()]
    assert said == ["span sink recording: export raised BrokenPipeError: [Errno 32] Broken pipe"]

    sink.refusing = False
    setup.monotonic.advance(10)
    assert setup.flush().spans_exported == 3 and sink.duplicates() == []
    setup.delivery.close()
    ledger.close()


def test_force_sends_even_while_backing_off(setup: Setup) -> None:
    setup.capture(_capture(1, 1))
    setup.sink.refusing = True
    setup.flush()
    setup.sink.refusing = False
    assert setup.flush().spans_exported == 0
    assert setup.flush(force=True).spans_exported == 2


def test_metrics_count_exactly_the_confirmed_spans_and_are_persisted(setup: Setup) -> None:
    setup.capture(_capture(1, 3))
    setup.sink.refusing = True
    setup.flush(force=True)
    assert setup.telemetry.book.series == {} and setup.ledger.metric_series() == []

    setup.sink.refusing = False
    setup.capture(_capture(2, 2))
    setup.flush(force=True)
    step_spans = [s for s in setup.sink.spans if s.parent is not None]
    assert setup.counted("orchestra_steps") == len(step_spans) == 5
    assert setup.counted("orchestra_runs") == len(setup.sink.roots()) == 2
    # The ledger holds the same totals: a restart neither loses nor doubles them.
    reloaded = MetricBook()
    reloaded.load(setup.ledger.metric_series())
    assert {k: (s.count, s.total) for k, s in reloaded.series.items()} == {
        k: (s.count, s.total) for k, s in setup.telemetry.book.series.items()
    }


def test_an_unreadable_spooled_span_is_dropped_said_once_and_counted(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Capture(WF, "run-9", "completed", {"run-9/s0": '{"n": "half a span'}, None, True)
    setup.capture(_capture(1, 1), broken, _capture(2, 1))
    with caplog.at_level(logging.WARNING, logger="exporter.problems"):
        result = setup.flush()

    assert result.spans_exported == 4 and result.pending_spans == 0
    assert setup.reporter.skipped_records == 1
    assert setup.telemetry.skipped_records.labels("spooled_span")._value.get() == 1
    warnings = [r.getMessage() for r in caplog.records if "run-9" in r.getMessage()]
    assert len(warnings) == 1 and "cannot be read back" in warnings[0]


def test_a_batch_of_only_unreadable_spans_does_not_call_the_sink(setup: Setup) -> None:
    setup.capture(Capture(WF, "run-9", "completed", {"s0": "{}", "s1": "[]"}, None, True))
    result = setup.flush()
    assert setup.sink.attempts == 0 and result.pending_spans == 0 and result.ok
    assert setup.reporter.skipped_records == 2


def test_capture_counts_the_runs_it_completes(setup: Setup) -> None:
    result = PollResult()
    in_flight = Capture(WF, "run-3", "running", {"s0": encode_span(_span(3, 0))}, None, False)
    setup.delivery.capture([_capture(1, 1), in_flight], result)
    assert result.runs_completed == 1
    assert setup.ledger.pending_count() == 3


def test_the_export_worker_is_one_thread_however_many_exports() -> None:
    worker = ExportWorker()
    threads: set[int] = set()

    def export(batch: int) -> bool:
        threads.add(threading.get_ident())
        return batch % 2 == 0

    async def many() -> list[bool]:
        return [await worker.run(export, batch) for batch in range(50)]

    before = threading.active_count()
    outcomes = asyncio.run(many())
    during = threading.active_count()
    worker.close()
    assert outcomes == [batch % 2 == 0 for batch in range(50)]
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert during == before + 1


def test_an_exception_in_the_worker_reaches_the_caller() -> None:
    worker = ExportWorker()

    def export(_: object) -> bool:
        raise ValueError("the encoder choked")

    async def call() -> bool:
        return await worker.run(export, None)

    with pytest.raises(ValueError, match="the encoder choked"):
        asyncio.run(call())
    # The thread survives it and serves the next export.
    assert asyncio.run(worker.run(lambda _: True, None)) is True  # type: ignore[arg-type]
    worker.close()
