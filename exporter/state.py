"""The SQLite ledger: what was seen, what waits in the spool, what was delivered.

A finished step (or run) is mapped once, and its span goes into the spool table in the
same transaction that marks the step as captured; so the API is never asked for it again,
and spans waiting for a backend that is down live on disk, not in RAM. A spooled span is
deleted only after the sink confirmed it: a crash or an outage can cost a duplicate (ids
are deterministic, backends deduplicate) but never a lost span. WAL mode lets the daemon
write while an operator reads. No credentials are ever stored here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

from exporter.ledger_file import SCHEMA_VERSION, LedgerFile

__all__ = ["SCHEMA_VERSION", "Capture", "Ledger", "Outgoing", "RunState", "Spooled"]

# A run is tracked from the poll that first sees it; a done run is never undone.
_TRACK_RUN: Final = (
    "INSERT INTO runs (workflow_id, run_id, status, first_seen_ns) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (workflow_id, run_id) DO UPDATE SET status = excluded.status WHERE done = 0"
)
_RECORD_RUN: Final = (
    "INSERT INTO runs (workflow_id, run_id, status, first_seen_ns, done, done_ns) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workflow_id, run_id) DO UPDATE SET "
    "status = excluded.status, done = max(done, excluded.done), "
    "done_ns = coalesce(done_ns, excluded.done_ns)"
)
_MARK_CAPTURED: Final = (
    "INSERT OR IGNORE INTO captured_steps (run_id, step_id, captured_ns) VALUES (?, ?, ?)"
)
_SPOOL: Final = (
    "INSERT INTO spool (workflow_id, run_id, signal, payload, samples, queued_ns) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_COUNTS: Final = (
    "SELECT (SELECT count(*) FROM workflows), (SELECT count(*) FROM runs), "
    "(SELECT count(*) FROM runs WHERE done = 0), (SELECT count(*) FROM captured_steps), "
    "(SELECT count(*) FROM spool WHERE signal = 'traces'), "
    "(SELECT count(*) FROM spool WHERE signal = 'logs')"
)


@dataclass(frozen=True)
class RunState:
    status: str | None
    done: bool


class Outgoing(NamedTuple):
    """One record for a sink: a serialised OTLP message and what it adds to the metrics."""

    signal: str  # "traces" or "logs"
    payload: bytes
    samples: str = ""  # JSON, see workflow_metrics.encode_samples; "" adds nothing


@dataclass(frozen=True)
class Capture:
    """What one run gave in this poll: steps to mark captured, records to spool."""

    workflow_id: str
    run_id: str
    status: str | None
    steps: tuple[str, ...]  # ids of the steps captured now
    outgoing: tuple[Outgoing, ...]
    run_done: bool

    @property
    def span_count(self) -> int:
        return sum(1 for item in self.outgoing if item.signal == "traces")

    @classmethod
    def closed(cls, workflow_id: str, run_id: str, status: str | None = None) -> Capture:
        """A run given up without spans (gone from the API, or unreadable)."""
        return cls(workflow_id, run_id, status, (), (), run_done=True)


@dataclass(frozen=True)
class Spooled:
    id: int
    workflow_id: str
    run_id: str
    payload: bytes | str  # str: a span spooled as JSON by a version before schema 4
    samples: str | None = None


class Ledger:
    """The SQLite ledger: what was seen, what waits in the spool, what was delivered.

    Invariants: a step is marked captured in the transaction that spools its span; a
    spooled span is deleted only with the sink's confirmation, in the transaction that
    adds it to the persisted metric totals; a done run is never undone. Opened by
    `app.open_runtime` (one per process and state file); used by the collector, delivery
    and backfill from the event loop's thread.
    """

    def __init__(self, path: Path | str) -> None:
        self._file = LedgerFile(path)
        self.path = self._file.path

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- workflows ---------------------------------------------------------------------

    def workflow_since(self, workflow_id: str) -> int | None:
        row = self._file.one("SELECT since_ns FROM workflows WHERE workflow_id = ?", (workflow_id,))
        return None if row is None else int(row[0])

    def register_workflow(self, workflow_id: str, *, since_ns: int, now_ns: int) -> int:
        """Record the first sight of a workflow; returns the since_ns now in force."""
        with self._file.write() as db:
            db.execute(
                "INSERT OR IGNORE INTO workflows (workflow_id, since_ns, first_seen_ns) "
                "VALUES (?, ?, ?)",
                (workflow_id, since_ns, now_ns),
            )
        found = self.workflow_since(workflow_id)
        return since_ns if found is None else found

    # --- runs --------------------------------------------------------------------------

    def run_states(self, workflow_id: str, run_ids: Sequence[str]) -> dict[str, RunState]:
        states: dict[str, RunState] = {}
        for chunk in _chunks(run_ids, 500):
            marks = ",".join("?" * len(chunk))
            for run_id, status, done in self._file.all(
                f"SELECT run_id, status, done FROM runs WHERE workflow_id = ? "
                f"AND run_id IN ({marks})",
                (workflow_id, *chunk),
            ):
                states[run_id] = RunState(status, bool(done))
        return states

    def open_runs(self, workflow_id: str) -> list[str]:
        rows = self._file.all(
            "SELECT run_id FROM runs WHERE workflow_id = ? AND done = 0 ORDER BY first_seen_ns",
            (workflow_id,),
        )
        return [row[0] for row in rows]

    def track_runs(
        self, workflow_id: str, runs: Iterable[tuple[str, str | None]], now_ns: int
    ) -> None:
        with self._file.write() as db:
            db.executemany(
                _TRACK_RUN, [(workflow_id, run_id, status, now_ns) for run_id, status in runs]
            )

    def note_unreadable(self, workflow_id: str, run_id: str) -> int:
        """One more poll whose answer about this run passed a bound; returns the count."""
        with self._file.write() as db:
            db.execute(
                "UPDATE runs SET unreadable = unreadable + 1 WHERE workflow_id = ? AND run_id = ?",
                (workflow_id, run_id),
            )
        row = self._file.one(
            "SELECT unreadable FROM runs WHERE workflow_id = ? AND run_id = ?",
            (workflow_id, run_id),
        )
        return int(row[0]) if row else 1

    def captured_steps(self, run_id: str) -> set[str]:
        rows = self._file.all("SELECT step_id FROM captured_steps WHERE run_id = ?", (run_id,))
        return {row[0] for row in rows}

    def capture(self, captures: Iterable[Capture], now_ns: int) -> None:
        """Spool the spans and mark their steps and runs captured, in one transaction."""
        with self._file.write() as db:
            for item in captures:
                steps = [(item.run_id, step_id, now_ns) for step_id in item.steps]
                db.executemany(_MARK_CAPTURED, steps)
                records = [(item.workflow_id, item.run_id, *out, now_ns) for out in item.outgoing]
                db.executemany(_SPOOL, records)
                done_ns = now_ns if item.run_done else None
                run = (item.workflow_id, item.run_id, item.status, now_ns, item.run_done, done_ns)
                db.execute(_RECORD_RUN, run)

    def spooled(self, limit: int, after_id: int = 0, signal: str = "traces") -> list[Spooled]:
        rows = self._file.all(
            "SELECT id, workflow_id, run_id, payload, samples FROM spool "
            "WHERE id > ? AND signal = ? ORDER BY id LIMIT ?",
            (after_id, signal, limit),
        )
        return [Spooled(*row) for row in rows]

    def confirm(
        self, spooled_ids: Sequence[int], metric_rows: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """The sink confirmed these records: they leave the spool, and their counts are kept."""
        with self._file.write() as db:
            db.executemany("DELETE FROM spool WHERE id = ?", [(i,) for i in spooled_ids])
            db.executemany(
                "INSERT OR REPLACE INTO metric_series (metric, labels, value) VALUES (?, ?, ?)",
                metric_rows,
            )

    def metric_series(self) -> list[tuple[str, str, str]]:
        return [
            (row[0], row[1], row[2])
            for row in self._file.all("SELECT metric, labels, value FROM metric_series", ())
        ]

    def pending_count(self, signal: str = "traces") -> int:
        row = self._file.one("SELECT count(*) FROM spool WHERE signal = ?", (signal,))
        return int(row[0]) if row else 0

    def prune(self, cutoff_ns: int) -> int:
        """Forget runs captured before `cutoff_ns`, and never export older runs again.

        Each workflow's window moves up to the cutoff: a forgotten run that still shows
        in the history (it ended before it was captured, so before the cutoff) stays
        ignored instead of being exported a second time.
        """
        with self._file.write() as db:
            db.execute(
                "DELETE FROM captured_steps WHERE run_id IN "
                "(SELECT run_id FROM runs WHERE done = 1 AND done_ns < ?)",
                (cutoff_ns,),
            )
            removed = db.execute(
                "DELETE FROM runs WHERE done = 1 AND done_ns < ?", (cutoff_ns,)
            ).rowcount
            db.execute("UPDATE workflows SET since_ns = max(since_ns, ?)", (cutoff_ns,))
        return int(removed)

    def counts(self) -> dict[str, int]:
        """What `check` prints about the ledger."""
        row = self._file.one(_COUNTS, ())
        assert row is not None
        keys = ("workflows", "runs", "open_runs", "steps", "pending_spans", "pending_logs")
        return dict(zip(keys, row, strict=True))


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
