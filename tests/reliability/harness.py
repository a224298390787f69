"""Helpers for the reliability tests: the real daemon in a subprocess, observed from outside.

Everything here looks at the daemon the way an operator would: its `/metrics` and
`/readyz`, its process status in /proc, its SQLite ledger opened read-only, the emulator's
request counts and what the OTLP receiver got. Nothing in the daemon is patched.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from exporter.emulator import Emulator, ManualClock, Scenario
from exporter.emulator.demo import demo_workflows
from tests.integration.harness import API_KEY, World
from tests.support.otlp_receiver import OtlpReceiver

_T = TypeVar("_T")


# --------------------------------------------------------------------------- the world


def make_reliability_world(tmp_path: Path, *, history: int = 2, seed: int = 11) -> Iterator[World]:
    """Emulator (manual clock, the four demo workflows, a little history) and receiver.

    The emulator keeps a long request log, so a test can check every steps call.
    """
    clock = ManualClock(time.time())
    scenario = Scenario(demo_workflows(clock()), clock=clock, seed=seed)
    for index, workflow_id in enumerate(scenario.workflow_ids()):
        scenario.add_history(
            workflow_id, history, every=30.0, duration=(1.0, 5.0), fail_runs=(index % history,)
        )
    emulator = Emulator(scenario, api_key=API_KEY, recent_limit=100_000)
    emulator.start()
    receiver = OtlpReceiver()
    try:
        receiver.start()
        yield World(scenario, clock, emulator, receiver, tmp_path / "ledger.db")
    finally:
        receiver.stop()
        emulator.stop()


def add_finished_runs(world: World, per_workflow: int = 1) -> list[str]:
    """Runs that are already over when they first become visible (ended `now`).

    Advances the clock first so that every batch sits after the previous one.
    """
    world.clock.advance(30.0 * per_workflow)
    run_ids: list[str] = []
    for workflow_id in world.scenario.workflow_ids():
        run_ids += world.scenario.add_history(
            workflow_id, per_workflow, every=10.0, duration=(1.0, 5.0), failure_rate=0.2
        )
    return run_ids


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- expectations


def expected_spans(world: World) -> dict[str, set[str]]:
    """trace id (run id without dashes) -> step ids, for every run the emulator shows ended."""
    return {
        run_id.replace("-", ""): {str(step["id"]) for step in steps}
        for run_id, steps in world.finished_runs().items()
    }


@dataclass
class Delivery:
    """What the receiver got, compared with what the emulator says must arrive."""

    expected_spans: int
    received_spans: int
    unique_spans: int
    duplicates: int
    missing: list[str] = field(default_factory=list)  # human-readable, empty when complete

    @property
    def complete(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        text = (
            f"{self.expected_spans} spans expected, {self.received_spans} received "
            f"({self.unique_spans} distinct, {self.duplicates} duplicates)"
        )
        if self.missing:
            text += f"; {len(self.missing)} problems, first: " + "; ".join(self.missing[:5])
        return text


def delivery(world: World) -> Delivery:
    """Every finished run: exactly one root in its trace and one span per step id.

    Unique spans are counted by (trace_id, span_id); copies of one span are duplicates.
    """
    expected = expected_spans(world)
    spans = world.receiver.spans()
    by_trace: dict[str, dict[tuple[str, str], Any]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, {})[span.key] = span
    missing: list[str] = []
    for trace_id, step_ids in expected.items():
        unique = list(by_trace.get(trace_id, {}).values())
        roots = [s for s in unique if not s.parent_span_id]
        got_steps = {s.attributes.get("orchestra.step.id") for s in unique if s.parent_span_id}
        if len(roots) != 1:
            missing.append(f"trace {trace_id}: {len(roots)} distinct root spans")
        for step_id in sorted(step_ids - got_steps):
            missing.append(f"trace {trace_id}: step {step_id} never arrived")
        extra = got_steps - step_ids
        if extra:
            missing.append(f"trace {trace_id}: unexpected step spans {sorted(map(str, extra))}")
        if len(unique) != 1 + len(step_ids):
            missing.append(
                f"trace {trace_id}: {len(unique)} distinct spans, not {1 + len(step_ids)}"
            )
    keys = [span.key for span in spans]
    return Delivery(
        expected_spans=sum(1 + len(steps) for steps in expected.values()),
        received_spans=len(keys),
        unique_spans=len(set(keys)),
        duplicates=len(keys) - len(set(keys)),
        missing=missing,
    )


def steps_calls_by_run(world: World) -> dict[str, int]:
    """run id -> how many times the daemon asked the emulator for that run's steps."""
    calls: dict[str, int] = {}
    for entry in world.emulator.stats()["recent"]:
        if entry["kind"] == "steps":
            run_id = entry["path"].split("?", 1)[0].rstrip("/").split("/")[-2]
            calls[run_id] = calls.get(run_id, 0) + 1
    return calls


# --------------------------------------------------------------------------- the ledger


class LedgerView:
    """The daemon's SQLite ledger, opened read-only the way an operator would inspect it."""

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

    def spool_count(self) -> int:
        return self._retry(lambda db: int(db.execute("SELECT count(*) FROM spool").fetchone()[0]))

    def spool_bytes(self) -> int:
        return self._retry(
            lambda db: int(
                db.execute("SELECT coalesce(sum(length(payload)), 0) FROM spool").fetchone()[0]
            )
        )

    def spool_keys(self) -> list[tuple[str, str]]:
        """(trace_id, span_id) of each spooled span (the spool keeps spans as JSON)."""

        def read(db: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = db.execute("SELECT payload FROM spool ORDER BY id").fetchall()
            return [(doc["t"], doc["s"]) for doc in (json.loads(row[0]) for row in rows)]

        return self._retry(read)

    def spool_identities(self) -> list[tuple[str, str]]:
        """(trace_id, step id) of each spooled span, or (trace_id, "root") for a run's root."""

        def read(db: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = db.execute("SELECT payload FROM spool ORDER BY id").fetchall()
            documents = [json.loads(row[0]) for row in rows]
            return [
                (doc["t"], str(doc["a"].get("orchestra.step.id")) if doc.get("p") else "root")
                for doc in documents
            ]

        return self._retry(read)

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


# --------------------------------------------------------------------------- the daemon


class DaemonProcess:
    """`python -m exporter run` in a subprocess, with its HTTP endpoint and a log file.

    stderr goes to a file, never a pipe: a pipe nobody reads fills up during a long
    outage (a warning per poll) and would block the daemon on a log write.
    """

    def __init__(self, world: World, log_path: Path, protocol: str = "grpc", **env: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        settings = {
            "ORCHESTRA_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "ORCHESTRA_POLL_INTERVAL": "0.5",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
        }
        settings.update(env)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run"],
            env=world.env(protocol, **settings),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    # --- HTTP --------------------------------------------------------------------------

    def _get(self, path: str, timeout: float = 3.0) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read()

    def http_up(self) -> bool:
        try:
            return self._get("/healthz", timeout=1.0)[0] == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """sample name -> [(labels, value)] from /metrics (Prometheus text format)."""
        status, body = self._get("/metrics")
        assert status == 200, status
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(body.decode("utf-8")):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
        return sum(
            value
            for sample_labels, value in self.metrics().get(name, [])
            if all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def readyz(self) -> tuple[int, dict[str, Any]]:
        status, body = self._get("/readyz")
        return status, json.loads(body)

    def ready(self) -> bool:
        """/readyz answers 200 (False too while the HTTP server is not up yet)."""
        try:
            return self.readyz()[0] == 200
        except OSError:
            return False

    # --- process -----------------------------------------------------------------------

    def rss_kb(self) -> int:
        """Resident set size from /proc/PID/status (kB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def kill(self) -> None:
        """SIGKILL: no flush, no cleanup, like an OOM kill or a power cut of the process."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.close()

    def terminate(self, timeout: float = 40.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took to exit)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.close()
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(timeout=10)
        if not self._log.closed:
            self._log.close()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wait_for(
    condition: Callable[[], _T], timeout: float, message: str | Callable[[], str], step: float = 0.1
) -> _T:
    """Poll `condition` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f}s: {text}")
        time.sleep(step)
