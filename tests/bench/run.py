"""Benchmarks of orchestra-otel against a naive baseline, on one machine in one run.

    python -m tests.bench.run [--quick] [--out tests/bench/results/latest.json]
                              [--only requests,freshness,...] [--no-profile]
                              [--set SIZE=VALUE ...]

Every scenario runs the real orchestra-otel (the CLI in a subprocess; the real objects
in-process only for the pure mapping cost and the profiles) and the naive baseline of
`tests/bench/naive_baseline.py` against the same emulated Orchestra API and a real OTLP
receiver (gRPC), and checks delivery (expected / received / lost / duplicated spans).
Prints a table and writes everything measured as JSON. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import io
import json
import math
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from exporter.app import mapping_options, open_runtime
from exporter.backfill import Progress, Window, backfill
from exporter.config import load_settings
from exporter.emulator import Scenario
from exporter.mapping.graph import graph_from_api
from exporter.mapping.otlp import SpanSpec
from exporter.mapping.spans import WorkflowInfo, map_run
from exporter.sink.encoding import TRACES, Framer, Signal
from exporter.sink.otlp import OtlpSink
from exporter.source.models import Run, Step, Workflow, parse_records
from exporter.spool import outgoing_span
from exporter.state import Capture, Ledger, Outgoing
from exporter.workflow_metrics import decode_facts
from tests.bench import naive_baseline
from tests.bench.common import (
    PY,
    Proc,
    bench_world,
    delivery,
    demo_clones,
    expected_keys,
    exporter_cmd,
    fanout_workflow,
    finished_runs,
    load_average,
    naive_cmd,
    percentile,
    root_arrivals,
    run_end_s,
    timed,
    wait_for_keys,
)
from tests.support.clock import ManualClock
from tests.support.world import API_KEY, REPO, World

OTEL = "orchestra-otel"
NAIVE = "naive"
TOOLS = (OTEL, NAIVE)
SCENARIOS = ("requests", "freshness", "backfill", "mapping", "memory_idle", "profiles")


@dataclass(frozen=True)
class Sizes:
    # API requests, steady state
    req_workflows: int = 20
    req_history: int = 100
    req_new_per_interval: int = 5
    req_intervals: int = 10
    req_interval_s: float = 30.0
    # freshness (real clock)
    fresh_seconds: float = 40.0
    fresh_poll_s: float = 2.0
    fresh_workflows: int = 4
    # backfill
    bf_steps: int = 50_000
    bf_width: int = 23  # fan-out width: width + 2 = 25 steps per run
    bf_workflows: int = 4
    bf_demo_runs: int = 200  # second backfill: demo workflows, ~2.7 steps per run
    # mapping cost
    map_steps: int = 10_000
    map_repeats: int = 3
    # memory and idle cost
    idle_workflows: int = 50
    idle_history: int = 100
    idle_polls: int = 15
    idle_polls_naive_history: int = 1
    bg_seconds: float = 10.0
    mem_workflows: int = 100  # x mem_history runs of history = runs tracked
    mem_history: int = 100
    # profiles
    prof_steps: int = 5_000


QUICK = Sizes(
    req_workflows=4,
    req_history=20,
    req_intervals=1,
    fresh_seconds=5.0,
    fresh_workflows=3,
    bf_steps=1_500,
    bf_workflows=2,
    bf_demo_runs=0,  # skipped
    map_steps=1_500,
    map_repeats=1,
    idle_workflows=10,
    idle_history=20,
    idle_polls=3,
    idle_polls_naive_history=1,
    bg_seconds=3.0,
    mem_workflows=10,
    mem_history=30,
    prof_steps=300,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# =========================================================================== requests


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


def world_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        exporter_cmd(*(args or ("once",))),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# =========================================================================== freshness


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
        proc, marker = _start(tool, world, sizes.fresh_poll_s)
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


def parallel(function: Callable[[str], Any], tools: Sequence[str] = TOOLS) -> dict[str, Any]:
    """function(tool) for every tool at the same time (threads); results by tool."""
    with ThreadPoolExecutor(len(tools)) as pool:
        futures = {tool: pool.submit(function, tool) for tool in tools}
        return {tool: future.result() for tool, future in futures.items()}


def _run_all(jobs: Mapping[Any, tuple[Callable[[str], Any], str]]) -> dict[Any, Any]:
    """Every job (function, tool) at the same time; results by job key."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {key: pool.submit(function, tool) for key, (function, tool) in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


# =========================================================================== backfill


def _backfill_scenario(
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


def _one_backfill(kind: str, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool in ("ceiling", *TOOLS):
        clock = ManualClock(time.time())
        scenario, shape = _backfill_scenario(kind, sizes, clock)
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
            env = world.env("grpc")
            if tool == "ceiling":
                spans_file = tmp / f"spans-{kind}.b64"
                lines = [base64.b64encode(payload).decode() for payload in _mapped_spans(scenario)]
                spans_file.write_text("\n".join(lines) + "\n", encoding="ascii")
                proc = Proc(
                    [PY, "-m", "tests.bench.ceiling", str(spans_file), "--batch", "512"], env
                )
                code = proc.wait_exit(600)
                if code != 0:
                    raise RuntimeError(f"ceiling failed:\n{proc.tail()}")
                loop = json.loads(proc.lines("{", stream="out")[-1][1])
                spans_file.unlink()
                out[tool] = {
                    **loop,
                    "spans_per_s": loop["spans"] / loop["wall_s"],
                    "spans_per_cpu_s": loop["spans"] / loop["cpu_s"],
                }
                log(f"backfill {kind} ceiling: {out[tool]['spans_per_s']:.0f} spans/s")
                continue
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
            out[tool] = {
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
            log(
                f"backfill {kind} {tool}: {out[tool]['spans_per_s']:.0f} spans/s end to end, "
                f"{out[tool]['delivery']}"
            )
    for tool in TOOLS:
        out[tool]["vs_ceiling"] = out[tool]["spans_per_s"] / out["ceiling"]["spans_per_s"]
        out[tool]["vs_ceiling_cpu"] = (
            out[tool]["spans_per_cpu_s"] / out["ceiling"]["spans_per_cpu_s"]
            if out[tool]["spans_per_cpu_s"]
            else None
        )
    return out


def scenario_backfill(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """`orchestra-otel backfill` end to end vs the naive paging script vs the bare exporter."""
    out = {"fanout": _one_backfill("fanout", sizes, tmp)}
    if sizes.bf_demo_runs:
        out["demo"] = _one_backfill("demo", sizes, tmp)
    return out


# =========================================================================== mapping


class _Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def _mapping_inputs(sizes: Sizes) -> dict[str, Any]:
    clock = ManualClock(time.time())
    now = clock()
    scenario = Scenario(demo_clones(4, now), clock=clock, seed=404)
    per_workflow = math.ceil(sizes.map_steps / 2.7 / 4)
    for workflow_id in scenario.workflow_ids():
        scenario.add_history(
            workflow_id, per_workflow, every=60.0, duration=(1.0, 6.0), failure_rate=0.1
        )
    records = {w["workflow_id"]: w for w in scenario.workflow_records()}
    infos = {}
    for workflow in parse_records(list(records.values()), Workflow)[0]:
        infos[workflow.workflow_id] = WorkflowInfo(
            workflow.workflow_id, workflow.name, graph_from_api(workflow.graph)
        )
    items = []
    for workflow_id, record in finished_runs(scenario):
        body = json.dumps(scenario.steps(workflow_id, str(record["id"])) or []).encode()
        items.append((workflow_id, record, body))
    return {"records": records, "infos": infos, "items": items}


def scenario_mapping(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """CPU per step: json.loads vs parse + map_run + OTLP encoding; naive SDK spans too.

    `otlp_encode` turns the mapped spans into request bytes: each span's OTLP message,
    serialised, framed in 512-span requests (what `to_protobuf` did before schema 4).
    `spool_roundtrip` is what a span costs on its way through the spool: the record a
    capture writes (`outgoing_span`: its bytes and metric samples) and the samples read
    back on confirmation. The span's serialisation happens there, so the whole path adds
    only the framing (`otlp_frame`) to it, not `otlp_encode` again.
    """
    data = _mapping_inputs(sizes)
    items, infos, records = data["items"], data["infos"], data["records"]
    options = mapping_options(load_settings(environ={}, require_api_key=False))
    loaded = [json.loads(body) for _, _, body in items]
    steps_total = sum(len(steps) for steps in loaded)
    runs = [parse_records([record], Run)[0][0] for _, record, _ in items]
    parsed = [parse_records(steps, Step)[0] for steps in loaded]
    mapped: list[SpanSpec] = []
    framer = Framer.of(options.resource, options.scope)

    def do_json() -> None:
        for _, _, body in items:
            json.loads(body)

    def do_parse() -> None:
        for steps in loaded:
            parse_records(steps, Step)

    def do_map() -> None:
        mapped.clear()
        for (workflow_id, _, _), run, steps in zip(items, runs, parsed, strict=True):
            mapped.extend(map_run(infos[workflow_id], run, steps, options).all_spans())

    def do_encode() -> None:
        for start in range(0, len(mapped), 512):
            framer.request(
                [span.encode().SerializeToString() for span in mapped[start : start + 512]]
            )

    spooled: list[Outgoing] = []

    def do_spool() -> None:
        spooled[:] = [outgoing_span(span) for span in mapped]
        for outgoing in spooled:
            decode_facts(outgoing.samples)

    def do_frame() -> None:
        payloads = [outgoing.payload for outgoing in spooled]
        for start in range(0, len(payloads), 512):
            framer.request(payloads[start : start + 512])

    collector = _Collect()
    provider = TracerProvider()
    provider.add_span_processor(collector)
    tracer = provider.get_tracer("naive")

    def do_naive_spans() -> None:
        collector.spans.clear()
        for (workflow_id, record, _), steps in zip(items, loaded, strict=True):
            naive_baseline.spans_for_run(tracer, records[workflow_id], record, steps)

    def do_naive_encode() -> None:
        spans = collector.spans
        for start in range(0, len(spans), 512):
            encode_spans(spans[start : start + 512]).SerializeToString()

    repeats = sizes.map_repeats
    cost: dict[str, dict[str, Any]] = {}
    for name, function in (
        ("json_loads", do_json),
        ("parse_records", do_parse),
        ("map_run", do_map),
        ("otlp_encode", do_encode),
        ("spool_roundtrip", do_spool),
        ("otlp_frame", do_frame),
        ("naive_sdk_spans", do_naive_spans),
        ("naive_otlp_encode", do_naive_encode),
    ):
        wall, cpu, calls = timed(function, repeats, min_total_s=0.0 if repeats == 1 else 1.5)
        cost[name] = {
            "calls": calls,
            "cpu_s": cpu,
            "wall_s": wall,
            "us_per_step": cpu / steps_total * 1e6,
            "steps_per_s": steps_total / cpu if cpu else None,
        }
    json_cpu = cost["json_loads"]["cpu_s"]
    otel_core = cost["map_run"]["cpu_s"] + cost["otlp_encode"]["cpu_s"]
    otel_pipeline = (
        cost["parse_records"]["cpu_s"]
        + cost["map_run"]["cpu_s"]
        + cost["spool_roundtrip"]["cpu_s"]
        + cost["otlp_frame"]["cpu_s"]
    )
    naive_core = cost["naive_sdk_spans"]["cpu_s"] + cost["naive_otlp_encode"]["cpu_s"]
    expected_spans = steps_total + len(items)
    out: dict[str, Any] = {
        "sizes": {
            "runs": len(items),
            "steps": steps_total,
            "payload_bytes": sum(len(b) for _, _, b in items),
            "repeats": repeats,
        },
        "cost": cost,
        OTEL: {
            "map_encode_steps_per_s": steps_total / otel_core,
            "ratio_map_encode_vs_json": otel_core / json_cpu,
            "ratio_pipeline_vs_json": otel_pipeline / json_cpu,
            "pipeline_steps_per_s": steps_total / otel_pipeline,
            "delivery": {
                "expected": expected_spans,
                "received": len(mapped),
                "lost": expected_spans - len(mapped),
                "duplicated": 0,
            },
        },
        NAIVE: {
            "spans_encode_steps_per_s": steps_total / naive_core,
            "ratio_spans_encode_vs_json": naive_core / json_cpu,
            "delivery": {
                "expected": expected_spans,
                "received": len(collector.spans),
                "lost": expected_spans - len(collector.spans),
                "duplicated": 0,
            },
        },
    }
    log(
        f"mapping: {out[OTEL]['ratio_map_encode_vs_json']:.2f}x json (naive "
        f"{out[NAIVE]['ratio_spans_encode_vs_json']:.2f}x)"
    )
    return out


# =========================================================================== memory, idle


def _idle_world(workflows: int, history: int, clock_now: float) -> Scenario:
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


def _start(tool: str, world: World, interval: float, **env: str) -> tuple[Proc, str]:
    if tool == OTEL:
        extra = {"ORCHESTRA_POLL_INTERVAL": f"{interval:g}", **env}
        return Proc(exporter_cmd("run"), world.env("grpc", **extra)), "poll:"
    return Proc(naive_cmd("run", "--interval", f"{interval:g}"), world.env("grpc")), "naive poll"


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


def scenario_memory_idle(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """RSS idle and with N runs tracked; CPU per idle poll and between polls -> CPU s/hour."""
    out: dict[str, Any] = {
        "sizes": {
            "idle_workflows": sizes.idle_workflows,
            "idle_history_runs": sizes.idle_history,
            "runs_tracked": sizes.mem_workflows * sizes.mem_history,
            "idle_polls_measured": sizes.idle_polls,
            "background_window_s": sizes.bg_seconds,
        }
    }
    now = time.time()
    # Phase 1, four processes at once (each CPU figure is that process's own CPU time):
    # a. idle, no runs at all: RSS after a few polls, CPU per poll (poll interval 1 s);
    # b. background: poll interval 1 h, CPU over a quiet window after the first poll.
    empty = _idle_world(sizes.idle_workflows, 0, now)
    with bench_world(empty, None, tmp / "idle-empty") as world:

        def idle(tool: str) -> dict[str, Any]:
            proc, marker = _start(tool, world, 1.0)
            try:
                return _per_poll_cpu(proc, marker, 3, sizes.idle_polls, 120)
            finally:
                proc.stop()

        def background(tool: str) -> dict[str, Any]:
            proc, marker = _start(tool, world, 3600.0)
            try:
                proc.wait_lines(marker, 1, 120)
                time.sleep(1.0)
                before, ticks = proc.cpu(), proc.cpu_ticks()
                time.sleep(sizes.bg_seconds)
                return {
                    "cpu_per_s": (proc.cpu() - before) / sizes.bg_seconds,
                    "cpu_per_s_from_ticks": (proc.cpu_ticks() - ticks) / sizes.bg_seconds,
                    "mem": proc.mem(),
                }
            finally:
                proc.stop()

        jobs = {
            (kind, tool): (idle if kind == "idle" else background, tool)
            for kind in ("idle", "background")
            for tool in TOOLS
        }
        done = _run_all(jobs)
    for tool in TOOLS:
        out[tool] = {
            "idle_empty": done[("idle", tool)],
            "background_cpu_per_s": done[("background", tool)]["cpu_per_s"],
            "background_cpu_per_s_from_ticks": done[("background", tool)]["cpu_per_s_from_ticks"],
            "idle_after_one_poll_mem": done[("background", tool)]["mem"],
        }
        log(f"idle {tool}: {out[tool]}")

    # Phase 2, four processes at once:
    # a. idle workflows that show a full page of old, finished history on every list call;
    # b. memory with many runs tracked. orchestra-otel: its ledger already holds those
    #    runs as exported (written through exporter.state.Ledger exactly as capture +
    #    confirm leave it), as after a restart (the catch-up peak is the backfill's RSS).
    #    Baseline: its in-memory set is filled by its first poll over the same history.
    history = _idle_world(sizes.idle_workflows, sizes.idle_history, now)
    with bench_world(history, None, tmp / "idle-history") as world:

        def idle_history(tool: str) -> dict[str, Any]:
            # orchestra-otel: those runs ended before its lookback, so it never exports
            # them but still lists and checks them each poll; the baseline exports them on
            # its first poll and then fetches their steps again on every poll.
            proc, marker = _start(tool, world, 1.0, ORCHESTRA_LOOKBACK="60")
            polls = sizes.idle_polls if tool == OTEL else sizes.idle_polls_naive_history
            warm = 2 if tool == OTEL else 1  # the baseline's first poll exports the history
            try:
                return _per_poll_cpu(proc, marker, warm, polls, 900)
            finally:
                proc.stop()

        def tracked(tool: str) -> dict[str, Any]:
            scenario = _idle_world(sizes.mem_workflows, sizes.mem_history, now)
            with bench_world(scenario, None, tmp / f"memory-{tool}") as own:
                expected = expected_keys(scenario)
                seeded = None
                if tool == OTEL:
                    seeded = _seed_ledger(own.state_path, scenario)
                    expected = set()  # all of it was exported before this process started
                interval = 1.0 if tool == OTEL else 3600.0
                proc, marker = _start(tool, own, interval, ORCHESTRA_LOOKBACK="86400")
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

        jobs = {
            (kind, tool): (idle_history if kind == "history" else tracked, tool)
            for kind in ("history", "tracked")
            for tool in TOOLS
        }
        done = _run_all(jobs)
    for tool in TOOLS:
        out[tool]["idle_history"] = done[("history", tool)]
        out[tool]["tracked"] = done[("tracked", tool)]
        log(f"idle+history, tracked {tool}: {out[tool]['idle_history']} {out[tool]['tracked']}")
    for tool in TOOLS:
        background_rate = out[tool]["background_cpu_per_s"]
        for key in ("idle_empty", "idle_history"):
            per_poll = out[tool][key]["cpu_per_poll_s"]
            # per-poll figure was taken at a 1 s interval: take out that 1 s of background
            out[tool][key]["cpu_s_per_hour_at_30s"] = (
                120 * max(per_poll - background_rate * 1.0, 0.0) + 3600 * background_rate
            )

    return out


# =========================================================================== profiles


class _ProfilingSink:
    """Wraps the real sink; profiles each export in the worker thread that runs it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.profiles: list[cProfile.Profile] = []
        self._local = threading.local()

    def send(self, signal: Signal, request: bytes, count: int) -> bool:
        profile = getattr(self._local, "profile", None)
        if profile is None:
            profile = self._local.profile = cProfile.Profile(time.thread_time)
            self.profiles.append(profile)
        profile.enable()
        try:
            return bool(self.inner.send(signal, request, count))
        finally:
            profile.disable()

    def shutdown(self) -> None:
        self.inner.shutdown()


def _top(stats: pstats.Stats, key: str, limit: int) -> list[dict[str, Any]]:
    stats.sort_stats(key)
    rows = []
    site = next((p for p in sys.path if p.endswith("site-packages")), "\0")
    for func in stats.fcn_list[:limit]:  # type: ignore[attr-defined]
        _, calls, tottime, cumtime, _ = stats.stats[func]  # type: ignore[attr-defined]
        filename, line, name = func
        where = filename.replace(str(REPO) + "/", "").replace(site + "/", "")
        rows.append(
            {
                "where": f"{where}:{line}({name})",
                "calls": calls,
                "tottime_s": round(tottime, 3),
                "cumtime_s": round(cumtime, 3),
            }
        )
    return rows


_BUCKETS = (
    ("orchestra-otel (exporter/)", (f"{REPO}/exporter/",)),
    ("OTLP encoding (opentelemetry exporter)", ("opentelemetry/exporter/",)),
    ("OpenTelemetry SDK/API", ("opentelemetry/",)),
    ("HTTP client (httpx/httpcore/h11/anyio)", ("httpx/", "httpcore/", "h11/", "anyio/")),
    ("pydantic", ("pydantic",)),
    ("protobuf / grpc", ("google/protobuf", "grpc/", "grpc_")),
    ("asyncio", ("asyncio/",)),
    ("json", ("json/",)),
)


def _buckets(stats: pstats.Stats) -> dict[str, float]:
    """Own time (tottime) summed by where the code lives (C functions by their name)."""
    found: dict[str, float] = {}
    for (filename, _, name), row in stats.stats.items():  # type: ignore[attr-defined]
        label = "other"
        if filename == "~":  # C functions: named by what they are
            label = "other builtins (isinstance, dict, ...)"
            if "sqlite3" in name:
                label = "SQLite (sqlite3 calls)"
            elif any(word in name for word in ("socket", "select", "epoll", "ssl")):
                label = "sockets"
        for bucket, needles in _BUCKETS:
            if any(needle in filename for needle in needles):
                label = bucket
                break
        found[label] = found.get(label, 0.0) + row[2]
    return {k: round(v, 3) for k, v in sorted(found.items(), key=lambda kv: -kv[1])}


def _profile_summary(stats: pstats.Stats, total: float) -> dict[str, Any]:
    return {
        "by_area_tottime_s": _buckets(stats),
        "total_cpu_s": round(total, 3),
        "by_tottime": _top(stats, "tottime", 15),
        "by_cumtime": _top(stats, "cumulative", 25),
    }


def scenario_profiles(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """cProfile (CPU time per thread) of the mapping path and of an in-process backfill."""
    out: dict[str, Any] = {}
    # mapping + encoding
    data = _mapping_inputs(replace(sizes, map_steps=sizes.prof_steps))
    options = mapping_options(load_settings(environ={}, require_api_key=False))
    infos = data["infos"]
    work = [
        (w, parse_records([r], Run)[0][0], parse_records(json.loads(b), Step)[0])
        for w, r, b in data["items"]
    ]
    profile = cProfile.Profile(time.thread_time)
    cpu0 = time.thread_time()
    profile.enable()
    framer = Framer.of(options.resource, options.scope)
    spans: list[SpanSpec] = []
    for workflow_id, run, steps in work:
        spans.extend(map_run(infos[workflow_id], run, steps, options).all_spans())
    for start in range(0, len(spans), 512):
        framer.request([span.encode().SerializeToString() for span in spans[start : start + 512]])
    profile.disable()
    out["mapping"] = _profile_summary(pstats.Stats(profile), time.thread_time() - cpu0)
    # backfill, in-process with the real runtime (emulator and receiver in other threads)
    clock = ManualClock(time.time())
    scenario, shape = _backfill_scenario("fanout", replace(sizes, bf_steps=sizes.prof_steps), clock)
    with bench_world(scenario, clock, tmp / "profile-backfill", history_limit=10**7) as world:
        with _otel_env(world.env("grpc")) as env:
            settings = load_settings(environ=env)
            sink = _ProfilingSink(OtlpSink("grpc"))
            runtime = open_runtime(settings, sink, API_KEY, push_metrics=False)
            window = Window(0, int(time.time() * 1e9) + 10**12)
            main_profile = cProfile.Profile(time.thread_time)

            async def go() -> Any:
                main_profile.enable()
                try:
                    return await backfill(runtime.poller, window, Progress(stream=io.StringIO()))
                finally:
                    main_profile.disable()
                    await runtime.close()

            wall0 = time.perf_counter()
            result = asyncio.run(go())
            wall = time.perf_counter() - wall0
        expected = expected_keys(scenario)
        spans_received = wait_for_keys(world.receiver, expected, 30)
    main_stats = pstats.Stats(main_profile)
    export_stats = pstats.Stats(sink.profiles[0]) if sink.profiles else None
    for extra in sink.profiles[1:]:
        assert export_stats is not None
        export_stats.add(extra)
    out["backfill"] = {
        "sizes": shape,
        "wall_s": wall,
        "spans_exported": result.spans_exported,
        "delivery": delivery(expected, spans_received),
        "loop_thread": _profile_summary(main_stats, main_stats.total_tt),  # type: ignore[attr-defined]
        "export_threads": _profile_summary(export_stats, export_stats.total_tt)  # type: ignore[attr-defined]
        if export_stats
        else None,
    }
    # idle polls, in-process with the real runtime: where an idle poll's CPU goes, for
    # workflows without runs and for workflows listing 100 old runs each
    now = time.time()
    for key, history in (("idle_poll", 0), ("idle_poll_history", sizes.idle_history)):
        idle = _idle_world(sizes.idle_workflows, history, now)
        with (
            bench_world(idle, None, tmp / f"profile-{key}") as world,
            _otel_env(world.env("grpc", ORCHESTRA_LOOKBACK="60")) as env,
        ):
            runtime = open_runtime(
                load_settings(environ=env), OtlpSink("grpc"), API_KEY, push_metrics=False
            )
            idle_profile = cProfile.Profile(time.thread_time)
            polls = 10
            asyncio.run(_profiled_polls(runtime, idle_profile, polls))
        idle_stats = pstats.Stats(idle_profile)
        out[key] = {
            "workflows": sizes.idle_workflows,
            "history_runs_listed": history,
            "polls": polls,
            **_profile_summary(idle_stats, idle_stats.total_tt),  # type: ignore[attr-defined]
        }
    log("profiles done")
    return out


async def _profiled_polls(runtime: Any, profile: cProfile.Profile, polls: int) -> None:
    """One poll (discovery, first sight of the workflows), then `polls` profiled ones."""
    try:
        await runtime.poll_and_log()
        profile.enable()
        for _ in range(polls):
            await runtime.poll_and_log()
        profile.disable()
    finally:
        await runtime.close()


@contextlib.contextmanager
def _otel_env(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The OTLP exporters read os.environ themselves: point it at the world's receiver."""
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("OTEL_")})
    try:
        yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)


# =========================================================================== report


def _fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def _dl(d: dict[str, int] | None) -> str:
    if not d:
        return "-"
    return f"{d['expected']}/{d['received']}/{d['lost']}/{d['duplicated']}"


def table(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(figure, orchestra-otel, naive, target, verdict) rows."""
    rows: list[tuple[str, str, str, str, str]] = []
    s = results["scenarios"]
    if "requests" in s:
        r = s["requests"]
        o, n = r[OTEL], r[NAIVE]
        met = o["vs_floor"] <= 0.05 and r["naive_over_otel"] >= 15
        rows.append(
            (
                f"API requests, {r['sizes']['intervals']} intervals (floor {r['floor_requests']})",
                f"{o['requests_total']} ({o['requests_per_new_run']:.2f}/run, "
                f"{o['vs_floor'] * 100:+.1f}% vs floor; "
                f"{sum(n for k, n in o['list_runs_by_offset'].items() if k != '0')} list calls "
                f"past page 1, {o['requests_by_kind'].get('list_workflows', 0)} discovery)",
                f"{n['requests_total']} ({n['requests_per_new_run']:.1f}/run)",
                "<= floor +5%, >= 15x fewer",
                f"{'MET' if met else 'MISSED'} ({r['naive_over_otel']:.1f}x fewer)",
            )
        )
    if "freshness" in s:
        f = s["freshness"]
        o, n = f[OTEL], f[NAIVE]
        limit = f["sizes"]["poll_interval_s"] + 1
        rows.append(
            (
                f"freshness p50 / p99 (poll {f['sizes']['poll_interval_s']:g} s)",
                f"{_fmt(o['p50_s'], 2)} / {_fmt(o['p99_s'], 2)} s",
                f"{_fmt(n['p50_s'], 2)} / {_fmt(n['p99_s'], 2)} s",
                f"p99 <= {limit:g} s",
                "MET" if o["p99_s"] is not None and o["p99_s"] <= limit else "MISSED",
            )
        )
    if "backfill" in s:
        for kind, label in (("fanout", "backfill"), ("demo", "backfill, demo shapes")):
            if kind not in s["backfill"]:
                continue
            b = s["backfill"][kind]
            o, n, c = b[OTEL], b[NAIVE], b["ceiling"]
            rows.append(
                (
                    f"{label}: {b['sizes']['steps']:,} steps, {b['sizes']['steps_per_run']} "
                    f"steps/run (ceiling {c['spans_per_s']:,.0f} spans/s)",
                    f"{o['spans_per_s']:,.0f} spans/s = {o['vs_ceiling']:.2f}x ceiling "
                    f"({_fmt(o['vs_ceiling_cpu'], 2)}x per CPU s)",
                    f"{n['spans_per_s']:,.0f} spans/s = {n['vs_ceiling']:.2f}x",
                    ">= 0.7x ceiling",
                    "MET" if o["vs_ceiling"] >= 0.7 else "MISSED",
                )
            )
    if "backfill" in s:
        b = s["backfill"]["fanout"]
        rows.append(
            (
                f"peak RSS during that backfill ({b['sizes']['spans']:,} spans)",
                f"{_fmt(b[OTEL]['peak_rss_mb'])} MB",
                f"{_fmt(b[NAIVE]['peak_rss_mb'])} MB",
                "(<= 150 MB)",
                "MET" if (b[OTEL]["peak_rss_mb"] or 0) <= 150 else "MISSED",
            )
        )
    if "mapping" in s:
        m = s["mapping"]
        o, n = m[OTEL], m[NAIVE]
        rows.append(
            (
                "mapping + OTLP encoding vs json.loads (CPU)",
                f"{o['ratio_map_encode_vs_json']:.2f}x "
                f"({o['map_encode_steps_per_s']:,.0f} steps/s); "
                f"whole path {o['ratio_pipeline_vs_json']:.1f}x",
                f"{n['ratio_spans_encode_vs_json']:.2f}x "
                f"({n['spans_encode_steps_per_s']:,.0f} steps/s)",
                "<= 3x",
                "MET" if o["ratio_map_encode_vs_json"] <= 3 else "MISSED",
            )
        )
    if "memory_idle" in s:
        mi = s["memory_idle"]
        o, n = mi[OTEL], mi[NAIVE]
        rows.append(
            (
                "RSS idle (after polls, no runs)",
                f"{o['idle_empty']['mem']['rss_mb']:.1f} MB",
                f"{n['idle_empty']['mem']['rss_mb']:.1f} MB",
                "<= 80 MB",
                "MET" if o["idle_empty"]["mem"]["rss_mb"] <= 80 else "MISSED",
            )
        )
        tracked = mi["sizes"]["runs_tracked"]
        rows.append(
            (
                f"RSS with {tracked:,} runs tracked (peak)",
                f"{o['tracked']['mem']['rss_mb']:.1f} MB ({o['tracked']['mem']['hwm_mb']:.1f})",
                f"{n['tracked']['mem']['rss_mb']:.1f} MB ({n['tracked']['mem']['hwm_mb']:.1f})",
                "<= 150 MB",
                "MET" if o["tracked"]["mem"]["rss_mb"] <= 150 else "MISSED",
            )
        )
        rows.append(
            (
                f"idle CPU, {mi['sizes']['idle_workflows']} workflows, 30 s interval",
                f"{o['idle_empty']['cpu_s_per_hour_at_30s']:.1f} s/h "
                f"({o['idle_empty']['cpu_per_poll_s'] * 1000:.0f} ms/poll)",
                f"{n['idle_empty']['cpu_s_per_hour_at_30s']:.1f} s/h",
                "< 10 s/h",
                "MET" if o["idle_empty"]["cpu_s_per_hour_at_30s"] < 10 else "MISSED",
            )
        )
        rows.append(
            (
                f"  same, each listing {mi['sizes']['idle_history_runs']} old runs",
                f"{o['idle_history']['cpu_s_per_hour_at_30s']:.1f} s/h "
                f"({o['idle_history']['cpu_per_poll_s'] * 1000:.0f} ms/poll)",
                f"{n['idle_history']['cpu_s_per_hour_at_30s']:.0f} s/h",
                "< 10 s/h",
                "MET" if o["idle_history"]["cpu_s_per_hour_at_30s"] < 10 else "MISSED",
            )
        )
    correctness = []
    for name, o_d, n_d in _deliveries(s):
        correctness.append((name, o_d, n_d))
    if correctness:
        clean = all(
            o_d is None or (o_d["lost"] == 0 and o_d["duplicated"] == 0)
            for _, o_d, _ in correctness
        )
        rows.append(
            (
                "correctness: spans expected/received/lost/dup",
                "; ".join(f"{name} {_dl(o_d)}" for name, o_d, _ in correctness),
                "; ".join(f"{name} {_dl(n_d)}" for name, _, n_d in correctness),
                "0 lost, 0 dup",
                "MET" if clean else "MISSED",
            )
        )
    return rows


def _deliveries(s: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    found = []
    if "requests" in s:
        found.append(
            ("requests", s["requests"][OTEL]["delivery"], s["requests"][NAIVE]["delivery"])
        )
    if "freshness" in s:
        found.append(
            ("freshness", s["freshness"][OTEL]["delivery"], s["freshness"][NAIVE]["delivery"])
        )
    if "backfill" in s:
        for kind in s["backfill"]:
            b = s["backfill"][kind]
            found.append((f"backfill-{kind}", b[OTEL]["delivery"], b[NAIVE]["delivery"]))
    if "mapping" in s:
        found.append(("mapping", s["mapping"][OTEL]["delivery"], s["mapping"][NAIVE]["delivery"]))
    if "memory_idle" in s:
        mi = s["memory_idle"]
        found.append(("memory", mi[OTEL]["tracked"]["delivery"], mi[NAIVE]["tracked"]["delivery"]))
    return found


def render(rows: list[tuple[str, str, str, str, str]]) -> str:
    header = ("figure", "orchestra-otel", "naive baseline", "target", "verdict")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _code_version() -> dict[str, Any]:
    """The commit measured, and whether exporter/ differed from it (others edit it too)."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "exporter_uncommitted_changes": bool(git("status", "--porcelain", "exporter")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run")
    parser.add_argument("--quick", action="store_true", help="reduced sizes (smoke check)")
    parser.add_argument("--out", type=Path, default=REPO / "tests/bench/results/latest.json")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiles")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SIZE=VALUE", help="override one size"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in Sizes.__dataclass_fields__:
            parser.error(f"--set: unknown size {name!r}")
        sizes = replace(sizes, **{name: type(getattr(sizes, name))(value)})
    chosen = args.only.split(",") if args.only else list(SCENARIOS)
    if args.no_profile and "profiles" in chosen:
        chosen.remove("profiles")
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    functions = {
        "requests": scenario_requests,
        "freshness": scenario_freshness,
        "backfill": scenario_backfill,
        "mapping": scenario_mapping,
        "memory_idle": scenario_memory_idle,
        "profiles": scenario_profiles,
    }
    command = "python -m tests.bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {
        "command": command.strip(),
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_start": load_average(),
        },
        "code": _code_version(),
        "sizes": asdict(sizes),
        "scenarios": {},
        "durations_s": {},
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="orchestra-otel-bench-") as folder:
        for name in SCENARIOS:
            if name not in chosen:
                continue
            log(f"scenario {name} ...")
            began = time.monotonic()
            results["scenarios"][name] = functions[name](sizes, Path(folder))
            results["durations_s"][name] = round(time.monotonic() - began, 1)
    results["durations_s"]["total"] = round(time.monotonic() - started, 1)
    results["machine"]["load_average_end"] = load_average()
    rows = table(results)
    results["table"] = [
        dict(zip(("figure", OTEL, NAIVE, "target", "verdict"), r, strict=True)) for r in rows
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(render(rows))
    print(
        f"\n{results['durations_s']['total']:.0f} s in all; load average "
        f"{results['machine']['load_average_start']} -> {results['machine']['load_average_end']}"
        f" on {results['machine']['cpus']} CPUs; JSON: {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
