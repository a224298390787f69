"""Memory (idle, runs tracked) and idle CPU per hour at a 30 s interval equivalent."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.emulator import Scenario
from exporter.sink.encoding import TRACES
from exporter.state import Capture, Ledger, Outgoing
from tests.bench.common import (
    NAIVE,
    OTEL,
    TOOLS,
    CpuSampler,
    Proc,
    bench_world,
    count_by_kind,
    delivery,
    demo_clones,
    expected_keys,
    finished_runs,
    gaps,
    list_times,
    log,
    request_log,
    run_all,
    start_tool,
    wait_for_keys,
)
from tests.bench.sizes import REAL_INTERVAL_S, ScaledSchedule, Sizes
from tests.support.world import World


def idle_world(workflows: int, history: int, clock_now: float) -> Scenario:
    scenario = Scenario(demo_clones(workflows, clock_now), clock=time.time, seed=505)
    for workflow_id in scenario.workflow_ids():
        if history:
            scenario.add_history(
                workflow_id, history, every=30.0, end_by=clock_now - 300.0, duration=(0.5, 4.0)
            )
    return scenario


def _seed_ledger(path: Path, scenario: Scenario) -> dict[str, int]:
    """A ledger in which every finished run of the history was captured and confirmed."""
    now_ns = int(time.time() * 1e9)
    captures = []
    for workflow_id, run in finished_runs(scenario):
        steps = scenario.steps(workflow_id, str(run["id"])) or []
        captures.append(
            Capture(
                workflow_id=workflow_id,
                run_id=str(run["id"]),
                status=run.get("status"),
                steps=tuple(str(step["id"]) for step in steps),
                # Confirmed at once below: the bytes are never read.
                outgoing=(Outgoing(TRACES, b""),) * (len(steps) + 1),
                run_done=True,
            )
        )
    with Ledger(path) as ledger:
        for workflow_id in scenario.workflow_ids():
            ledger.register_workflow(workflow_id, since_ns=now_ns - 86_400 * 10**9, now_ns=now_ns)
        ledger.capture(captures, now_ns)
        while batch := ledger.spooled(5000):
            ledger.confirm([item.id for item in batch])
        return ledger.counts()


OTEL_MODES = ("adaptive", "fixed")  # the back-off on (the default) and off (MAX = interval)


def _listing_period(listings: dict[str, list[float]], after: float) -> float:
    """The median time between two listings of the same workflow, after `after`."""
    found = [gap for times in listings.values() for gap in gaps([t for t in times if t >= after])]
    if not found:
        raise RuntimeError("no workflow was listed twice in the measured time")
    return statistics.median(found)


def _otel_idle(world: World, sizes: Sizes, mode: str, **extra: str) -> dict[str, Any]:
    """orchestra-otel's CPU over whole listing periods, once the back-off is at its cap.

    Listings are periodic then (each workflow every `period` s, measured from the API's
    log), so a window of a whole number of periods, starting anywhere, holds each
    workflow's listing exactly that many times, whatever the period and however the
    workflows are spread over the ticks. CPU is sampled throughout and read over the
    window afterwards. The window spans at least `idle_ticks` intervals.
    """
    schedule = ScaledSchedule.of(sizes, adaptive=mode == "adaptive")
    proc, marker = start_tool(OTEL, world, schedule.interval_s, {**schedule.env(), **extra})
    sampler = CpuSampler(proc.pid)
    try:
        proc.wait_lines(marker, 1, 300)
        start = time.time() + sizes.idle_warm_ticks * schedule.tick_s
        span = sizes.idle_ticks * schedule.tick_s
        # enough for a whole number of periods of up to twice the expected one
        time.sleep(max(0.0, start + span + 2 * schedule.max_s + 1 - time.time()))
        mem = proc.mem()
    finally:
        sampler.stop()
        proc.stop()
    requests = request_log(world)
    period = _listing_period(list_times(requests), start)
    periods = math.ceil(span / period - 1e-9)
    end = start + periods * period
    in_window = [r for r in requests if start <= r["wall"] < end]
    return {
        "mode": mode,
        "schedule": schedule.describe(),
        "listing_period_s": round(period, 3),
        "periods": periods,
        "wall_s": end - start,
        "requests": len(in_window),
        "requests_by_kind": count_by_kind(in_window),
        "cpu_s": sampler.between(start, end),
        "cpu_s_from_ticks": sampler.between(start, end, ticks=True),  # cross-check
        "mem": mem,
    }


def _per_poll_cpu(proc: Proc, marker: str, warm: int, polls: int, timeout: float) -> dict[str, Any]:
    """CPU seconds the process used from the end of poll `warm` to the end of `warm+polls`."""
    proc.wait_lines(marker, warm, timeout)
    cpu0, ticks0, t0 = proc.cpu(), proc.cpu_ticks(), time.monotonic()
    proc.wait_lines(marker, warm + polls, timeout + polls * 60)
    cpu1, ticks1, t1 = proc.cpu(), proc.cpu_ticks(), time.monotonic()
    return {
        "polls": polls,
        "cpu_s": cpu1 - cpu0,
        "cpu_s_from_ticks": ticks1 - ticks0,  # cross-check (10 ms resolution)
        "wall_s": t1 - t0,
        "cpu_per_poll_s": (cpu1 - cpu0) / polls,
        "mem": proc.mem(),
    }


def _naive_idle(world: World, sizes: Sizes, history: bool) -> dict[str, Any]:
    """The baseline polling every scaled interval: CPU per poll."""
    proc, marker = start_tool(NAIVE, world, sizes.scaled_interval_s)
    # its first poll exports the old runs (and later polls fetch their steps again)
    polls = sizes.idle_polls_naive_history if history else sizes.idle_ticks
    try:
        return _per_poll_cpu(proc, marker, 1 if history else 3, polls, 900)
    finally:
        proc.stop()


def _background(world: World, tool: str, seconds: float) -> dict[str, Any]:
    """CPU between polls: a daemon polling (and pushing metrics) once an hour, measured
    over a quiet window after its first poll."""
    env = {
        "ORCHESTRA_POLL_INTERVAL_MAX": "3600",
        "ORCHESTRA_DISCOVERY_INTERVAL": "3600",
        "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
    }
    proc, marker = start_tool(tool, world, 3600.0, env)
    try:
        proc.wait_lines(marker, 1, 120)
        time.sleep(1.0)
        before, ticks = proc.cpu(), proc.cpu_ticks()
        time.sleep(seconds)
        return {
            "cpu_per_s": (proc.cpu() - before) / seconds,
            "cpu_per_s_from_ticks": (proc.cpu_ticks() - ticks) / seconds,
            "mem": proc.mem(),
        }
    finally:
        proc.stop()


def _per_hour(measured: dict[str, Any], background_rate: float, sizes: Sizes, tool: str) -> None:
    """CPU seconds per hour at the 30 s interval the scaled clock stands for.

    Everything the schedule drives (polls, discovery, the metrics push) happens `scale`
    times as often on the scaled clock; the background does not scale.
    """
    schedule = ScaledSchedule.of(sizes)
    if tool == OTEL:
        wall = measured["wall_s"]
        driven = max(measured["cpu_s"] - background_rate * wall, 0.0)
        measured["cpu_s_per_hour_at_30s"] = (
            driven * 3600 / (wall * schedule.scale) + 3600 * background_rate
        )
        measured["requests_per_hour_at_30s"] = measured["requests"] * 3600 / (wall * schedule.scale)
        return
    interval = sizes.scaled_interval_s
    per_poll = measured["cpu_per_poll_s"]
    # the baseline polls, then sleeps an interval: take out that interval's background
    polls_per_hour = 3600 / REAL_INTERVAL_S
    measured["cpu_s_per_hour_at_30s"] = (
        polls_per_hour * max(per_poll - background_rate * interval, 0.0) + 3600 * background_rate
    )


def _otel_idle_job(
    sizes: Sizes, tmp: Path, listing: str, now: float
) -> Callable[[str], dict[str, Any]]:
    """Measures one mode on a world of its own, so its request log is its own."""
    history = sizes.idle_history if listing == "history" else 0
    # those old runs ended before the lookback: never exported, listed at every poll
    extra = {"ORCHESTRA_LOOKBACK": "60"} if history else {}

    def job(mode: str) -> dict[str, Any]:
        scenario = idle_world(sizes.idle_workflows, history, now)
        folder = tmp / f"idle-{listing}-{mode}"
        with bench_world(scenario, None, folder, recent_limit=10**6) as world:
            return _otel_idle(world, sizes, mode, **extra)

    return job


def _tracked(sizes: Sizes, tmp: Path, now: float, tool: str) -> dict[str, Any]:
    """Memory with many runs tracked. orchestra-otel: its ledger already holds those runs
    as exported (written through exporter.state.Ledger exactly as capture + confirm leave
    it), as after a restart (the catch-up peak is the backfill's RSS). Baseline: its
    in-memory set is filled by its first poll over the same history."""
    scenario = idle_world(sizes.mem_workflows, sizes.mem_history, now)
    with bench_world(scenario, None, tmp / f"memory-{tool}") as own:
        expected = expected_keys(scenario)
        seeded = None
        if tool == OTEL:
            seeded = _seed_ledger(own.state_path, scenario)
            expected = set()  # all of it was exported before this process started
        interval = sizes.scaled_interval_s if tool == OTEL else 3600.0
        env = {**ScaledSchedule.of(sizes).env(), "ORCHESTRA_LOOKBACK": "86400"}
        proc, marker = start_tool(tool, own, interval, env)
        try:
            first = proc.wait_lines(marker, 1, 900)[0][0]
            if tool == OTEL:
                proc.wait_lines(marker, 4, 120)
            mem = proc.mem()
        finally:
            proc.stop()
        spans = wait_for_keys(own.receiver, expected, 30)
        return {
            "mem": mem,
            "startup_and_first_poll_s": first - proc.started,
            "requests_by_kind": dict(own.emulator.stats()["by_kind"]),
            "delivery": delivery(expected, spans),
            "ledger_seeded": seeded,
        }


Jobs = dict[tuple[str, str], tuple[Callable[[str], Any], str]]


def scenario_memory_idle(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """RSS idle and with N runs tracked; idle CPU per hour at a 30 s interval equivalent,
    with the idle back-off on (the default) and off, for empty and full listings."""
    schedule = ScaledSchedule.of(sizes)
    out: dict[str, Any] = {
        "sizes": {
            "idle_workflows": sizes.idle_workflows,
            "idle_history_runs": sizes.idle_history,
            "runs_tracked": sizes.mem_workflows * sizes.mem_history,
            "idle_warm_ticks": sizes.idle_warm_ticks,
            "idle_ticks": sizes.idle_ticks,
            "background_window_s": sizes.bg_seconds,
            "scaled": schedule.describe(),
        },
        OTEL: {},
        NAIVE: {},
    }
    now = time.time()
    # Two phases of five processes at once (each CPU figure is that process's own CPU
    # time). 1: workflows without runs: orchestra-otel with the back-off on and off, the
    # baseline, and each tool's background (a daemon polling once an hour). 2: workflows
    # listing a full page of old, finished runs at every poll (back-off on and off, the
    # baseline), and each tool with many runs tracked.
    for listing in ("empty", "history"):
        done = _phase(sizes, tmp, listing, now)
        for mode in OTEL_MODES:
            out[OTEL][_key(listing, mode)] = done[(listing, mode)]
            log(f"idle {listing} {OTEL} {mode}: {done[(listing, mode)]}")
        out[NAIVE][_key(listing, NAIVE)] = done[(listing, NAIVE)]
        log(f"idle {listing} {NAIVE}: {done[(listing, NAIVE)]}")
        for tool in TOOLS:
            if listing == "empty":
                background = done[("background", tool)]
                out[tool]["background_cpu_per_s"] = background["cpu_per_s"]
                out[tool]["background_cpu_per_s_from_ticks"] = background["cpu_per_s_from_ticks"]
                out[tool]["idle_after_one_poll_mem"] = background["mem"]
            else:
                out[tool]["tracked"] = done[("tracked", tool)]
                log(f"tracked {tool}: {out[tool]['tracked']}")
    for tool in TOOLS:
        for key, measured in out[tool].items():
            if key.startswith("idle_") and "mem" in measured and "cpu_s" in measured:
                _per_hour(measured, out[tool]["background_cpu_per_s"], sizes, tool)
    return out


def _phase(sizes: Sizes, tmp: Path, listing: str, now: float) -> dict[tuple[str, str], Any]:
    """One phase's five processes, at once."""
    history = sizes.idle_history if listing == "history" else 0
    with bench_world(idle_world(sizes.idle_workflows, history, now), None, tmp / listing) as world:
        otel_job = _otel_idle_job(sizes, tmp, listing, now)
        jobs: Jobs = {(listing, mode): (otel_job, mode) for mode in OTEL_MODES}
        jobs[(listing, NAIVE)] = (lambda _: _naive_idle(world, sizes, history > 0), NAIVE)
        for tool in TOOLS:
            if listing == "empty":
                jobs[("background", tool)] = (
                    lambda t: _background(world, t, sizes.bg_seconds),
                    tool,
                )
            else:
                jobs[("tracked", tool)] = (lambda t: _tracked(sizes, tmp, now, t), tool)
        return run_all(jobs)


def _key(listing: str, mode: str) -> str:
    """idle_empty, idle_history (the default: adaptive; the baseline's), idle_*_fixed."""
    return f"idle_{listing}" + ("_fixed" if mode == "fixed" else "")
