"""Freshness at a fixed interval on the real clock: root span arrival minus run end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from exporter.emulator import Scenario
from tests.bench.common import (
    bench_world,
    delivery,
    demo_clones,
    expected_keys,
    finished_runs,
    log,
    parallel,
    percentile,
    root_arrivals,
    run_end_s,
    start_tool,
)
from tests.bench.sizes import Sizes


def scenario_freshness(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """Real clock: runs start every few seconds; latency = root span arrival - run end.

    Both tools run at the same time, each against its own emulator and receiver (they
    are mostly asleep between polls; this halves the scenario's wall time).
    """
    out: dict[str, Any] = {
        "sizes": {
            "poll_interval_s": sizes.fresh_poll_s,
            "measured_s": sizes.fresh_seconds,
            "workflows": sizes.fresh_workflows,
        }
    }
    for tool, result in parallel(lambda tool: _freshness_for(tool, sizes, tmp)).items():
        out[tool] = result
        log(f"freshness {tool}: p50 {result['p50_s']} p99 {result['p99_s']} {result['delivery']}")
    return out


def _freshness_for(tool: str, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    now = time.time()
    scenario = Scenario(demo_clones(sizes.fresh_workflows, now), clock=time.time, seed=202)
    for index, workflow_id in enumerate(scenario.workflow_ids()):
        scenario.add_schedule(
            workflow_id,
            1.5 + 0.5 * index,
            first_at=now + 0.2 * index,
            jitter=0.7,
            duration=(0.5, 3.0),
            failure_rate=0.1,
        )
    with bench_world(scenario, None, tmp / f"freshness-{tool}") as world:
        # A fixed interval: the scheduled runs keep every workflow busy anyway, and the
        # adaptive schedule has its own scenarios.
        interval = sizes.fresh_poll_s
        proc, marker = start_tool(
            tool, world, interval, {"ORCHESTRA_POLL_INTERVAL_MAX": f"{interval:g}"}
        )
        try:
            proc.wait_lines(marker, 1, 120)
            window_start = time.time()
            time.sleep(sizes.fresh_seconds)
            window_end = time.time()
            # The baseline's BatchSpanProcessor holds spans up to 5 s: give both the time
            # (less once every root of the window has arrived).
            deadline = time.monotonic() + 2 * sizes.fresh_poll_s + 6.0
            while time.monotonic() < deadline:
                ended = [
                    str(run["id"])
                    for _, run in finished_runs(scenario)
                    if window_start <= run_end_s(run) <= window_end
                ]
                if set(ended) <= set(root_arrivals(world.receiver)):
                    time.sleep(0.5)  # a last look for stragglers and duplicates
                    break
                time.sleep(0.25)
            polls = len(proc.lines(marker))
        finally:
            proc.stop()
        runs = [
            (workflow_id, run)
            for workflow_id, run in finished_runs(scenario)
            if window_start <= run_end_s(run) <= window_end
        ]
        arrivals = root_arrivals(world.receiver)
        latencies = [
            arrivals[str(run["id"])] - run_end_s(run)
            for _, run in runs
            if str(run["id"]) in arrivals
        ]
        expected = expected_keys(scenario, runs)
        spans = world.receiver.spans()
        return {
            "runs_measured": len(runs),
            "polls": polls,
            "p50_s": percentile(latencies, 50),
            "p90_s": percentile(latencies, 90),
            "p99_s": percentile(latencies, 99),
            "max_s": max(latencies) if latencies else None,
            "delivery": delivery(expected, spans, only_expected=True),
            "duplicated_overall": delivery(set(), spans)["duplicated"],
        }
