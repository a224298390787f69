"""Crashes and shutdowns of the real daemon (`python -m exporter run`).

docs/design.md, "Delivery": "Backend down, daemon killed, machine rebooted: nothing is lost,
and on recovery it is sent once more at most". The daemon is SIGKILLed over and over at
random (seeded) moments while runs keep finishing: right after it starts, while an
export is held by a slow receiver, while it holds the ledger's write lock; each time it
is restarted on the same ledger. At the end every span must have arrived at least once,
duplicates stay few, and the ledger is consistent. A SIGTERM during a slow export must
exit 0 in bounded time without losing the spans of the poll under way.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, wait_for
from tests.support.delivery import delivery, expected_identities, identities
from tests.support.ledger import LedgerView
from tests.support.otlp_receiver import ReceivedSpan
from tests.support.world import World, demo_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20261129
KILLS_PER_KIND = 7  # x 3 kinds = 21 SIGKILLs
EXPORT_DELAY_S = 0.3  # receiver hold time while aiming kills at exports
DUPLICATE_LIMIT = 0.25  # of all spans
SIGTERM_LIMIT_S = 25.0
# Before aiming at a ledger write, the daemon lives this long (seconds) once up.
WARM_UP_S = (0.2, 1.5)
POLLS = "orchestra_otel_polls_total"
RUNS_COUNTED = "orchestra_runs_total"
STEPS_COUNTED = "orchestra_steps_total"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with demo_world(tmp_path, history=2, seed=11) as made:
        yield made


def start(world: World, protocol: str = "grpc", **env: str) -> Daemon:
    """The daemon as every test here runs it: polls every 0.5 s, OTLP timeout 2 s."""
    return world.daemon(protocol=protocol, **{"OTEL_EXPORTER_OTLP_TIMEOUT": "2", **env})


class RunFeeder:
    """Moves the emulator's manual clock along with real time and, every `every` seconds,
    starts one run per workflow lasting `duration` seconds: runs start, progress and end
    while the daemon is killed over and over. Once stopped, no run starts any more.
    """

    def __init__(
        self, world: World, every: float = 1.0, duration: tuple[float, float] = (0.5, 2.5)
    ) -> None:
        self._world = world
        self._every = every
        self._duration = duration
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="run-feeder", daemon=True)
        self.started = 0

    def _run(self) -> None:
        scenario, clock = self._world.scenario, self._world.clock
        last = time.monotonic()
        next_start = clock()
        while not self._stop.wait(0.05):
            now = time.monotonic()
            clock.advance(now - last)
            last = now
            while clock() >= next_start:
                for workflow_id in scenario.workflow_ids():
                    # One run that starts at next_start and ends within `duration`.
                    scenario.add_history(
                        workflow_id,
                        1,
                        every=self._duration[1] + 0.5,
                        end_by=next_start + self._duration[1] + 0.5,
                        duration=self._duration,
                        failure_rate=0.2,
                    )
                    self.started += 1
                next_start += self._every

    def __enter__(self) -> RunFeeder:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def copies_differ(spans: list[ReceivedSpan]) -> list[tuple[str, str]]:
    """Keys whose copies are not the same span (re-exports must be identical)."""

    def content(span: ReceivedSpan) -> tuple[object, ...]:
        return (
            span.parent_span_id,
            span.name,
            span.kind,
            span.start_ns,
            span.end_ns,
            sorted(span.attributes.items()),
            span.events,
            span.links,
            span.status_code,
            span.status_message,
        )

    first: dict[tuple[str, str], tuple[object, ...]] = {}
    differing = []
    for span in spans:
        seen = first.setdefault(span.key, content(span))
        if seen != content(span):
            differing.append(span.key)
    return differing


# --------------------------------------------------------------------------- kill aims


def kill_soon_after_start(daemon: Daemon, world: World, rng: random.Random) -> str:
    """Anywhere from before the imports are done to the first polls."""
    time.sleep(rng.uniform(0.0, 2.0))
    return "startup, before HTTP was up" if not daemon.http_up() else "startup, running"


def kill_during_export(daemon: Daemon, world: World, rng: random.Random) -> str:
    """While the (slowed) receiver holds an export request of this daemon.

    After the kill, the held request is either completed (the spans arrived, but the
    daemon never learnt it: a duplicate later) or dropped (lost with the crash: the
    spans must come from the spool later).

    Aimed at an export after the daemon's first poll completed: each such kill then
    interrupts about one poll's worth of spans (its first poll re-sends what the last
    kill left unconfirmed; kills there are the "startup" and "write" aims' business).
    """
    wait_for(daemon.http_up, 15, "the daemon did not start")
    wait_for(lambda: daemon.metric(POLLS) >= 1, 15, "the daemon never finished a poll")
    time.sleep(rng.uniform(0.0, 0.5))
    attempts = world.receiver.attempt_count()
    deadline = time.monotonic() + 10
    while world.receiver.attempt_count() <= attempts:
        if time.monotonic() > deadline or not daemon.alive:
            return "export aimed, none in flight"
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, EXPORT_DELAY_S * 0.8))
    return "export in flight"


def kill_during_ledger_write(daemon: Daemon, world: World, rng: random.Random) -> str:
    """When another connection cannot take the ledger's write lock: a write is under way.

    The probe takes the lock itself for a few microseconds when it is free (and releases
    it at once; the daemon waits on a busy lock up to 5 s), and is closed before the kill
    so that it never checkpoints the dead daemon's WAL.
    """
    wait_for(daemon.http_up, 15, "the daemon did not start")  # the ledger is open by then
    time.sleep(rng.uniform(*WARM_UP_S))
    probe = sqlite3.connect(world.state_path, timeout=0, isolation_level=None)
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
            except sqlite3.OperationalError as error:
                if "locked" in str(error) or "busy" in str(error):
                    return "ledger write lock held"
                raise
    finally:
        probe.close()
    return "ledger write aimed, lock not seen"


def settled(world: World, dropped: int) -> Callable[[], bool]:
    """True once every export request the receiver admitted was stored or dropped."""
    return lambda: world.receiver.attempt_count() - world.receiver.request_count() == dropped


KILL_AIMS: dict[str, Callable[[Daemon, World, random.Random], str]] = {
    "startup": kill_soon_after_start,
    "export": kill_during_export,
    "write": kill_during_ledger_write,
}


@pytest.mark.slow(seconds=60)
def test_sigkill_at_random_moments_loses_nothing(world: World) -> None:
    rng = random.Random(SEED)
    plan = [kind for kind in KILL_AIMS for _ in range(KILLS_PER_KIND)]
    rng.shuffle(plan)
    landed: Counter[str] = Counter()
    # Spans sent but not confirmed when a daemon died: the only ones that may come twice.
    at_risk = 0
    dropped = 0  # export requests the receiver got but dropped (never stored)
    ledger = LedgerView(world.state_path)
    started = time.monotonic()
    with RunFeeder(world) as feeder:
        for kind in plan:
            world.receiver.set_delay(EXPORT_DELAY_S if kind == "export" else 0.0)
            daemon = start(world)
            try:
                where = KILL_AIMS[kind](daemon, world, rng)
                assert daemon.alive, f"the daemon died by itself:\n{daemon.tail()}"
            finally:
                daemon.kill()
            if where == "export in flight" and rng.random() < 0.5:
                # The request dies with its sender: the receiver drops what it holds.
                world.receiver.stop()
                world.receiver.start()
                dropped = world.receiver.attempt_count() - world.receiver.request_count()
                where += ", request lost"
            else:
                # The receiver finishes (and stores) a request whose sender was killed.
                wait_for(settled(world, dropped), 5, "the receiver did not settle", step=0.02)
            landed[where] += 1
            if world.state_path.exists():
                sent = world.receiver.unique_span_keys()
                at_risk += sum(1 for key in ledger.spool_keys() if key in sent)
    world.receiver.set_delay(0.0)
    kills = sum(landed.values())
    crash_phase_s = time.monotonic() - started

    # The runs under way end (no new run starts); then a last daemon runs to completion.
    world.clock.advance(30.0)
    with start(world) as daemon:
        wait_for(lambda: delivery(world).complete, 60, lambda: delivery(world).summary())
        wait_for(lambda: ledger.spool_count() == 0, 20, "the spool did not drain")
        wait_for(daemon.ready, 15, lambda: f"not ready: {daemon.readyz()}")
        # The workflow metrics count a run or step when its span is confirmed, with the
        # totals kept in the ledger: neither lost nor counted twice across the crashes.
        counted_runs = daemon.metric(RUNS_COUNTED)
        counted_steps = daemon.metric(STEPS_COUNTED)
        code, took = daemon.terminate(timeout=30)
    assert code == 0, daemon.stderr[-3000:]
    finished = world.finished_runs()
    assert (counted_runs, counted_steps) == (
        len(finished),
        sum(len(steps) for steps in finished.values()),
    )

    # Nothing lost: every run's root and every step, at least once.
    result = delivery(world)
    spans = world.receiver.spans()
    assert set(identities(spans)) >= expected_identities(world)
    assert result.unique_spans == result.expected_spans
    # Copies come only from crashes between a send and its confirmation, each such span
    # once more per crash; they stay few; every copy is the very same span.
    assert result.duplicates <= at_risk, (result, at_risk)
    assert result.duplicates < DUPLICATE_LIMIT * result.expected_spans, result
    assert copies_differ(spans) == []

    # The ledger is consistent: nothing waits, every finished run is done, every step
    # of it captured, and SQLite finds no damage after all those crashes.
    runs = ledger.runs()
    assert ledger.spool_count() == 0
    assert {run_id for run_id, done in runs.items() if not done} == set()
    assert set(finished) <= {run_id for run_id, done in runs.items() if done}
    captured = ledger.captured_steps()
    assert {(run, str(step["id"])) for run, steps in finished.items() for step in steps} <= captured
    assert ledger.integrity() == "ok"

    assert kills >= 20
    # The aims hit: kills really landed in exports (the receiver held this daemon's
    # request) and in ledger writes, not only in idle time.
    in_export = sum(n for where, n in landed.items() if where.startswith("export in flight"))
    assert in_export >= KILLS_PER_KIND // 2, landed
    print(
        f"\n{kills} SIGKILLs survived in {crash_phase_s:.0f}s ({dict(landed)}); {len(finished)}"
        f" runs ({feeder.started} started during the kills); spans expected"
        f" {result.expected_spans}, received {result.received_spans},"
        f" unique {result.unique_spans}, duplicates {result.duplicates}"
        f" ({100 * result.duplicates / result.expected_spans:.1f}%; {at_risk} were sent"
        f" unconfirmed at a kill); final SIGTERM exit"
        f" {code} in {took:.1f}s"
    )


@dataclass(frozen=True)
class SlowExport:
    """A receiver that holds each export `delay_s`, and the daemon's OTLP timeout."""

    delay_s: float
    otlp_timeout_s: int
    confirmed: bool  # the export completes during the shutdown and is confirmed


@pytest.mark.parametrize(
    ("protocol", "case"),
    [
        # The export completes during the shutdown: it is confirmed before the exit.
        pytest.param("grpc", SlowExport(2.0, 6, True), id="grpc-slow"),
        pytest.param("http/protobuf", SlowExport(2.0, 6, True), id="http-slow"),
        # The backend hangs beyond the exporter's timeout: nothing confirmed, all spooled.
        pytest.param("grpc", SlowExport(60.0, 3, False), id="grpc-hung"),
        pytest.param("http/protobuf", SlowExport(60.0, 3, False), id="http-hung"),
    ],
)
def test_sigterm_during_slow_export_exits_promptly_and_loses_nothing(
    world: World, protocol: str, case: SlowExport
) -> None:
    check_sigterm_during_export(world, protocol, case)


@pytest.mark.parametrize(
    "protocol",
    [
        pytest.param("grpc", id="grpc"),
        pytest.param("http/protobuf", id="http"),
    ],
)
def test_sigterm_exit_is_bounded_by_the_grace_not_the_otlp_timeout(
    world: World, protocol: str
) -> None:
    """A backend that hangs longer than the shutdown grace (20 s), with a long timeout."""
    check_sigterm_during_export(world, protocol, SlowExport(120.0, 60, confirmed=False))


def check_sigterm_during_export(world: World, protocol: str, case: SlowExport) -> None:
    delay_s, otlp_timeout_s, confirmed = case.delay_s, case.otlp_timeout_s, case.confirmed
    expected = expected_identities(world)
    ledger = LedgerView(world.state_path)
    world.receiver.set_delay(delay_s)
    with start(world, protocol, OTEL_EXPORTER_OTLP_TIMEOUT=str(otlp_timeout_s)) as daemon:
        # The first poll captures the history and exports it: SIGTERM while it is held.
        wait_for(lambda: world.receiver.attempt_count() >= 1, 30, "no export attempt")
        time.sleep(0.2)
        code, took = daemon.terminate(timeout=SIGTERM_LIMIT_S)
    assert code == 0, daemon.stderr[-3000:]
    assert took < SIGTERM_LIMIT_S

    # Whatever the receiver still holds is dropped, never stored: only what was
    # confirmed before the exit counts as received.
    world.receiver.stop()
    world.receiver.set_delay(0.0)
    world.receiver.start()
    received = set(identities(world.receiver.spans()))
    spooled = ledger.spool_identities()
    # Nothing lost: each span of the poll under way is either confirmed or spooled.
    assert expected <= received | set(spooled)
    if confirmed:
        assert (len(received), len(spooled)) == (len(expected), 0)
    else:
        assert (len(received), sorted(spooled)) == (0, sorted(expected))

    # A following `once` delivers the rest, and only the rest.
    before = world.receiver.span_count()
    once = world.cli("once", protocol=protocol, timeout=60)
    assert once.returncode == 0, once.stderr
    assert world.receiver.span_count() - before == len(spooled)
    assert set(identities(world.receiver.spans())) == expected
    assert world.receiver.duplicate_count() == 0
    assert ledger.spool_count() == 0
    print(
        f"\n[{protocol}, receiver delay {delay_s:g}s, OTLP timeout {otlp_timeout_s}s]"
        f" SIGTERM exit {code} in {took:.1f}s; {len(received)} spans confirmed before the"
        f" exit, {len(spooled)} still spooled and delivered by `once`"
    )
