"""The ledger's SQLite file: opened private, checked, brought to the current schema.

What the tables mean is `exporter.state`'s business; this module keeps the file sound:
0600 and never through a symbolic link, refused when damaged or from a newer version,
migrated in one transaction when older, and every SQLite error translated into a
StateError that names the file (docs/design.md, "The ledger").
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

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


class LedgerFile:
    """One open ledger file, with the schema of this version.

    `write()` is one immediate transaction (rolled back on any exception); `one` and
    `all` read. Used from one thread at a time (the event loop's).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        _prepare_private_files(self.path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the state file {self.path}: {exc}") from exc
        try:
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives process crashes; a power cut may drop the last
            # commit, which costs a re-export (a duplicate), never a loss.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._check_integrity()
            self.db.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.Error as exc:
            self.db.close()
            if _is_damage(exc):
                raise StateError(
                    f"the state file {self.path} is damaged ({exc}); {RECOVERY_HINT}"
                ) from exc
            raise StateError(
                f"cannot open the state file {self.path}: {exc} (the daemon must be able to "
                f"write it and create {self.path.name}-wal and -shm beside it)"
            ) from exc
        except StateError:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def _check_integrity(self) -> None:
        """A damaged ledger is refused at start, not found out poll after poll."""
        rows = self.db.execute("PRAGMA quick_check").fetchall()
        problems = [str(row[0]) for row in rows if row and row[0] != "ok"]
        if problems:
            more = f" and {len(problems) - 1} more problems" if len(problems) > 1 else ""
            raise StateError(
                f"the state file {self.path} is damaged (SQLite quick_check: "
                f"{problems[0]}{more}); {RECOVERY_HINT}"
            )

    def _check_version(self) -> None:
        row = self.one("SELECT value FROM meta WHERE key = 'schema_version'", ())
        if row is None:
            self.db.execute(
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
        with self.write() as db:
            for target, statements in MIGRATIONS:
                if target > version:
                    for statement in statements:
                        db.execute(statement)
            db.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the state file {self.path}: {exc}") from exc

    def one(self, sql: str, params: tuple[object, ...]) -> tuple[Any, ...] | None:
        try:
            row: tuple[Any, ...] | None = self.db.execute(sql, params).fetchone()
            return row
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the state file {self.path}: {exc}") from exc

    def all(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        try:
            return list(self.db.execute(sql, params).fetchall())
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
