"""The daemon's SQLite ledger, opened read-only the way an operator would inspect it."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from exporter.mapping.otlp import SpanSpec, decode_span

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
