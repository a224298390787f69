"""The adaptive poll schedule in the real daemon: busy workflows polled every tick, idle
ones backing off, seen from the emulator's request log, /metrics, `check` and the log.

Every bound is the schedule's arithmetic (exporter/schedule.py), never a timing ratio: a
daemon on a busy machine can only poll later than due, so the gaps between two history
requests of one idle workflow have lower bounds that hold however loaded the machine is,
and a workflow polled every tick is listed far more often than one that backs off.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.emulator import Scenario
from exporter.emulator.demo import demo_workflows
from tests.support.api_log import Arrival, arrivals, describe
from tests.support.daemon import Daemon, orchestra_otel, wait_for
from tests.support.world import World, open_world, user_env

pytestmark = pytest.mark.integration

INTERVAL = 0.5  # the tick too: ORCHESTRA_POLL_INTERVAL_MIN defaults to it
MAX = 4.0
OBSERVED_S = 12.0  # from the first poll
ACTIVE = 2
IDLE = 10
DESCRIBED = (
    "every 0.5s while a run is in flight, every 0.5s for 300s after a run was seen, "
    "idle workflows back off from 0.5s, doubling, to 4s"
)
SLACK = 0.05  # the daemon's and the emulator's clocks, read in two processes


def _workflow_id(index: int) -> str:
    return str(uuid.UUID(int=0x5C4ED << 64 | index))


def _fleet(now: float) -> tuple[Scenario, list[str], list[str]]:
    """Twelve workflows on the real clock: two start a run every second (ten runs each),
    ten have only runs from long before the lookback window."""
    scenario = Scenario(clock=time.time, seed=14)
    templates = demo_workflows(now)
    active, idle = [], []
    for index in range(ACTIVE + IDLE):
        spec = dataclasses.replace(
            templates[index % len(templates)],
            workflow_id=_workflow_id(index),
            name=f"workflow-{index:02d}",
        )
        scenario.add_workflow(spec)
        if index < ACTIVE:
            scenario.add_schedule(spec.workflow_id, 1.0, duration=(0.2, 0.6), count=10)
            active.append(spec.workflow_id)
        else:
            scenario.add_history(spec.workflow_id, 2, every=60.0, end_by=now - 7200.0)
            idle.append(spec.workflow_id)
    return scenario, active, idle


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[World, list[str], list[str]]]:
    scenario, active, idle = _fleet(time.time())
    with open_world(scenario, tmp_path, recent_limit=100_000) as world:
        yield world, active, idle


def _idle_gap_bounds(count: int) -> list[float]:
    """The shortest gaps between the listings of a workflow that stays idle: the wait
    after the n-th quiet listing is min(INTERVAL * 2**n, MAX), and a workflow due before
    the middle of a tick is polled at that tick."""
    return [min(INTERVAL * 2**n, MAX) - INTERVAL / 2 - SLACK for n in range(1, count)]


def _gaps(listed: list[Arrival]) -> list[float]:
    return [later.at - earlier.at for earlier, later in itertools.pairwise(listed)]


def _spans_of_runs(world: World, workflow_ids: list[str]) -> dict[str, int]:
    """Trace id (as received) -> spans, for every finished run of the workflows."""
    found = {}
    for workflow_id in workflow_ids:
        for run in world.scenario.runs(workflow_id) or []:
            if run["end_time"] is not None:
                steps = world.scenario.steps(workflow_id, run["id"]) or []
                found[str(run["id"]).replace("-", "")] = 1 + len(steps)
    return found


def test_idle_workflows_back_off_while_busy_ones_are_polled_every_tick(
    fleet: tuple[World, list[str], list[str]],
) -> None:
    world, active, idle = fleet
    emulator, receiver = world.emulator, world.receiver
    late_id = _workflow_id(99)
    with world.daemon(
        ORCHESTRA_POLL_INTERVAL=str(INTERVAL),
        ORCHESTRA_POLL_INTERVAL_MAX=str(MAX),
        ORCHESTRA_DISCOVERY_INTERVAL="2",
    ) as daemon:
        daemon.wait_for_stderr(r"poll:", timeout=60)
        assert DESCRIBED in daemon.stderr, daemon.tail()
        start = arrivals(emulator, kind="list_runs")[0].at
        # Discovery on its interval: a workflow created while the daemon runs.
        wait_for(lambda: time.monotonic() > start + 5.0, 30, "five seconds of polling")
        spec = dataclasses.replace(demo_workflows(time.time())[1], workflow_id=late_id)
        world.scenario.add_workflow(spec)
        world.scenario.add_history(late_id, 1, every=5.0, duration=(0.5, 1.0))
        added = time.monotonic()
        wait_for(lambda: time.monotonic() > start + OBSERVED_S, 60, "the observed window")
        wait_for(
            lambda: arrivals(emulator, kind="list_runs", contains=late_id),
            30,
            "the new workflow listed",
        )
        # The busy ones' ten runs each are over by now (they started before the daemon).
        expected = _spans_of_runs(world, [*active, late_id])
        receiver.wait_for_spans(sum(expected.values()), timeout=30)
        scrape = daemon.metrics()
        assert daemon.stop() == 0, daemon.tail()

    listed = {
        wid: [a for a in arrivals(emulator, kind="list_runs", contains=wid) if a.at >= start]
        for wid in (*active, *idle)
    }
    log = "\n".join(f"{wid}:\n{describe(items, since=start)}" for wid, items in listed.items())
    # Idle: each gap at least the back-off's wait, however loaded the machine. At a fixed
    # 0.5 s each would be listed ~24 times in 12 s; backing off, at 0, 1, 3, 7, 11 s.
    for wid in idle:
        gaps = _gaps(listed[wid])
        lows = _idle_gap_bounds(len(gaps) + 1)
        assert all(gap >= low for gap, low in zip(gaps, lows, strict=True)), log
    # Busy: every tick, never more often (no double polls), far more often than idle.
    most_idle = max(len(listed[wid]) for wid in idle)
    assert min(len(listed[wid]) for wid in active) >= 2 * most_idle, log
    for wid in active:
        assert min(_gaps(listed[wid])) >= INTERVAL / 2 - SLACK, log

    # Discovery found the new workflow: a GET /workflows after it appeared, then its runs.
    discovery = [a.at for a in arrivals(emulator, kind="list_workflows") if a.at > added]
    late = arrivals(emulator, kind="list_runs", contains=late_id)
    assert discovery and late[0].at > discovery[0]

    # Every run in the lookback window exported exactly once (the idle ones have none).
    assert receiver.duplicate_count() == 0
    received = receiver.traces()
    assert {trace: len(spans) for trace, spans in received.items()} == expected

    # /metrics: the busy two and the new one active, the ten others idle; no next poll
    # further away than the max.
    polled = {
        state: scrape.value("orchestra_otel_workflows_polled", state=state)
        for state in ("in_flight", "active", "idle")
    }
    assert (polled["in_flight"] + polled["active"], polled["idle"]) == (3, IDLE), polled
    spread = [
        scrape.value("orchestra_otel_next_poll_seconds", stat=stat)
        for stat in ("min", "median", "max")
    ]
    assert len(scrape.samples("orchestra_otel_next_poll_seconds")) == 3
    assert spread == sorted(spread) and spread[-1] <= MAX, spread
    assert scrape.value("orchestra_otel_poll_tick_seconds") == INTERVAL
    assert scrape.samples("orchestra_otel_poll_overruns_total")


def test_check_explains_the_schedule(world: World) -> None:
    result = world.cli(
        "check",
        ORCHESTRA_POLL_INTERVAL="30",
        ORCHESTRA_POLL_INTERVAL_MIN="5",
        ORCHESTRA_POLL_INTERVAL_MAX="600",
        ORCHESTRA_POLL_ACTIVE_WINDOW="120",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "polling: every 5s while a run is in flight, every 30s for 120s after a run was "
        "seen, idle workflows back off from 30s, doubling, to 600s\n"
    ) in result.stdout
    fixed = world.cli("check", ORCHESTRA_POLL_INTERVAL="30", ORCHESTRA_POLL_INTERVAL_MAX="30")
    assert "every 30s when idle (back-off off)" in fixed.stdout, fixed.stdout + fixed.stderr


def test_the_demo_at_a_pace_of_its_users_backs_off_to_the_default_max(tmp_path: Path) -> None:
    """The demo's idle cap of 8 s goes with its own 2 s interval; a user's 20 s interval
    is not refused for being above it."""
    env = user_env(ORCHESTRA_POLL_INTERVAL="20", ORCHESTRA_HTTP_ADDR="off")
    with Daemon(orchestra_otel("demo", "--duration", "1"), env, cwd=tmp_path) as demo:
        assert demo.wait(timeout=90) == 0, demo.tail()
    assert "idle workflows back off from 20s, doubling, to 300s" in demo.stderr, demo.tail()
