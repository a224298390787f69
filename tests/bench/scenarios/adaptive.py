"""Adaptive polling on a mixed fleet, on the scaled clock (tests/bench/sizes.py).

`ad_workflows` workflows, of which `ad_active` start a run every few intervals and the
rest never run. `orchestra-otel run` polls them with the schedule's defaults scaled down
(interval 1 s for 30 s, back-off cap and active window 10 s for 300 s, discovery 10 s for
300 s). After `ad_warmup_intervals` (the idle workflows have backed off to the cap), the
API's request log is counted over `ad_intervals` intervals (60: 30 minutes at 30 s) and
compared with the fixed-interval floor: one history request per workflow per interval,
plus discovery. Freshness (root span arrival minus run end) of the runs that ended in
that window, for all of them and for those a poll saw in flight. The naive baseline's
request count comes from the same fleet replayed on a manual clock, one poll per
interval (it would fall behind the real clock), after the orchestra-otel run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exporter.emulator import Scenario
from exporter.emulator.scenario import Clock
from exporter.mapping.timeparse import parse_timestamp_ns
from tests.bench.common import (
    NAIVE,
    OTEL,
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
    naive_cmd,
    request_log,
    root_arrivals,
    run_end_s,
    start_tool,
    summary,
    wait_for_keys,
    workflow_of,
)
from tests.bench.sizes import ScaledSchedule, Sizes
from tests.support.clock import ManualClock
from tests.support.world import World

SEED = 606
FAILURE_RATE = 0.1
# Old runs of idle workflows end this long before now: outside the default lookback (1 h).
OLD_RUNS_END_S = 2 * 3600.0


def _fleet(sizes: Sizes, clock: Clock) -> Scenario:
    """The workflows; the first `ad_active` are the active ones (runs come later)."""
    now = clock()
    scenario = Scenario(demo_clones(sizes.ad_workflows, now), clock=clock, seed=SEED)
    for workflow_id in scenario.workflow_ids()[sizes.ad_active :]:
        if sizes.ad_idle_history:
            scenario.add_history(
                workflow_id, sizes.ad_idle_history, every=60.0, end_by=now - OLD_RUNS_END_S
            )
    return scenario


def _add_runs(scenario: Scenario, sizes: Sizes, t0: float) -> dict[str, Any]:
    """Each active workflow starts a run every `ad_run_every_intervals` (plus up to half
    that of jitter), from a random phase; every run ends before the window does."""
    interval = sizes.scaled_interval_s
    every = sizes.ad_run_every_intervals * interval
    jitter = every / 2
    duration = (
        sizes.ad_run_duration_intervals[0] * interval,
        sizes.ad_run_duration_intervals[1] * interval,
    )
    end_by = t0 + (sizes.ad_warmup_intervals + sizes.ad_intervals - 0.5) * interval
    rng = random.Random(SEED + 1)
    planned = 0
    for workflow_id in scenario.workflow_ids()[: sizes.ad_active]:
        first = t0 + rng.uniform(0, every)
        count = math.floor((end_by - duration[1] - jitter - first) / every) + 1
        scenario.add_schedule(
            workflow_id,
            every,
            first_at=first,
            jitter=jitter,
            duration=duration,
            failure_rate=FAILURE_RATE,
            count=max(count, 0),
        )
        planned += max(count, 0)
    return {
        "run_every_s": every,
        "jitter_s": jitter,
        "duration_s": duration,
        "runs_planned": planned,
    }


def _floor(sizes: Sizes, schedule: ScaledSchedule) -> dict[str, int]:
    """The fixed-interval floor over the window: one history request per workflow per
    interval, plus the discovery calls of the same window."""
    history = sizes.ad_workflows * sizes.ad_intervals
    window_s = sizes.ad_intervals * schedule.interval_s
    discovery = math.floor(window_s / schedule.discovery_s)
    return {"history": history, "discovery": discovery, "total": history + discovery}


def _started_s(run: Mapping[str, Any]) -> float:
    return parse_timestamp_ns(str(run["start_time"])) / 1e9


def _freshness(
    scenario: Scenario,
    world: World,
    requests: Sequence[Mapping[str, Any]],
    window: tuple[float, float],
) -> dict[str, Any]:
    """Latency of each run that ended in the window: all, and split by whether a poll of
    its workflow saw it in flight (then it is polled every ORCHESTRA_POLL_INTERVAL_MIN)."""
    listings = list_times(requests)
    arrivals = root_arrivals(world.receiver)
    latency: dict[str, list[float]] = {"all": [], "in_flight": [], "not_in_flight": []}
    poll_wait: list[float] = []  # run end -> the next listing of its workflow
    after_listing: list[float] = []  # that listing -> the root span's arrival
    missing = 0
    for workflow_id, run in finished_runs(scenario):
        end = run_end_s(run)
        if not window[0] <= end < window[1]:
            continue
        arrived = arrivals.get(str(run["id"]))
        if arrived is None:
            missing += 1
            continue
        times = listings.get(workflow_id, [])
        seen_running = any(_started_s(run) <= t < end for t in times)
        latency["all"].append(arrived - end)
        latency["in_flight" if seen_running else "not_in_flight"].append(arrived - end)
        next_listing = next((t for t in times if t >= end), None)
        if next_listing is not None:
            poll_wait.append(next_listing - end)
            after_listing.append(arrived - next_listing)
    return {
        **{f"latency_{key}_s": summary(values) for key, values in latency.items()},
        "poll_wait_s": summary(poll_wait),
        "listing_to_arrival_s": summary(after_listing),
        "runs_without_root": missing,
    }


def _poll_gaps(
    requests: Sequence[Mapping[str, Any]], active: set[str], interval: float
) -> dict[str, Any]:
    """Seconds between two history listings of the same workflow, active and idle."""
    found: dict[str, list[float]] = {"active": [], "idle": []}
    for workflow_id, times in list_times(requests).items():
        found["active" if workflow_id in active else "idle"].extend(gaps(times))
    return {
        group: {**summary(values), "in_intervals_p50": _ratio(summary(values)["p50"], interval)}
        for group, values in found.items()
    }


def _ratio(value: float | int | None, unit: float) -> float | None:
    return None if value is None else round(value / unit, 2)


def _otel(sizes: Sizes, tmp: Path, schedule: ScaledSchedule) -> dict[str, Any]:
    scenario = _fleet(sizes, time.time)
    interval = schedule.interval_s
    with bench_world(scenario, None, tmp / "adaptive-otel", recent_limit=10**6) as world:
        proc, marker = start_tool(OTEL, world, interval, schedule.env())
        try:
            proc.wait_lines(marker, 1, 120)
            t0 = time.time()
            runs = _add_runs(scenario, sizes, t0)
            window = (
                t0 + sizes.ad_warmup_intervals * interval,
                t0 + (sizes.ad_warmup_intervals + sizes.ad_intervals) * interval,
            )
            time.sleep(max(0.0, window[1] - time.time()))
            expected = expected_keys(scenario, _active_runs(scenario, sizes))
            spans = wait_for_keys(world.receiver, expected, schedule.max_s * 2 + 10)
            time.sleep(interval)  # a last look for duplicates
            spans = world.receiver.spans()
            polls = len(proc.lines(marker))
        finally:
            proc.stop()
        requests = request_log(world)
        in_window = [r for r in requests if window[0] <= r["wall"] < window[1]]
        active = set(scenario.workflow_ids()[: sizes.ad_active])
        by_kind = count_by_kind(in_window)
        list_active = sum(
            1 for r in in_window if r["kind"] == "list_runs" and workflow_of(r) in active
        )
        return {
            "runs": runs,
            "ticks": polls,
            "requests_total": len(in_window),
            "requests_by_kind": by_kind,
            "list_runs_active": list_active,
            "list_runs_idle": by_kind.get("list_runs", 0) - list_active,
            "poll_gaps": _poll_gaps(in_window, active, interval),
            "freshness": _freshness(scenario, world, requests, window),
            "delivery": delivery(expected, spans),
        }


def _active_runs(scenario: Scenario, sizes: Sizes) -> list[tuple[str, dict[str, Any]]]:
    active = set(scenario.workflow_ids()[: sizes.ad_active])
    return [(w, run) for w, run in finished_runs(scenario) if w in active]


def _naive(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """The same fleet on a manual clock: one baseline poll per interval of the window
    (after one uncounted poll at its start, which exports the warm-up's runs)."""
    clock = ManualClock(time.time())
    scenario = _fleet(sizes, clock)
    t0 = clock()
    _add_runs(scenario, sizes, t0)
    interval = sizes.scaled_interval_s
    clock.set(t0 + sizes.ad_warmup_intervals * interval)
    with bench_world(scenario, clock, tmp / "adaptive-naive") as world:
        proc = Proc(naive_cmd("control"), world.env("grpc"), stdin=True)
        try:
            proc.send("poll")
            proc.wait_lines("{", 1, 900, stream="out")
            before = dict(world.emulator.stats()["by_kind"])
            started = time.monotonic()
            for number in range(2, sizes.ad_intervals + 2):
                clock.advance(interval)
                proc.send("poll")
                proc.wait_lines("{", number, 900, stream="out")
            after = dict(world.emulator.stats()["by_kind"])
            elapsed = time.monotonic() - started
            proc.send("exit")
            proc.wait_exit(120)
        finally:
            proc.stop()
        expected = expected_keys(scenario, _active_runs(scenario, sizes))
        spans = wait_for_keys(world.receiver, expected, 30)
    by_kind = {kind: after.get(kind, 0) - before.get(kind, 0) for kind in after}
    return {
        "requests_total": sum(by_kind.values()),
        "requests_by_kind": by_kind,
        "replay_wall_s": round(elapsed, 1),
        "delivery": delivery(expected, spans),
    }


def scenario_adaptive(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    schedule = ScaledSchedule.of(sizes)
    floor = _floor(sizes, schedule)
    out: dict[str, Any] = {
        "sizes": {
            "workflows": sizes.ad_workflows,
            "active": sizes.ad_active,
            "intervals": sizes.ad_intervals,
            "warmup_intervals": sizes.ad_warmup_intervals,
            "idle_history_runs": sizes.ad_idle_history,
        },
        "scaled": schedule.describe(),
        "stands_for_minutes": sizes.ad_intervals * schedule.interval_s * schedule.scale / 60,
        "floor_requests": floor,
    }
    result = _otel(sizes, tmp, schedule)
    result["vs_floor"] = result["requests_total"] / floor["total"]
    result["history_vs_floor"] = result["requests_by_kind"].get("list_runs", 0) / floor["history"]
    out[OTEL] = result
    log(
        f"adaptive {OTEL}: {result['requests_total']} requests ({result['vs_floor']:.2f}x "
        f"the floor of {floor['total']}), freshness {result['freshness']['latency_all_s']}, "
        f"{result['delivery']}"
    )
    if sizes.ad_naive:
        naive = _naive(sizes, tmp)
        naive["vs_floor"] = naive["requests_total"] / floor["total"]
        out[NAIVE] = naive
        log(f"adaptive {NAIVE}: {naive['requests_total']} requests, {naive['delivery']}")
    return out
