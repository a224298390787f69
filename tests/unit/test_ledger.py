"""The SQLite ledger in process: its transactions, run bookkeeping and schema upgrades.

Invariants from exporter/state.py: a capture spools its spans and marks its steps and run
in one transaction; a confirmation deletes spans and writes their metric totals in one
transaction; a done run stays done; an older ledger is upgraded in place without losing
anything spooled, a newer one is refused with a clear StateError. (Ledger.prune is pinned
in test_bounds.py.)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from pathlib import Path
from typing import cast

import pytest
from opentelemetry.trace import SpanKind

from exporter.errors import StateError
from exporter.mapping.ids import span_context
from exporter.mapping.otlp import SpanSpec
from exporter.sink.encoding import LOGS, TRACES
from exporter.state import SCHEMA_VERSION, Capture, Ledger, Outgoing, RunState
from tests.support.ledger import SCHEMA_3, legacy_json, spool_legacy
from tests.unit.inprocess import DeliveryRig

NS = 1_000_000_000
WF = "wf-1"


def _capture(
    run_id: str, steps: int, *, done: bool, workflow_id: str = WF, status: str | None = None
) -> Capture:
    """Step spans and, when done, the root: payloads that say which span they stand for
    (the ledger keeps bytes, it never reads them), each with its metric samples."""
    names = [f"s{i}" for i in range(steps)] + (["root"] if done else [])
    return Capture(
        workflow_id=workflow_id,
        run_id=run_id,
        status=status or ("completed" if done else "running"),
        steps=tuple(f"{run_id}/s{i}" for i in range(steps)),
        outgoing=tuple(
            Outgoing(TRACES, f"{run_id}/{name}".encode(), f"samples of {run_id}/{name}")
            for name in names
        ),
        run_done=done,
    )


def _broken(run_id: str) -> Capture:
    """A capture SQLite refuses half way (a NULL payload breaks the spool's NOT NULL)."""
    return Capture(WF, run_id, "completed", ("s0",), (Outgoing(TRACES, cast(bytes, None)),), True)


def _schema_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0])


def test_a_new_ledger_is_private_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "ledger.db"
    with Ledger(path) as ledger:
        counts = ledger.counts()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert counts == {
        "workflows": 0,
        "runs": 0,
        "open_runs": 0,
        "steps": 0,
        "pending_spans": 0,
        "pending_logs": 0,
    }
    assert _schema_version(path) == SCHEMA_VERSION


def test_capture_spools_spans_and_marks_steps_and_run_together(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.capture([_capture("r1", 2, done=True), _capture("r2", 1, done=False)], 5 * NS)

        spooled = ledger.spooled(10)
        assert [(s.run_id, s.payload, s.samples) for s in spooled] == [
            ("r1", b"r1/s0", "samples of r1/s0"),
            ("r1", b"r1/s1", "samples of r1/s1"),
            ("r1", b"r1/root", "samples of r1/root"),
            ("r2", b"r2/s0", "samples of r2/s0"),
        ]
        assert ledger.pending_count(LOGS) == 0 and ledger.spooled(10, signal=LOGS) == []
        assert ledger.captured_steps("r1") == {"r1/s0", "r1/s1"}
        assert ledger.run_states(WF, ["r1", "r2"]) == {
            "r1": RunState("completed", True),
            "r2": RunState("running", False),
        }
        assert ledger.open_runs(WF) == ["r2"]


def test_a_capture_that_fails_half_way_leaves_nothing_behind(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        before = ledger.counts()
        with pytest.raises(StateError, match="cannot write the state file"):
            ledger.capture([_capture("r1", 3, done=True), _broken("r2")], 5 * NS)
        # Neither the first run's steps nor its spans: marked-but-not-spooled would be a
        # loss (the steps would never be fetched again), spooled-but-not-marked a duplicate.
        assert ledger.counts() == before
        assert ledger.captured_steps("r1") == set()
        assert ledger.run_states(WF, ["r1", "r2"]) == {}
        # The ledger is usable afterwards.
        ledger.capture([_capture("r1", 3, done=True)], 6 * NS)
        assert ledger.pending_count() == 4


def test_spooled_reads_oldest_first_in_pages(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        for index in range(5):
            ledger.capture([_capture(f"r{index}", 1, done=False)], (index + 1) * NS)
        first = ledger.spooled(2)
        second = ledger.spooled(2, after_id=first[-1].id)
        rest = ledger.spooled(10, after_id=second[-1].id)
    assert [s.run_id for s in [*first, *second, *rest]] == ["r0", "r1", "r2", "r3", "r4"]
    ids = [s.id for s in [*first, *second, *rest]]
    assert ids == sorted(ids)


def test_confirm_deletes_spans_and_writes_metric_rows_together(tmp_path: Path) -> None:
    rows = [("orchestra_steps", '["wf-1"]', "[2.0,0.0,[]]"), ("orchestra_runs", '["wf-1"]', "x")]
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.capture([_capture("r1", 2, done=True)], NS)
        spooled = ledger.spooled(10)
        ledger.confirm([spooled[0].id, spooled[1].id], rows)
        assert [s.id for s in ledger.spooled(10)] == [spooled[2].id]
        assert sorted(ledger.metric_series()) == sorted(rows)

        # A later total replaces the earlier one of the same series.
        newer = [("orchestra_steps", '["wf-1"]', "[3.0,0.0,[]]")]
        broken = [("orchestra_runs", '["wf-1"]', cast(str, None))]
        with pytest.raises(StateError):
            ledger.confirm([spooled[2].id], [*newer, *broken])
        # Refused as a whole: the span is still spooled and the totals did not move, so
        # the span is counted exactly once when it is confirmed again.
        assert [s.id for s in ledger.spooled(10)] == [spooled[2].id]
        assert sorted(ledger.metric_series()) == sorted(rows)

        ledger.confirm([spooled[2].id], newer)
        assert ledger.pending_count() == 0
        assert (
            dict(((m, lab), v) for m, lab, v in ledger.metric_series())[
                ("orchestra_steps", '["wf-1"]')
            ]
            == "[3.0,0.0,[]]"
        )


def test_open_runs_update_their_status_and_done_runs_stay_done(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.track_runs(WF, [("late", "queued")], now_ns=2 * NS)
        ledger.track_runs(WF, [("early", "queued")], now_ns=1 * NS)
        ledger.track_runs(WF, [("late", "running"), ("early", "running")], now_ns=3 * NS)
        assert ledger.run_states(WF, ["early", "late"]) == {
            "early": RunState("running", False),
            "late": RunState("running", False),
        }
        # Oldest first: first seen is kept from the first sighting, not the last.
        assert ledger.open_runs(WF) == ["early", "late"]

        ledger.capture([_capture("early", 1, done=True, status="failed")], 4 * NS)
        # A stale history page must neither reopen a done run nor change its status.
        ledger.track_runs(WF, [("early", "running")], now_ns=5 * NS)
        assert ledger.run_states(WF, ["early"]) == {"early": RunState("failed", True)}
        # Nor a later capture of steps only (export-run of a run already done).
        ledger.capture([_capture("early", 1, done=False, status="running")], 6 * NS)
        assert ledger.run_states(WF, ["early"])["early"].done is True
        assert ledger.open_runs(WF) == ["late"]


def test_run_states_are_per_workflow_and_read_in_chunks(tmp_path: Path) -> None:
    run_ids = [f"run-{i:04d}" for i in range(1_200)]  # more than one 500-id chunk
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.track_runs(WF, [(run_id, "running") for run_id in run_ids[::2]], NS)
        ledger.track_runs("wf-2", [(run_ids[1], "running")], NS)
        states = ledger.run_states(WF, run_ids)
    assert sorted(states) == run_ids[::2]
    assert run_ids[1] not in states


def test_a_workflow_window_is_fixed_at_its_first_sighting(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        assert ledger.workflow_since(WF) is None
        assert ledger.register_workflow(WF, since_ns=100 * NS, now_ns=200 * NS) == 100 * NS
        assert ledger.register_workflow(WF, since_ns=900 * NS, now_ns=999 * NS) == 100 * NS
        assert ledger.workflow_since(WF) == 100 * NS
        # Pruning moves windows up to the cutoff, never back down.
        ledger.prune(50 * NS)
        assert ledger.workflow_since(WF) == 100 * NS
        ledger.prune(300 * NS)
        assert ledger.workflow_since(WF) == 300 * NS


def test_note_unreadable_counts_per_run(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.track_runs(WF, [("big", "completed"), ("other", "completed")], NS)
        assert [ledger.note_unreadable(WF, "big") for _ in range(3)] == [1, 2, 3]
        assert ledger.note_unreadable(WF, "other") == 1
        assert ledger.note_unreadable("wf-2", "big") == 1  # another workflow's run


def test_counts(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.register_workflow(WF, since_ns=0, now_ns=NS)
        ledger.register_workflow("wf-2", since_ns=0, now_ns=NS)
        ledger.capture([_capture("r1", 3, done=True), _capture("r2", 2, done=False)], NS)
        ledger.track_runs("wf-2", [("r3", "running")], NS)
        ledger.confirm([ledger.spooled(1)[0].id])
        counts = ledger.counts()
    assert counts == {
        "workflows": 2,
        "runs": 3,
        "open_runs": 2,
        "steps": 5,
        "pending_spans": 5,
        "pending_logs": 0,
    }


def test_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        ledger.capture([_capture("r1", 2, done=False)], NS)
        ledger.confirm([], [("orchestra_runs", "[]", "1")])
    with Ledger(path) as ledger:
        assert ledger.captured_steps("r1") == {"r1/s0", "r1/s1"}
        assert ledger.open_runs(WF) == ["r1"]
        assert ledger.pending_count() == 2
        assert ledger.metric_series() == [("orchestra_runs", "[]", "1")]


# --- schema versions ---------------------------------------------------------------------

# The tables as schema 2 created them (exporter/state.py at commit 2464dcf): schema 3's,
# less `runs.unreadable`.
_UNREADABLE = "    unreadable    INTEGER NOT NULL DEFAULT 0,\n"
assert _UNREADABLE in SCHEMA_3
SCHEMA_2 = SCHEMA_3.replace(_UNREADABLE, "").replace(
    "'schema_version', '3'", "'schema_version', '2'"
)
OLD_ROWS = """
INSERT INTO workflows VALUES ('wf-1', 1000, 1000);
INSERT INTO runs VALUES ('wf-1', 'done-run', 'completed', 1100, 1, 1200);
INSERT INTO runs VALUES ('wf-1', 'open-run', 'running', 1150, 0, NULL);
INSERT INTO captured_steps VALUES ('done-run', 'step-a', 1200), ('open-run', 'step-b', 1210);
INSERT INTO metric_series VALUES ('orchestra_runs', '["wf-1"]', '[1.0,0.0,[]]');
"""
TRACE = 0x5B69669F975A49AFA33A61FF9AE5A20F


def _old_span(name: str, span_id: int, parent: int | None) -> SpanSpec:
    return SpanSpec(
        name=name,
        context=span_context(TRACE, span_id),
        parent=None if parent is None else span_context(TRACE, parent),
        kind=SpanKind.INTERNAL,
        start_time=1_741_833_675_021_907_000,
        end_time=1_741_833_719_201_337_000,
        attributes={"orchestra.run.id": name},
    )


# A run's root, and a step of a run still going, spooled as JSON.
OLD_SPANS = (
    ("done-run", _old_span("root", 0x100, None)),
    ("open-run", _old_span("b", 0x101, 0x100)),
)


def _write_schema_2(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_2 + OLD_ROWS)
    spool_legacy(path, [(WF, run_id, legacy_json(span)) for run_id, span in OLD_SPANS])


def test_a_schema_2_ledger_is_upgraded_in_place_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    _write_schema_2(path)

    with Ledger(path) as ledger:
        counts = ledger.counts()
        spooled = [(s.run_id, s.payload, s.samples) for s in ledger.spooled(10)]
        states = ledger.run_states(WF, ["done-run", "open-run"])
        open_runs = ledger.open_runs(WF)
        steps = ledger.captured_steps("done-run") | ledger.captured_steps("open-run")
        series = ledger.metric_series()
        since = ledger.workflow_since(WF)
        unreadable = ledger.note_unreadable(WF, "open-run")  # the column schema 3 added
        # What schema 2 spooled goes out as the spans it was.
        rig = DeliveryRig(ledger)
        delivered = rig.flush()
        rig.close()
        left = ledger.pending_count()

    assert _schema_version(path) == SCHEMA_VERSION == 4
    assert counts == {
        "workflows": 1,
        "runs": 2,
        "open_runs": 1,
        "steps": 2,
        "pending_spans": 2,
        "pending_logs": 0,
    }
    assert spooled == [(run_id, legacy_json(span), None) for run_id, span in OLD_SPANS]
    assert states == {
        "done-run": RunState("completed", True),
        "open-run": RunState("running", False),
    }
    assert open_runs == ["open-run"]
    assert steps == {"step-a", "step-b"}
    assert series == [("orchestra_runs", '["wf-1"]', "[1.0,0.0,[]]")]
    assert since == 1000
    assert unreadable == 1
    assert delivered.ok and delivered.spans_exported == 2 and left == 0
    assert [span.encode() for span in rig.sink.spans] == [span.encode() for _, span in OLD_SPANS]
    # Opening it again is a no-op, not a second migration.
    with Ledger(path) as ledger:
        assert ledger.counts() == {**counts, "pending_spans": 0, "pending_logs": 0}
        assert ledger.metric_series() == series


def test_a_ledger_of_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        ledger.capture([_capture("r1", 1, done=True)], NS)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))

    with pytest.raises(StateError, match=rf"newer orchestra-otel \(schema {SCHEMA_VERSION + 1}\)"):
        Ledger(path)
    assert _schema_version(path) == SCHEMA_VERSION + 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM spool").fetchone() == (2,)


def test_a_ledger_older_than_any_migration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with pytest.raises(StateError, match=r"older development version \(schema 1\)"):
        Ledger(path)


def test_a_file_that_is_not_a_database_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not SQLite, " * 100)
    with pytest.raises(StateError, match=r"is damaged \(file is not a database\); move it aside"):
        Ledger(path)


def test_a_closed_ledger_raises_state_errors(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.close()
    with pytest.raises(StateError, match="cannot read"):
        ledger.pending_count()
    with pytest.raises(StateError, match="cannot write"):
        ledger.capture([_capture("r1", 1, done=True)], NS)
