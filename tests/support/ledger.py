"""The daemon's SQLite ledger, opened read-only the way an operator would inspect it; and
ledgers as the version before schema 4 wrote them (span JSON in the spool)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.trace import StatusCode

from exporter.mapping.ids import format_span_id, format_trace_id
from exporter.mapping.otlp import LinkSpec, SpanSpec, decode_span

_T = TypeVar("_T")


class LedgerView:
    """Read-only queries on a ledger file that a daemon may be writing at the same time."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        try:
            yield db
        finally:
            db.close()

    def _retry(self, read: Callable[[sqlite3.Connection], _T]) -> _T:
        # A read-only reader can meet SQLITE_BUSY for a moment while a WAL is recovered
        # after a crash; that is the reader's problem, not the daemon's.
        deadline = time.monotonic() + 10
        while True:
            try:
                with self._connect() as db:
                    return read(db)
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def spool_count(self, signal: str = "traces") -> int:
        """Spans (or log records) waiting in the spool, not yet confirmed by the backend."""
        return self._retry(
            lambda db: int(
                db.execute("SELECT count(*) FROM spool WHERE signal = ?", (signal,)).fetchone()[0]
            )
        )

    def spool_bytes(self) -> int:
        return self._retry(
            lambda db: int(
                db.execute("SELECT coalesce(sum(length(payload)), 0) FROM spool").fetchone()[0]
            )
        )

    def _spooled(self) -> list[SpanSpec]:
        """The spooled spans as the spool keeps them (OTLP Span bytes), in spool order."""

        def read(db: sqlite3.Connection) -> list[SpanSpec]:
            rows = db.execute(
                "SELECT payload FROM spool WHERE signal = 'traces' ORDER BY id"
            ).fetchall()
            return [decode_span(Span.FromString(row[0])) for row in rows]

        return self._retry(read)

    def spool_keys(self) -> list[tuple[str, str]]:
        """(trace_id, span_id) of each spooled span."""
        return [
            (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
            for span in self._spooled()
        ]

    def spool_identities(self) -> list[tuple[str, str]]:
        """(trace_id, step id) of each spooled span, or (trace_id, "root") for a run's root."""
        found = []
        for span in self._spooled():
            step = span.attributes.get("orchestra.step.id")
            found.append((f"{span.context.trace_id:032x}", str(step) if step else "root"))
        return found

    def runs(self) -> dict[str, bool]:
        """run id -> done."""
        return self._retry(
            lambda db: {
                str(run_id): bool(done)
                for run_id, done in db.execute("SELECT run_id, done FROM runs").fetchall()
            }
        )

    def captured_steps(self) -> set[tuple[str, str]]:
        return self._retry(
            lambda db: {
                (str(r), str(s))
                for r, s in db.execute("SELECT run_id, step_id FROM captured_steps").fetchall()
            }
        )

    def integrity(self) -> str:
        return self._retry(lambda db: str(db.execute("PRAGMA integrity_check").fetchone()[0]))


# --- ledgers of the version before schema 4 ----------------------------------------------

# The tables as schema 3 created them (`git show b93a343:exporter/state.py`): the spool
# kept each span as JSON text, with neither a signal nor metric samples.
SCHEMA_3 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workflows (
    workflow_id   TEXT PRIMARY KEY,
    since_ns      INTEGER NOT NULL,
    first_seen_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    workflow_id   TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    status        TEXT,
    first_seen_ns INTEGER NOT NULL,
    done          INTEGER NOT NULL DEFAULT 0,
    done_ns       INTEGER,
    unreadable    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow_id, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_open ON runs (workflow_id) WHERE done = 0;
CREATE TABLE IF NOT EXISTS captured_steps (
    run_id      TEXT NOT NULL,
    step_id     TEXT NOT NULL,
    captured_ns INTEGER NOT NULL,
    PRIMARY KEY (run_id, step_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metric_series (
    metric TEXT NOT NULL,
    labels TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (metric, labels)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spool (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    payload     TEXT NOT NULL,
    queued_ns   INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('schema_version', '3');
"""


def write_schema_3(path: Path) -> None:
    """An empty ledger as the previous version left it."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_3)


def spool_legacy(path: Path, rows: Iterable[tuple[str, str, str]], queued_ns: int = 1) -> None:
    """Spool (workflow id, run id, span JSON) rows as schema 3 did: a TEXT payload, and in
    an upgraded ledger the defaults the migration gives old rows (traces, no samples)."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executemany(
            "INSERT INTO spool (workflow_id, run_id, payload, queued_ns) VALUES (?, ?, ?, ?)",
            [(workflow_id, run_id, text, queued_ns) for workflow_id, run_id, text in rows],
        )


def legacy_json(span: SpanSpec) -> str:
    """A span as schema 3 spooled it: `exporter.spool.encode_span` of that version
    (`git show 58acdf5~1:exporter/spool.py`), which read the same fields off a ReadableSpan."""
    context = span.context
    document: dict[str, Any] = {
        "n": span.name,
        "t": format_trace_id(context.trace_id),
        "s": format_span_id(context.span_id),
        "k": span.kind.value,
        "b": span.start_time,
        "e": span.end_time,
        "a": dict(span.attributes or {}),
    }
    if span.parent is not None:
        document["p"] = format_span_id(span.parent.span_id)
        if span.parent.is_remote:
            document["pr"] = 1
    if span.events:
        document["ev"] = [[ev.name, ev.timestamp, dict(ev.attributes or {})] for ev in span.events]
    if span.links:
        document["l"] = [_legacy_link(link) for link in span.links]
    if span.status.status_code is not StatusCode.UNSET:
        document["st"] = [span.status.status_code.value, span.status.description]
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))


def _legacy_link(link: LinkSpec) -> list[Any]:
    context = link.context
    entry: list[Any] = [
        format_trace_id(context.trace_id),
        format_span_id(context.span_id),
        dict(link.attributes or {}),
    ]
    if context.is_remote:
        entry += [1, int(context.trace_flags)]
    return entry
