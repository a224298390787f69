"""Backfill throughput: `orchestra-otel backfill` end to end vs the naive paging script
vs two bare export loops (the ceilings)."""

from __future__ import annotations

import base64
import json
import math
import time
from pathlib import Path
from typing import Any

from exporter.app import mapping_options
from exporter.config import load_settings
from exporter.emulator import Scenario
from exporter.mapping.graph import graph_from_api
from exporter.mapping.spans import WorkflowInfo, map_run
from exporter.source.models import Run, Step, Workflow, parse_records
from exporter.spool import outgoing_span
from tests.bench.common import (
    NAIVE,
    OTEL,
    PY,
    TOOLS,
    Proc,
    bench_world,
    delivery,
    demo_clones,
    expected_keys,
    exporter_cmd,
    fanout_workflow,
    finished_runs,
    log,
    naive_cmd,
    wait_for_keys,
)
from tests.bench.sizes import Sizes
from tests.support.clock import ManualClock
from tests.support.world import World


def backfill_scenario(
    kind: str, sizes: Sizes, clock: ManualClock
) -> tuple[Scenario, dict[str, Any]]:
    now = clock()
    if kind == "fanout":
        specs = [fanout_workflow(i, sizes.bf_width, now) for i in range(sizes.bf_workflows)]
        # 4% more runs than the step count needs: failing runs stop early (fewer steps)
        runs = math.ceil(sizes.bf_steps * 1.04 / (sizes.bf_width + 2) / sizes.bf_workflows)
        duration = (5.0, 30.0)
    else:
        specs = demo_clones(4, now)
        runs = math.ceil(sizes.bf_demo_runs / 4)
        duration = (1.0, 6.0)
    scenario = Scenario(specs, clock=clock, seed=303)
    for workflow_id in scenario.workflow_ids():
        scenario.add_history(workflow_id, runs, every=60.0, duration=duration, failure_rate=0.05)
    return scenario, {"workflows": len(specs), "runs": runs * len(specs)}


def _mapped_spans(scenario: Scenario) -> list[bytes]:
    """The spans orchestra-otel makes of every finished run, as the spool keeps them."""
    options = mapping_options(load_settings(environ={}, require_api_key=False))
    infos = {}
    for workflow in parse_records(scenario.workflow_records(), Workflow)[0]:
        infos[workflow.workflow_id] = WorkflowInfo(
            workflow.workflow_id, workflow.name, graph_from_api(workflow.graph)
        )
    payloads: list[bytes] = []
    for workflow_id, record in finished_runs(scenario):
        run = parse_records([record], Run)[0][0]
        steps = parse_records(scenario.steps(workflow_id, run.id) or [], Step)[0]
        mapped = map_run(infos[workflow_id], run, steps, options)
        payloads.extend(outgoing_span(span).payload for span in mapped.all_spans())
    return payloads


CEILINGS = ("ceiling", "sdk_ceiling")  # orchestra-otel's bytes path; the SDK's exporter


def _ceiling(kind: str, tool: str, scenario: Scenario, env: dict[str, str], tmp: Path) -> Any:
    spans_file = tmp / f"spans-{kind}.b64"
    lines = [base64.b64encode(payload).decode() for payload in _mapped_spans(scenario)]
    spans_file.write_text("\n".join(lines) + "\n", encoding="ascii")
    argv = [PY, "-m", "tests.bench.ceiling", str(spans_file), "--batch", "512"]
    proc = Proc([*argv, "--sdk"] if tool == "sdk_ceiling" else argv, env)
    code = proc.wait_exit(600)
    spans_file.unlink()
    if code != 0:
        raise RuntimeError(f"{tool} failed:\n{proc.tail()}")
    loop = json.loads(proc.lines("{", stream="out")[-1][1])
    return {
        **loop,
        "spans_per_s": loop["spans"] / loop["wall_s"],
        "spans_per_cpu_s": loop["spans"] / loop["cpu_s"],
    }


def _tool_backfill(tool: str, world: World, expected: set[tuple[str, str]]) -> dict[str, Any]:
    """The tool's backfill from process start until it exits with every span confirmed."""
    env = world.env("grpc")
    if tool == OTEL:
        proc = Proc(exporter_cmd("backfill", "--since", "30d"), env)
    else:
        proc = Proc(naive_cmd("backfill"), env)
    code = proc.wait_exit(900)
    if code != 0:
        raise RuntimeError(f"{tool} backfill failed ({code}):\n{proc.tail()}")
    spans = wait_for_keys(world.receiver, expected, 30)
    times = [request.received_at for request in world.receiver.requests()]
    last = max(times) if times else proc.started_wall
    first = min(times) if times else proc.started_wall
    assert proc.ended is not None
    process_wall = proc.ended - proc.started
    end_to_end = max(last, proc.started_wall + process_wall) - proc.started_wall
    received = len(spans)
    steps = sum(1 for key in expected if key[1] != "root")
    return {
        "end_to_end_s": end_to_end,
        "process_wall_s": process_wall,
        "process_cpu_s": proc.cpu_s,
        "peak_rss_mb": proc.peak_mb,
        "first_to_last_span_s": last - first,
        "spans_per_s": received / end_to_end,
        "steps_per_s": steps / end_to_end,
        "spans_per_cpu_s": received / proc.cpu_s if proc.cpu_s else None,
        "requests": sum(world.emulator.stats()["by_kind"].values()),
        "delivery": delivery(expected, spans),
    }


def _one_backfill(kind: str, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool in (*CEILINGS, *TOOLS):
        clock = ManualClock(time.time())
        scenario, shape = backfill_scenario(kind, sizes, clock)
        with bench_world(
            scenario, clock, tmp / f"backfill-{kind}-{tool}", history_limit=10**7
        ) as world:
            expected = expected_keys(scenario)
            steps = sum(1 for key in expected if key[1] != "root")
            out["sizes"] = {
                **shape,
                "steps": steps,
                "spans": len(expected),
                "steps_per_run": round(steps / shape["runs"], 2),
            }
            if tool in CEILINGS:
                out[tool] = _ceiling(kind, tool, scenario, world.env("grpc"), tmp)
            else:
                out[tool] = _tool_backfill(tool, world, expected)
            log(f"backfill {kind} {tool}: {out[tool]['spans_per_s']:.0f} spans/s")
    for tool in TOOLS:
        result = out[tool]
        for ceiling in CEILINGS:
            prefix = "vs_sdk_ceiling" if ceiling == "sdk_ceiling" else "vs_ceiling"
            result[prefix] = result["spans_per_s"] / out[ceiling]["spans_per_s"]
            result[f"{prefix}_cpu"] = (
                result["spans_per_cpu_s"] / out[ceiling]["spans_per_cpu_s"]
                if result["spans_per_cpu_s"]
                else None
            )
    out["otel_over_naive"] = out[OTEL]["spans_per_s"] / out[NAIVE]["spans_per_s"]
    return out


def scenario_backfill(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """`orchestra-otel backfill` end to end vs the naive paging script vs the bare exporters."""
    out = {"fanout": _one_backfill("fanout", sizes, tmp)}
    if sizes.bf_demo_runs:
        out["demo"] = _one_backfill("demo", sizes, tmp)
    return out
