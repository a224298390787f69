"""cProfile of the mapping path, an in-process backfill and idle polls."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from exporter.app import mapping_options, open_runtime
from exporter.backfill import Progress, Window, backfill
from exporter.config import load_settings
from exporter.mapping.otlp import SpanSpec
from exporter.mapping.spans import map_run
from exporter.sink.encoding import Framer, Signal
from exporter.sink.otlp import OtlpSink
from exporter.source.models import Run, Step, parse_records
from tests.bench.common import (
    bench_world,
    delivery,
    expected_keys,
    log,
    wait_for_keys,
)
from tests.bench.scenarios.backfill import backfill_scenario
from tests.bench.scenarios.mapping import mapping_inputs
from tests.bench.scenarios.memory_idle import idle_world
from tests.bench.sizes import Sizes
from tests.support.clock import ManualClock
from tests.support.world import API_KEY, REPO


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
    data = mapping_inputs(replace(sizes, map_steps=sizes.prof_steps))
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
    scenario, shape = backfill_scenario("fanout", replace(sizes, bf_steps=sizes.prof_steps), clock)
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
        idle = idle_world(sizes.idle_workflows, history, now)
        with (
            bench_world(idle, None, tmp / f"profile-{key}") as world,
            _otel_env(world.env("grpc", **_EVERY_POLL_LISTS, ORCHESTRA_LOOKBACK="60")) as env,
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


# A fixed, short interval: each profiled poll lists every workflow (with the schedule's
# defaults, polls right after the first would find none due).
_EVERY_POLL_LISTS = {"ORCHESTRA_POLL_INTERVAL": "0.01", "ORCHESTRA_POLL_INTERVAL_MAX": "0.01"}


async def _profiled_polls(runtime: Any, profile: cProfile.Profile, polls: int) -> None:
    """One poll (discovery, first sight of the workflows), then `polls` profiled ones,
    each after the schedule's interval (unprofiled: the CPU is the thread's, not sleep)."""
    interval = runtime.poller.schedule.settings.interval_s
    try:
        await runtime.poll_and_log()
        for _ in range(polls):
            await asyncio.sleep(interval * 2)
            profile.enable()
            result = await runtime.poll_and_log()
            profile.disable()
            if result.workflows != len(runtime.poller.workflows.workflows):
                raise RuntimeError(f"a profiled idle poll listed {result.workflows} workflows")
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
