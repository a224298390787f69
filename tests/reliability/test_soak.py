"""Soak: the real daemon for minutes, runs arriving every second, faults coming and going.

`python -m exporter run` polls the emulator (real clock, four demo workflows each
starting a run about every second, some failing) and exports to a real OTLP/gRPC
receiver, while the test switches faults on and off in phases:

    clean | API 503s, resets, truncated bodies | API 429 + Retry-After |
    OTLP receiver down (ports closed) for 10 s | receiver slow (1 s per request) | clean

Every few seconds it samples the daemon from outside: resident memory (VmRSS), open file
descriptors (/proc/PID/fd) and threads. At the end the faults stop, the schedules run
out, the daemon drains, and the test checks:

* no loss: every span of every finished run arrived (duplicates are allowed by the
  at-least-once contract; they are counted and printed);
* memory: the median RSS of the last minute is within RSS_GROWTH_BOUND_MB of the median
  of the first minute;
* fds and threads: the last sample is at most the first minute's highest plus a small
  slack (nothing leaks per poll, per fault, per reconnect).

SOAK_SECONDS sets the length (default 180). Run with `-n0 -s` to see the figures table.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exporter.emulator import Emulator, Scenario
from exporter.emulator.demo import demo_workflows
from tests.support.api_log import control
from tests.support.delivery import expected_identities, identities
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.world import World, open_world

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "180"))

pytestmark = [pytest.mark.integration, pytest.mark.slow(seconds=SOAK_SECONDS + 20)]
SAMPLE_EVERY_S = 2.0
RUN_EVERY_S = 1.0  # per workflow: four workflows, ~4 runs a second in all
RUN_DURATION_S = (0.5, 2.5)
DRAIN_TIMEOUT_S = 150.0  # exports back off up to 60 s after failures
RSS_GROWTH_BOUND_MB = 25.0
FD_SLACK = 8
THREAD_SLACK = 4
WARMUP_S = 5.0


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the daemon started
    rss_kb: int
    fds: int
    threads: int


def sample(pid: int, at: float) -> Sample:
    status: dict[str, str] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    return Sample(
        at=at,
        rss_kb=int(status["VmRSS"].split()[0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(status["Threads"]),
    )


# --------------------------------------------------------------------------- faults


def _control(emulator: Emulator, method: str, path: str, payload: Any = None) -> Any:
    """The emulator's control API, over HTTP, as a test steering a subprocess would."""
    return control(emulator, method, path, payload, timeout=10)


@dataclass
class Phase:
    name: str
    start: float
    end: float
    enter: Callable[[], None] = lambda: None
    tick: Callable[[], None] = lambda: None  # called about every second while active
    leave: Callable[[], None] = lambda: None


def phases(duration: float, emulator: Emulator, receiver: OtlpReceiver) -> list[Phase]:
    """The fault schedule, scaled to `duration` (180 s: the layout in the docstring)."""

    def at(fraction: float) -> float:
        return duration * fraction

    api_faults = itertools.cycle(
        [
            {"action": "status", "status": 503, "kind": "*", "times": 2},
            {"action": "reset", "kind": "steps", "times": 1},
            {"action": "status", "status": 502, "body_format": "html", "kind": "list_runs"},
            {"action": "truncate", "kind": "steps", "times": 1},
            {"action": "status", "status": 503, "kind": "list_runs", "times": 3},
        ]
    )
    ticks = itertools.count()

    def rate_limit() -> None:
        if next(ticks) % 4 == 0:  # a 429 every ~4 s, each pausing the client for 2 s
            rule = {"action": "rate_limit", "retry_after": 2, "times": 1}
            _control(emulator, "POST", "faults", rule)

    down_for = min(10.0, duration / 18)
    down_at = at(0.5)
    return [
        Phase(
            "API 5xx/reset/truncate",
            at(0.22),
            at(0.36),
            tick=lambda: _control(emulator, "POST", "faults", next(api_faults)),
            leave=lambda: _control(emulator, "DELETE", "faults"),
        ),
        Phase(
            "API 429 Retry-After 2s",
            at(0.36),
            at(0.48),
            tick=rate_limit,
            leave=lambda: _control(emulator, "DELETE", "faults"),
        ),
        Phase(
            "receiver down",
            down_at,
            down_at + down_for,
            enter=receiver.stop,
            leave=receiver.start,
        ),
        Phase(
            "receiver slow (1 s)",
            down_at + down_for + 2,
            at(0.7),
            enter=lambda: receiver.set_delay(1.0),
            leave=lambda: receiver.set_delay(0),
        ),
    ]


# --------------------------------------------------------------------------- the world


@pytest.fixture
def soak_world(tmp_path: Path) -> Iterator[World]:
    scenario = Scenario(demo_workflows(time.time()), clock=time.time, seed=23)
    runs_each = int(SOAK_SECONDS / RUN_EVERY_S)
    for index, workflow_id in enumerate(scenario.workflow_ids()):
        scenario.add_schedule(
            workflow_id,
            RUN_EVERY_S,
            first_at=time.time() + 1.0 + index * 0.25,
            jitter=0.3,
            duration=RUN_DURATION_S,
            failure_rate=0.15,
            count=runs_each,
        )
    # The scenario runs on the real clock; World's ManualClock is not used here.
    with open_world(scenario, tmp_path) as world:
        yield world


def received_keys(world: World) -> list[tuple[str, str]]:
    return identities(world.receiver.spans())


def faults_answered(emulator: Emulator) -> dict[str, int]:
    """HTTP statuses other than 200 the emulator answered (0: connection reset)."""
    found: dict[str, int] = {}
    for by_status in emulator.stats()["by_status"].values():
        for status, count in by_status.items():
            if str(status) != "200":
                found[str(status)] = found.get(str(status), 0) + count
    return found


def all_runs_over(world: World) -> bool:
    return all(
        run["end_time"] is not None
        for workflow_id in world.scenario.workflow_ids()
        for run in world.scenario.runs(workflow_id) or []
    )


# --------------------------------------------------------------------------- the test


def test_soak_no_loss_no_leaks_under_faults(soak_world: World) -> None:
    world = soak_world
    schedule = phases(SOAK_SECONDS, world.emulator, world.receiver)
    samples: list[Sample] = []
    with world.daemon(
        ORCHESTRA_POLL_INTERVAL="0.5",
        ORCHESTRA_CAPTURE_CONTENT="true",
        ORCHESTRA_API_TIMEOUT="5",
        OTEL_EXPORTER_OTLP_TIMEOUT="5",
    ) as daemon:
        started = daemon.started
        active: set[str] = set()
        next_sample = next_tick = 0.0
        while (now := time.monotonic() - started) < SOAK_SECONDS:
            assert daemon.alive, f"the daemon died: {daemon.stderr[-3000:]}"
            for phase in schedule:
                inside = phase.start <= now < phase.end
                if inside and phase.name not in active:
                    print(f"[{now:6.1f}s] {phase.name}: on")
                    phase.enter()
                    active.add(phase.name)
                elif not inside and phase.name in active:
                    print(f"[{now:6.1f}s] {phase.name}: off")
                    phase.leave()
                    active.discard(phase.name)
            if now >= next_tick:
                for phase in schedule:
                    if phase.name in active:
                        phase.tick()
                next_tick = now + 1.0
            if now >= next_sample:
                samples.append(sample(daemon.pid, now))
                next_sample = now + SAMPLE_EVERY_S
            time.sleep(0.1)
        for phase in schedule:
            if phase.name in active:
                phase.leave()
        # Drain: faults off, the schedules have run out; wait for every run to end
        # and for every span of it to arrive.
        _control(world.emulator, "DELETE", "faults")
        world.receiver.set_delay(0)
        world.receiver.start()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while not all_runs_over(world) and time.monotonic() < deadline:
            time.sleep(0.5)
        expected = expected_identities(world)
        while time.monotonic() < deadline:
            if expected <= set(received_keys(world)):
                break
            assert daemon.alive, f"the daemon died: {daemon.stderr[-3000:]}"
            time.sleep(0.5)
        drained = time.monotonic() - started
        time.sleep(2 * 0.5 + 1)  # a poll or two more: nothing new may come
        samples.append(sample(daemon.pid, time.monotonic() - started))
        pending = daemon.metric("orchestra_otel_pending_spans")
        exit_code = daemon.stop()
    log_text = daemon.stderr

    received = received_keys(world)
    unique = set(received)
    missing = expected - unique
    duplicates = len(received) - len(unique)
    window = min(60.0, SOAK_SECONDS / 3)
    steady = [s for s in samples if s.at >= WARMUP_S]  # after imports and the first poll
    first = [s for s in steady if s.at <= window]
    last = [s for s in samples if SOAK_SECONDS - window <= s.at <= SOAK_SECONDS]
    rss_first = statistics.median(s.rss_kb for s in first) / 1024
    rss_last = statistics.median(s.rss_kb for s in last) / 1024
    figures = {
        "soak seconds": f"{SOAK_SECONDS:.0f} (drained at {drained:.0f}s)",
        "runs finished": str(sum(1 for _, step in expected if step == "root")),
        "spans expected": str(len(expected)),
        "spans received": f"{len(received)} ({len(unique & expected)} of the expected)",
        "spans missing": str(len(missing)),
        "duplicates": str(duplicates),
        "RSS MB first/last median": f"{rss_first:.1f} / {rss_last:.1f}",
        "RSS MB min/max": f"{min(s.rss_kb for s in steady) / 1024:.1f} / "
        f"{max(s.rss_kb for s in steady) / 1024:.1f}",
        "fds first-minute max / end": f"{max(s.fds for s in first)} / {samples[-1].fds}",
        "threads first-minute max / end": (
            f"{max(s.threads for s in first)} / {samples[-1].threads}"
        ),
        "RSS MB by 30 s (median)": " ".join(
            f"{statistics.median(s.rss_kb for s in steady if b <= s.at < b + 30) / 1024:.1f}"
            for b in range(int(WARMUP_S), int(SOAK_SECONDS), 30)
            if any(b <= s.at < b + 30 for s in steady)
        ),
        "samples": str(len(samples)),
        "pending spans at the end (/metrics)": str(pending),
        "API requests (emulator)": json.dumps(world.emulator.stats()["by_kind"]),
        "API answers not 200": json.dumps(faults_answered(world.emulator)),
        "OTLP attempts / accepted": (
            f"{world.receiver.attempt_count()} / {world.receiver.request_count()}"
        ),
        "daemon exit code": str(exit_code),
        "log warnings / tracebacks": f"{log_text.count(' WARNING ')} / "
        f"{log_text.count('Traceback')}",
    }
    width = max(len(k) for k in figures)
    print("\nsoak figures\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in figures.items()))

    assert not missing, f"{len(missing)} spans never arrived, e.g. {sorted(missing)[:5]}"
    assert pending == 0, "spans still wait in the spool after the drain"
    assert rss_last - rss_first < RSS_GROWTH_BOUND_MB, "resident memory keeps growing"
    assert samples[-1].fds <= max(s.fds for s in first) + FD_SLACK, "file descriptors leak"
    assert samples[-1].threads <= max(s.threads for s in first) + THREAD_SLACK, "threads leak"
    assert exit_code == 0, log_text[-3000:]
    assert "failed unexpectedly" not in log_text, log_text[-3000:]
