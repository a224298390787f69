"""The SQLite ledger: what was seen, what waits in the spool, what was delivered.

A finished step (or run) is mapped once, and its span goes into the spool table in the
same transaction that marks the step as captured; so the API is never asked for it again,
and spans waiting for a backend that is down live on disk, not in RAM. A spooled span is
deleted only after the sink confirmed it: a crash or an outage can cost a duplicate (ids
are deterministic, backends deduplicate) but never a lost span. WAL mode lets the daemon
write while an operator reads. No credentials are ever stored here.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

from exporter.errors import StateError

SCHEMA_VERSION: Final = 4
# SQLite keeps these beside the ledger in WAL mode; they hold ledger pages too.
COMPANION_SUFFIXES: Final = ("-wal", "-shm")
RECOVERY_HINT: Final = (
    "move it aside (with its -wal and -shm files), start again, then run "
    "`orchestra-otel backfill --since TIME` for the window it covered "
    "(README: Recovering the ledger)"
)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- since_ns: runs that ended before it were never ours to export (the first-start
-- lookback); fixed the first time the workflow is seen.
CREATE TABLE IF NOT EXISTS workflows (
    workflow_id   TEXT PRIMARY KEY,
    since_ns      INTEGER NOT NULL,
    first_seen_ns INTEGER NOT NULL
);
-- A run is tracked from the poll that first sees it; done = its root span was captured
-- (spooled), so the API is not asked about it again.
CREATE TABLE IF NOT EXISTS runs (
    workflow_id   TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    status        TEXT,
    first_seen_ns INTEGER NOT NULL,
    done          INTEGER NOT NULL DEFAULT 0,
    done_ns       INTEGER,
    unreadable    INTEGER NOT NULL DEFAULT 0,  -- polls whose answer passed a bound
    PRIMARY KEY (workflow_id, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_open ON runs (workflow_id) WHERE done = 0;
CREATE TABLE IF NOT EXISTS captured_steps (
    run_id      TEXT NOT NULL,
    step_id     TEXT NOT NULL,
    captured_ns INTEGER NOT NULL,
    PRIMARY KEY (run_id, step_id)
) WITHOUT ROWID;
-- Totals of the workflow metrics, written with the confirmations they count, so a
-- restart neither loses nor double-counts them.
CREATE TABLE IF NOT EXISTS metric_series (
    metric TEXT NOT NULL,
    labels TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (metric, labels)
) WITHOUT ROWID;
-- Spans waiting for the sink's confirmation, oldest first.
CREATE TABLE IF NOT EXISTS spool (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    payload     BLOB NOT NULL,     -- an OTLP Span or LogRecord (schema <= 3: span JSON)
    signal      TEXT NOT NULL DEFAULT 'traces',
    samples     TEXT,              -- the workflow-metric samples confirmation adds
    queued_ns   INTEGER NOT NULL
);
"""


# (version it leads to, statements); a ledger of the version before the first one is
# the oldest that upgrades in place.
MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = (
    (3, ("ALTER TABLE runs ADD COLUMN unreadable INTEGER NOT NULL DEFAULT 0",)),
    # Spans are spooled as OTLP bytes with their metric samples; logs share the spool.
    # Rows of schema 3 keep their JSON payload: delivery reads both.
    (
        4,
        (
            "ALTER TABLE spool ADD COLUMN signal TEXT NOT NULL DEFAULT 'traces'",
            "ALTER TABLE spool ADD COLUMN samples TEXT",
        ),
    ),
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
        self.path = Path(path)
        _prepare_private_files(self.path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the state file {self.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives process crashes; a power cut may drop the last
            # commit, which costs a re-export (a duplicate), never a loss.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._check_integrity()
            self._db.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.Error as exc:
            self._db.close()
            if _is_damage(exc):
                raise StateError(
                    f"the state file {self.path} is damaged ({exc}); {RECOVERY_HINT}"
                ) from exc
            raise StateError(
                f"cannot open the state file {self.path}: {exc} (the daemon must be able to "
                f"write it and create {self.path.name}-wal and -shm beside it)"
            ) from exc
        except StateError:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- workflows ---------------------------------------------------------------------

    def workflow_since(self, workflow_id: str) -> int | None:
        row = self._one("SELECT since_ns FROM workflows WHERE workflow_id = ?", (workflow_id,))
        return None if row is None else int(row[0])

    def register_workflow(self, workflow_id: str, *, since_ns: int, now_ns: int) -> int:
        """Record the first sight of a workflow; returns the since_ns now in force."""
        with self._write() as db:
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
            for run_id, status, done in self._all(
                f"SELECT run_id, status, done FROM runs WHERE workflow_id = ? "
                f"AND run_id IN ({marks})",
                (workflow_id, *chunk),
            ):
                states[run_id] = RunState(status, bool(done))
        return states

    def open_runs(self, workflow_id: str) -> list[str]:
        rows = self._all(
            "SELECT run_id FROM runs WHERE workflow_id = ? AND done = 0 ORDER BY first_seen_ns",
            (workflow_id,),
        )
        return [row[0] for row in rows]

    def track_runs(
        self, workflow_id: str, runs: Iterable[tuple[str, str | None]], now_ns: int
    ) -> None:
        with self._write() as db:
            db.executemany(
                "INSERT INTO runs (workflow_id, run_id, status, first_seen_ns) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (workflow_id, run_id) DO UPDATE SET status = excluded.status "
                "WHERE done = 0",
                [(workflow_id, run_id, status, now_ns) for run_id, status in runs],
            )

    def note_unreadable(self, workflow_id: str, run_id: str) -> int:
        """One more poll whose answer about this run passed a bound; returns the count."""
        with self._write() as db:
            db.execute(
                "UPDATE runs SET unreadable = unreadable + 1 WHERE workflow_id = ? AND run_id = ?",
                (workflow_id, run_id),
            )
        row = self._one(
            "SELECT unreadable FROM runs WHERE workflow_id = ? AND run_id = ?",
            (workflow_id, run_id),
        )
        return int(row[0]) if row else 1

    def captured_steps(self, run_id: str) -> set[str]:
        rows = self._all("SELECT step_id FROM captured_steps WHERE run_id = ?", (run_id,))
        return {row[0] for row in rows}

    def capture(self, captures: Iterable[Capture], now_ns: int) -> None:
        """Spool the spans and mark their steps and runs captured, in one transaction."""
        with self._write() as db:
            for item in captures:
                db.executemany(
                    "INSERT OR IGNORE INTO captured_steps (run_id, step_id, captured_ns) "
                    "VALUES (?, ?, ?)",
                    [(item.run_id, step_id, now_ns) for step_id in item.steps],
                )
                db.executemany(
                    "INSERT INTO spool (workflow_id, run_id, signal, payload, samples, queued_ns) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(item.workflow_id, item.run_id, *out, now_ns) for out in item.outgoing],
                )
                db.execute(
                    "INSERT INTO runs (workflow_id, run_id, status, first_seen_ns, done, done_ns) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workflow_id, run_id) DO UPDATE SET "
                    "status = excluded.status, done = max(done, excluded.done), "
                    "done_ns = coalesce(done_ns, excluded.done_ns)",
                    (
                        item.workflow_id,
                        item.run_id,
                        item.status,
                        now_ns,
                        int(item.run_done),
                        now_ns if item.run_done else None,
                    ),
                )

    def spooled(self, limit: int, after_id: int = 0, signal: str = "traces") -> list[Spooled]:
        rows = self._all(
            "SELECT id, workflow_id, run_id, payload, samples FROM spool "
            "WHERE id > ? AND signal = ? ORDER BY id LIMIT ?",
            (after_id, signal, limit),
        )
        return [Spooled(*row) for row in rows]

    def confirm(
        self, spooled_ids: Sequence[int], metric_rows: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """The sink confirmed these records: they leave the spool, and their counts are kept."""
        with self._write() as db:
            db.executemany("DELETE FROM spool WHERE id = ?", [(i,) for i in spooled_ids])
            db.executemany(
                "INSERT OR REPLACE INTO metric_series (metric, labels, value) VALUES (?, ?, ?)",
                metric_rows,
            )

    def metric_series(self) -> list[tuple[str, str, str]]:
        return [
            (row[0], row[1], row[2])
            for row in self._all("SELECT metric, labels, value FROM metric_series", ())
        ]

    def pending_count(self, signal: str = "traces") -> int:
        row = self._one("SELECT count(*) FROM spool WHERE signal = ?", (signal,))
        return int(row[0]) if row else 0

    def prune(self, cutoff_ns: int) -> int:
        """Forget runs captured before `cutoff_ns`, and never export older runs again.

        Each workflow's window moves up to the cutoff: a forgotten run that still shows
        in the history (it ended before it was captured, so before the cutoff) stays
        ignored instead of being exported a second time.
        """
        with self._write() as db:
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
        row = self._one(
            "SELECT (SELECT count(*) FROM workflows), (SELECT count(*) FROM runs), "
            "(SELECT count(*) FROM runs WHERE done = 0), (SELECT count(*) FROM captured_steps), "
            "(SELECT count(*) FROM spool WHERE signal = 'traces'), "
            "(SELECT count(*) FROM spool WHERE signal = 'logs')",
            (),
        )
        assert row is not None
        keys = ("workflows", "runs", "open_runs", "steps", "pending_spans", "pending_logs")
        return dict(zip(keys, row, strict=True))

    # --- plumbing ----------------------------------------------------------------------

    def _check_integrity(self) -> None:
        """A damaged ledger is refused at start, not found out poll after poll."""
        rows = self._db.execute("PRAGMA quick_check").fetchall()
        problems = [str(row[0]) for row in rows if row and row[0] != "ok"]
        if problems:
            more = f" and {len(problems) - 1} more problems" if len(problems) > 1 else ""
            raise StateError(
                f"the state file {self.path} is damaged (SQLite quick_check: "
                f"{problems[0]}{more}); {RECOVERY_HINT}"
            )

    def _check_version(self) -> None:
        row = self._one("SELECT value FROM meta WHERE key = 'schema_version'", ())
        if row is None:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) < MIGRATIONS[0][0] - 1:
            raise StateError(
                f"the state file {self.path} is from an older development version "
                f"(schema {row[0]}); move it away to start afresh"
            )
        elif int(row[0]) < SCHEMA_VERSION:
            self._migrate(int(row[0]))
        elif int(row[0]) > SCHEMA_VERSION:
            raise StateError(
                f"the state file {self.path} was written by a newer orchestra-otel "
                f"(schema {row[0]}); upgrade, or point ORCHESTRA_STATE_PATH elsewhere"
            )

    def _migrate(self, version: int) -> None:
        """Bring an older ledger up to date in one transaction: nothing spooled is lost."""
        with self._write() as db:
            for target, statements in MIGRATIONS:
                if target > version:
                    for statement in statements:
                        db.execute(statement)
            db.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the state file {self.path}: {exc}") from exc

    def _one(self, sql: str, params: tuple[object, ...]) -> tuple[Any, ...] | None:
        try:
            row: tuple[Any, ...] | None = self._db.execute(sql, params).fetchone()
            return row
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the state file {self.path}: {exc}") from exc

    def _all(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        try:
            return list(self._db.execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the state file {self.path}: {exc}") from exc


def _prepare_private_files(path: Path) -> None:
    """Create the ledger 0600 before SQLite does (it honours the umask, often 0644), and
    make an existing ledger and its -wal/-shm files 0600 too (SQLite gives new -wal/-shm
    files the ledger's mode). Symbolic links are refused, not followed: a link planted
    where the ledger goes would have SQLite create or overwrite its target."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot create the folder of the state file {path}: {exc.strerror or exc}"
        ) from exc
    _open_private(path, create=True)
    for suffix in COMPANION_SUFFIXES:
        _open_private(Path(f"{path}{suffix}"), create=False)


def _open_private(path: Path, *, create: bool) -> None:
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        if create:
            raise StateError(f"cannot create the state file {path}: no such folder") from None
        return  # SQLite creates it, with the ledger's mode
    except OSError as exc:
        raise StateError(_open_failure(path, exc)) from exc
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise StateError(f"the state file {path} is not a regular file")
        os.fchmod(descriptor, 0o600)
    except OSError as exc:
        raise StateError(
            f"cannot make the state file {path} private (mode 0600): {exc.strerror or exc}"
        ) from exc
    finally:
        os.close(descriptor)


def _open_failure(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return (
            f"the state file {path} is a symbolic link, which is not followed; "
            "point ORCHESTRA_STATE_PATH at the file itself"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"cannot write the state file {path} ({exc.strerror}): ORCHESTRA_STATE_PATH must "
            "be in a folder the daemon can write"
        )
    return f"cannot open the state file {path}: {exc.strerror or exc}"


def _is_damage(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
