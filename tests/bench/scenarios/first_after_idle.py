"""The first run after a quiet spell, on the scaled clock (tests/bench/sizes.py).

`fai_workflows` workflows without runs. `orchestra-otel run` polls them with the scaled
schedule; after `fai_quiet_intervals` every workflow has backed off to the cap (10 s for
300 s: 2 + 4 + 8 intervals after the first poll, then the cap). Then each workflow gets
one run, starting at a random moment within two cap periods, so runs fall anywhere in
the workflow's back-off period. Measured: root span arrival minus run end (and minus
run start), p50 / p99 over the runs. The baseline polls every interval on a world of
its own, at the same time.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from exporter.emulator import Scenario
from exporter.mapping.timeparse import parse_timestamp_ns
from tests.bench.common import (
    bench_world,
    delivery,
    demo_clones,
    expected_keys,
    finished_runs,
    list_times,
    log,
    parallel,
    request_log,
    root_arrivals,
    run_end_s,
    start_tool,
    summary,
    wait_for_keys,
)
from tests.bench.sizes import ScaledSchedule, Sizes

SEED = 707
NAIVE_BATCH_DELAY_S = 5.0  # the baseline's BatchSpanProcessor holds spans this long


def _add_runs(scenario: Scenario, sizes: Sizes, start_after: float, spread: float) -> None:
    interval = sizes.scaled_interval_s
    duration = (
        sizes.fai_run_duration_intervals[0] * interval,
        sizes.fai_run_duration_intervals[1] * interval,
    )
    rng = random.Random(SEED + 1)
    for workflow_id in scenario.workflow_ids():
        scenario.add_schedule(
            workflow_id,
            10**6,
            first_at=start_after + rng.uniform(0, spread),
            duration=duration,
            failure_rate=0.1,
            count=1,
        )


def _for(tool: str, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    schedule = ScaledSchedule.of(sizes)
    interval = schedule.interval_s
    now = time.time()
    scenario = Scenario(demo_clones(sizes.fai_workflows, now), clock=time.time, seed=SEED)
    with bench_world(scenario, None, tmp / f"first-after-idle-{tool}", recent_limit=10**6) as world:
        proc, marker = start_tool(tool, world, interval, schedule.env())
        try:
            proc.wait_lines(marker, 1, 120)
            t0 = time.time()
            quiet_end = t0 + sizes.fai_quiet_intervals * interval
            spread = 2 * schedule.max_s
            _add_runs(scenario, sizes, quiet_end, spread)
            last_end = quiet_end + spread + sizes.fai_run_duration_intervals[1] * interval
            time.sleep(max(0.0, last_end - time.time()))
            expected = expected_keys(scenario)
            patience = schedule.max_s + interval + NAIVE_BATCH_DELAY_S + 10
            wait_for_keys(world.receiver, expected, patience)
            time.sleep(interval)  # a last look for duplicates
        finally:
            proc.stop()
        arrivals = root_arrivals(world.receiver)
        listings = list_times(request_log(world))
        after_end: list[float] = []
        after_start: list[float] = []
        quiet_gap: list[float] = []  # the workflow's last listing gap before its run
        for workflow_id, run in finished_runs(scenario):
            arrived = arrivals.get(str(run["id"]))
            if arrived is None:
                continue
            started = parse_timestamp_ns(str(run["start_time"])) / 1e9
            after_end.append(arrived - run_end_s(run))
            after_start.append(arrived - started)
            before = [t for t in listings.get(workflow_id, []) if t < started]
            if len(before) >= 2:
                quiet_gap.append(before[-1] - before[-2])
        return {
            "runs": len(finished_runs(scenario)),
            "latency_after_end_s": summary(after_end),
            "latency_after_start_s": summary(after_start),
            "listing_gap_before_run_s": summary(quiet_gap),
            "delivery": delivery(expected, world.receiver.spans()),
        }


def scenario_first_after_idle(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    schedule = ScaledSchedule.of(sizes)
    out: dict[str, Any] = {
        "sizes": {
            "workflows": sizes.fai_workflows,
            "quiet_intervals": sizes.fai_quiet_intervals,
            "run_duration_intervals": sizes.fai_run_duration_intervals,
        },
        "scaled": schedule.describe(),
        "target_p99_s": schedule.max_s + schedule.interval_s,
    }
    for tool, result in parallel(lambda tool: _for(tool, sizes, tmp)).items():
        out[tool] = result
        log(f"first after idle {tool}: {result['latency_after_end_s']} {result['delivery']}")
    out["naive_interval_s"] = schedule.interval_s
    return out
