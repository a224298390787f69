"""API requests in steady state: N workflows with history, new runs every interval."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from exporter.emulator import Scenario
from tests.bench.common import (
    NAIVE,
    OTEL,
    Proc,
    bench_world,
    delivery,
    demo_clones,
    expected_keys,
    log,
    naive_cmd,
    parallel,
    wait_for_keys,
    world_cli,
)
from tests.bench.sizes import Sizes
from tests.support.clock import ManualClock


def scenario_requests(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """Steady state: N workflows with history; 5 new runs each per interval; 10 intervals.

    The emulator's ManualClock moves one interval between polls, so every new run has
    ended by the poll that follows it. orchestra-otel: `orchestra-otel once` per interval
    (one process per poll, so each also lists the workflows once: a `run` daemon does that
    only every ORCHESTRA_DISCOVERY_INTERVAL). Baseline: one process, one poll per interval.
    A first poll (not counted) exports the history. Both tools run at the same time, each
    against its own emulator and receiver: only request counts are measured here.
    """
    out: dict[str, Any] = {
        "sizes": {
            "workflows": sizes.req_workflows,
            "history_runs": sizes.req_history,
            "new_runs_per_workflow_per_interval": sizes.req_new_per_interval,
            "intervals": sizes.req_intervals,
            "interval_s": sizes.req_interval_s,
        }
    }
    new_runs = sizes.req_workflows * sizes.req_new_per_interval * sizes.req_intervals
    floor = sizes.req_intervals * sizes.req_workflows + new_runs
    out["floor_requests"] = floor
    out["new_runs"] = new_runs
    for tool, result in parallel(lambda tool: _requests_for(tool, sizes, tmp)).items():
        out[tool] = result
        total = result["requests_total"]
        result["requests_per_interval"] = total / sizes.req_intervals
        result["requests_per_new_run"] = total / new_runs
        result["vs_floor"] = total / floor - 1
        log(f"requests {tool}: {total} ({result['requests_by_kind']}), {result['delivery']}")
    out["naive_over_otel"] = out[NAIVE]["requests_total"] / out[OTEL]["requests_total"]
    return out


def _requests_for(tool: str, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    clock = ManualClock(time.time())
    t0 = clock()
    scenario = Scenario(demo_clones(sizes.req_workflows, t0), clock=clock, seed=101)
    every = sizes.req_interval_s / sizes.req_new_per_interval
    for workflow_id in scenario.workflow_ids():
        scenario.add_history(
            workflow_id,
            sizes.req_history,
            every=60.0,
            end_by=t0 - 1.0,
            duration=(0.5, 4.0),
            failure_rate=0.1,
        )
        scenario.add_schedule(
            workflow_id,
            every,
            first_at=t0 + 0.5,
            duration=(0.5, min(4.0, every - 1.5)),
            failure_rate=0.1,
            count=sizes.req_new_per_interval * sizes.req_intervals,
        )
    with bench_world(scenario, clock, tmp / f"requests-{tool}", recent_limit=10**6) as world:
        per_interval: list[dict[str, int]] = []
        started = time.monotonic()
        proc: Proc | None = None
        if tool == OTEL:
            env = world.env("grpc", ORCHESTRA_LOOKBACK="86400")
        else:
            proc = Proc(naive_cmd("control"), world.env("grpc"), stdin=True)

        def poll(number: int) -> None:
            if proc is None:
                result = world_cli(env)
                if result.returncode != 0:
                    raise RuntimeError(f"once failed:\n{result.stderr[-2000:]}")
            else:
                proc.send("poll")
                proc.wait_lines("{", number, 900, stream="out")

        poll(1)  # warm-up: the history
        world.emulator.reset_stats()
        for interval in range(sizes.req_intervals):
            clock.advance(sizes.req_interval_s)
            before = dict(world.emulator.stats()["by_kind"])
            poll(interval + 2)
            after = dict(world.emulator.stats()["by_kind"])
            per_interval.append({kind: after.get(kind, 0) - before.get(kind, 0) for kind in after})
        if proc is not None:
            proc.send("exit")
            proc.wait_exit(120)
        elapsed = time.monotonic() - started
        expected = expected_keys(scenario)
        spans = wait_for_keys(world.receiver, expected, 20)
        stats = world.emulator.stats()
        by_kind = dict(stats["by_kind"])
        # list calls by page: "offset=0" is the one a poll needs; later pages are extra
        pages: dict[str, int] = {}
        for request in stats["recent"]:
            if request["kind"] == "list_runs":
                offset = parse_qs(urlsplit(request["path"]).query).get("offset", ["0"])[0]
                pages[offset] = pages.get(offset, 0) + 1
    return {
        "requests_total": sum(by_kind.values()),
        "list_runs_by_offset": pages,
        "requests_by_kind": by_kind,
        "requests_excluding_discovery": sum(by_kind.values()) - by_kind.get("list_workflows", 0),
        "per_interval": per_interval,
        "wall_s": round(elapsed, 1),
        "delivery": delivery(expected, spans),
    }
