"""Delivery in process: the spool to a sink that confirms or refuses, on clocks we move.

Invariants (exporter/delivery.py): records leave the spool oldest first in bounded
batches, framed into requests around their spooled bytes, each deleted and counted in the
workflow metrics only in the transaction that follows the sink's confirmation; a refusal
leaves everything spooled and pauses that signal's exports 5, 10, 20 ... seconds (capped
at 60) on the monotonic clock while polling goes on, traces and logs each on their own; a
span spooled as JSON by a version before schema 4 is delivered like any other, and one
that cannot be read back is dropped, said once and counted, and never blocks the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind

from exporter.collect import capture_of
from exporter.delivery import DeliverySettings, ExportWorker
from exporter.mapping import attributes as attr
from exporter.mapping.ids import span_context
from exporter.mapping.otlp import SpanSpec
from exporter.mapping.spans import map_run
from exporter.results import PollResult
from exporter.sink.encoding import LOGS, TRACES, Signal
from exporter.spool import outgoing_span
from exporter.state import SCHEMA_VERSION, Capture, Ledger
from exporter.workflow_metrics import MetricBook, samples_of
from tests.golden.test_golden import cases
from tests.support.ledger import legacy_json, spool_legacy, write_schema_3
from tests.support.sinks import RecordingSink
from tests.unit.inprocess import START, DeliveryRig

NS = 1_000_000_000
WF = "wf-1"


def _span(run: int, step: int | None) -> SpanSpec:
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
    return SpanSpec(
        name="joke" if step is None else f"node-{step}",
        context=span_context(trace_id, 0x100 + (0 if step is None else step + 1)),
        parent=None if step is None else span_context(trace_id, 0x100),
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        start_time=start,
        end_time=start + NS,
    )


def _capture(run: int, steps: int, *, done: bool = True) -> Capture:
    """A run's `steps` step spans, and its root when it is done."""
    spans = [_span(run, i) for i in range(steps)] + ([_span(run, None)] if done else [])
    return Capture(
        workflow_id=WF,
        run_id=f"run-{run}",
        status="completed" if done else "running",
        steps=tuple(f"run-{run}/s{i}" for i in range(steps)),
        outgoing=tuple(outgoing_span(span) for span in spans),
        run_done=done,
    )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[DeliveryRig]:
    with Ledger(tmp_path / "ledger.db") as ledger:
        made = DeliveryRig(ledger, DeliverySettings(export_batch_size=4))
        yield made
        made.close()


def test_the_spool_goes_out_oldest_first_in_batches_and_is_confirmed(setup: DeliveryRig) -> None:
    setup.capture(_capture(1, 3), _capture(2, 5))  # 4 + 6 spans
    result = setup.flush()

    assert result.spans_exported == 10 and result.pending_spans == 0 and result.ok
    assert setup.sink.batches == [4, 4, 2]
    assert [s.name for s in setup.sink.spans[:4]] == ["node-0", "node-1", "node-2", "joke"]
    assert setup.ledger.pending_count() == 0
    # Nothing left: a second flush sends nothing.
    assert setup.flush().spans_exported == 0 and setup.sink.attempts == 3


def test_batches_stay_within_the_byte_budget(tmp_path: Path) -> None:
    one_span = len(outgoing_span(_span(1, 0)).payload)
    with Ledger(tmp_path / "ledger.db") as ledger:
        made = DeliveryRig(
            ledger, DeliverySettings(export_batch_size=100, export_batch_bytes=3 * one_span)
        )
        made.capture(_capture(1, 9))  # 9 step spans of the same size, and the root
        result = made.flush()
        made.close()
    assert result.spans_exported == 10
    assert made.sink.batches == [3, 3, 3, 1]


def test_a_span_larger_than_the_budget_still_goes_out_alone(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        made = DeliveryRig(ledger, DeliverySettings(export_batch_bytes=10))
        made.capture(_capture(1, 2))
        result = made.flush()
        made.close()
    assert result.spans_exported == 3 and made.sink.batches == [1, 1, 1]


def test_a_refused_export_keeps_everything_spooled_and_backs_off(setup: DeliveryRig) -> None:
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


def test_the_backoff_follows_the_monotonic_clock_not_the_wall_clock(setup: DeliveryRig) -> None:
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

    def send(self, signal: Signal, request: bytes, count: int) -> bool:
        if self.refusing:
            self.requests.append((signal, count))
            raise BrokenPipeError("[Errno 32] Broken pipe")
        return super().send(signal, request, count)


def test_a_sink_that_raises_is_a_refusal_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    sink = RaisingSink()
    setup = DeliveryRig(ledger, DeliverySettings(), sink)
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
    assert sink.attempts == 3
    setup.close()
    ledger.close()


def test_force_sends_even_while_backing_off(setup: DeliveryRig) -> None:
    setup.capture(_capture(1, 1))
    setup.sink.refusing = True
    setup.flush()
    setup.sink.refusing = False
    assert setup.flush().spans_exported == 0
    assert setup.flush(force=True).spans_exported == 2


def test_metrics_count_exactly_the_confirmed_spans_and_are_persisted(setup: DeliveryRig) -> None:
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
    setup: DeliveryRig, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a row of an older version can be unreadable: span JSON, cut short here."""
    setup.capture(_capture(1, 1))
    spool_legacy(setup.ledger.path, [(WF, "run-9", '{"n": "half a span')])
    setup.capture(_capture(2, 1))
    with caplog.at_level(logging.WARNING, logger="exporter.problems"):
        result = setup.flush()
        assert setup.flush().spans_exported == 0  # gone with its batch: not said again

    assert result.spans_exported == 4 and result.pending_spans == 0 and result.ok
    assert [s.context.trace_id for s in setup.sink.spans] == [0x1001] * 2 + [0x1002] * 2
    assert setup.reporter.skipped_records == 1
    assert setup.telemetry.skipped_records.labels("spooled_span")._value.get() == 1
    warnings = [r.getMessage() for r in caplog.records if "run-9" in r.getMessage()]
    assert len(warnings) == 1 and "cannot be read back" in warnings[0]


def test_unreadable_metric_samples_leave_the_span_to_be_sent_and_are_counted(
    setup: DeliveryRig, caplog: pytest.LogCaptureFixture
) -> None:
    """The span is the data; its samples only feed the workflow metrics."""
    setup.capture(_capture(1, 2))
    with sqlite3.connect(setup.ledger.path) as db:
        db.execute("UPDATE spool SET samples = '{\"m\": [[' WHERE id = 1")
        db.execute("UPDATE spool SET samples = '{\"m\": 7}' WHERE id = 2")
    with caplog.at_level(logging.WARNING, logger="exporter.problems"):
        result = setup.flush()

    assert result.spans_exported == 3 and result.pending_spans == 0
    assert len(setup.sink.spans) == 3
    assert setup.telemetry.skipped_records.labels("spooled_samples")._value.get() == 2
    said = [r.getMessage() for r in caplog.records if "metric samples" in r.getMessage()]
    assert len(said) == 1 and "not counted" in said[0]


def test_a_batch_of_only_unreadable_spans_does_not_call_the_sink(setup: DeliveryRig) -> None:
    spool_legacy(setup.ledger.path, [(WF, "run-9", "{}"), (WF, "run-9", "[]")])
    result = setup.flush()
    assert setup.sink.attempts == 0 and result.pending_spans == 0 and result.ok
    assert setup.reporter.skipped_records == 2


def test_capture_counts_the_runs_it_completes(setup: DeliveryRig) -> None:
    result = PollResult()
    setup.delivery.capture([_capture(1, 1), _capture(3, 1, done=False)], result)
    assert result.runs_completed == 1
    assert setup.ledger.pending_count() == 3


def _book(book: MetricBook) -> dict[object, tuple[float, float]]:
    return {key: (series.count, series.total) for key, series in book.series.items()}


def test_a_ledger_of_the_previous_version_upgrades_and_delivers_every_spooled_span(
    tmp_path: Path, shared_dir: Path
) -> None:
    """Issue 14: an old-format ledger upgrades without loss. Schema 3 spooled each span as
    JSON; once upgraded, every one of them goes out as the span it was, counted in the
    workflow metrics on top of the totals the old version kept, ahead of what this version
    spools after it."""
    legacy = [
        span
        for case in cases(shared_dir)
        for span in map_run(case.workflow, case.run, case.steps, case.options).all_spans()
    ]
    path = tmp_path / "ledger.db"
    write_schema_3(path)
    spool_legacy(
        path, [(WF, str(span.attributes[attr.RUN_ID]), legacy_json(span)) for span in legacy]
    )
    earlier = [sample for span in (_span(7, 0), _span(7, None)) for sample in samples_of(span)]
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executemany(
            "INSERT INTO metric_series VALUES (?, ?, ?)", MetricBook().apply(earlier, START)
        )

    with Ledger(path) as ledger:
        assert ledger.pending_count(TRACES) == len(legacy) > 40
        rig = DeliveryRig(ledger, DeliverySettings(export_batch_size=16))
        rig.capture(_capture(1, 2))  # spooled by this version, after the upgrade
        result = rig.flush()
        rig.close()
        persisted = MetricBook()
        persisted.load(ledger.metric_series())
    with sqlite3.connect(path) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        left = db.execute("SELECT count(*) FROM spool").fetchone()
    assert int(version[0]) == SCHEMA_VERSION == 4 and left == (0,)

    sent = [*legacy, _span(1, 0), _span(1, 1), _span(1, None)]
    assert result.ok and result.spans_exported == len(sent) and result.pending_spans == 0
    full, rest = divmod(len(sent), 16)
    assert rig.sink.batches == [16] * full + ([rest] if rest else [])
    assert [span.encode() for span in rig.sink.spans] == [span.encode() for span in sent]
    expected = MetricBook()
    expected.apply([*earlier, *(sample for span in sent for sample in samples_of(span))], START)
    assert _book(rig.telemetry.book) == _book(expected) == _book(persisted)
    roots = [span for span in sent if span.parent is None or span.parent.is_remote]
    assert rig.counted("orchestra_runs") == len(roots) + 1 and rig.counted("orchestra_steps") > 1
    assert rig.reporter.skipped_records == 0


def test_failure_logs_are_spooled_with_their_spans_and_confirmed_on_their_own(
    tmp_path: Path, shared_dir: Path
) -> None:
    """A failed run's spans and its failures' log records enter the spool in one capture;
    each signal is then confirmed, refused and backed off on its own: a logs backend that
    is down keeps the logs spooled and never holds back the spans."""
    case = next(c for c in cases(shared_dir) if c.name == "joke-to-slack-run-failed")
    options = dataclasses.replace(case.options, failure_logs=True)
    mapped = map_run(case.workflow, case.run, case.steps, options)
    spans, logs = mapped.all_spans(), list(mapped.logs)
    failed = [(span.context.trace_id, span.context.span_id) for span in spans if span.failed]
    capture = capture_of(case.workflow.workflow_id, case.run, mapped)
    assert capture is not None and len(failed) == len(logs) == 3
    assert [item.signal for item in capture.outgoing] == [TRACES] * len(spans) + [LOGS] * 3

    with Ledger(tmp_path / "ledger.db") as ledger:
        rig = DeliveryRig(ledger, options=options)
        rig.capture(capture)
        assert (ledger.pending_count(TRACES), ledger.pending_count(LOGS)) == (len(spans), 3)
        rig.sink.refused_signals = {LOGS}
        refused = rig.flush()
        # The spans went; the logs stay spooled, and only the logs back off.
        assert refused.spans_exported == len(spans) and refused.pending_spans == 0
        assert refused.logs_exported == 0 and refused.pending_logs == 3
        counts = ledger.counts()  # what `check` prints: each signal on its own
        assert (counts["pending_spans"], counts["pending_logs"]) == (0, 3)
        assert refused.summary().endswith(", 0 failure logs exported / 3 unsent, 1 errors")
        assert refused.log_export_failed and not refused.export_failed
        assert refused.errors == [
            "recording: the log record export was not confirmed; log records stay spooled, "
            "next attempt in 5s"
        ]
        rig.capture(_capture(1, 1))
        paused = rig.flush()
        assert paused.spans_exported == 2 and paused.pending_logs == 3
        assert paused.errors == ["recording: log exports paused 5s more"]
        assert rig.sink.log_attempts == 1

        rig.sink.refused_signals = set()
        rig.monotonic.advance(5)
        delivered = rig.flush()
        assert delivered.ok and delivered.logs_exported == 3 and delivered.pending_logs == 0
        assert ledger.pending_count(LOGS) == ledger.pending_count(TRACES) == 0
        rig.close()

    assert rig.sink.logs == logs
    assert [
        (int.from_bytes(r.trace_id, "big"), int.from_bytes(r.span_id, "big")) for r in logs
    ] == failed
    assert [span.encode() for span in rig.sink.spans] == [
        span.encode() for span in [*spans, _span(1, 0), _span(1, None)]
    ]
    telemetry = rig.telemetry
    assert telemetry.log_export_failures.labels("recording")._value.get() == 1
    assert telemetry.export_failures.labels("recording")._value.get() == 0
    assert telemetry.logs_exported.labels("recording")._value.get() == 3
    # Log records add nothing to the workflow metrics: their spans are counted.
    assert rig.counted("orchestra_runs") == 2 and rig.counted("orchestra_steps") == 3


def test_the_export_worker_is_one_thread_however_many_exports() -> None:
    worker = ExportWorker()
    threads: set[int] = set()

    def export(batch: int) -> bool:
        threads.add(threading.get_ident())
        return batch % 2 == 0

    async def many() -> list[bool]:
        return [await worker.run(functools.partial(export, batch)) for batch in range(50)]

    before = threading.active_count()
    outcomes = asyncio.run(many())
    during = threading.active_count()
    worker.close()
    assert outcomes == [batch % 2 == 0 for batch in range(50)]
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert during == before + 1


def test_an_exception_in_the_worker_reaches_the_caller() -> None:
    worker = ExportWorker()

    def export() -> bool:
        raise ValueError("the encoder choked")

    async def call() -> bool:
        return await worker.run(export)

    with pytest.raises(ValueError, match="the encoder choked"):
        asyncio.run(call())
    # The thread survives it and serves the next export.
    assert asyncio.run(worker.run(lambda: True)) is True
    worker.close()
