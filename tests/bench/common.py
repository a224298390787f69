"""Shared pieces of the benchmarks: worlds, processes, /proc readings, delivery checks."""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import gc
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from exporter.emulator import CodeNode, IntegrationNode, ModelNode, Scenario
from exporter.emulator.demo import demo_workflows
from exporter.emulator.graph import END, START, WorkflowSpec
from exporter.mapping.attributes import RUN_ID, STEP_ID
from exporter.mapping.timeparse import parse_timestamp_ns
from tests.support.clock import ManualClock
from tests.support.daemon import REPO, Daemon
from tests.support.otlp_receiver import (
    OtlpReceiver,
    ReceivedRequest,
    ReceivedSpan,
    flatten_request,
)
from tests.support.world import World, open_world

PY = sys.executable
OTEL = "orchestra-otel"
NAIVE = "naive"
TOOLS = (OTEL, NAIVE)
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
_NAMESPACE = uuid.UUID("6f1d3c55-0b8e-4c8e-9a51-3f2b7d0e9a10")
ROOT = "root"


# --------------------------------------------------------------------------- workflows


def bench_id(label: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, label))


def demo_clones(count: int, now: float) -> list[WorkflowSpec]:
    """`count` workflows cycling through the four demo shapes (1, 2, 4 and 4-5 nodes)."""
    shapes = demo_workflows(now)
    return [
        dataclasses.replace(
            shapes[i % len(shapes)],
            workflow_id=bench_id(f"demo-{i}"),
            name=f"{shapes[i % len(shapes)].name}-{i}",
        )
        for i in range(count)
    ]


def fanout_workflow(index: int, width: int, now: float) -> WorkflowSpec:
    """prepare -> `width` parallel branches (model / integration / code) -> merge.

    `width + 2` steps per run; each branch reads only `prepare`, so step payloads stay
    the size of a demo step instead of growing with the width.
    """
    prepare = CodeNode(
        node_id="prepare",
        description="Split the request",
        results=lambda rng, data: {"parts": width, "batch": rng.randrange(10**6)},
        stdout="split into parts\n",
    )
    branches: list[Any] = []
    for i in range(width):
        if i % 3 == 0:
            branches.append(
                ModelNode(
                    node_id=f"summarize_{i}",
                    model="virtuoso-medium",
                    messages=(
                        {"role": "user", "content": f"Summarise part {i} of: {{{{topic}}}}"},
                    ),
                    replies=(f"Part {i}: the essentials in two sentences.", "Nothing to add."),
                )
            )
        elif i % 3 == 1:
            branches.append(
                IntegrationNode(
                    node_id=f"notify_{i}",
                    app_name="slack",
                    action="SLACK_SENDS_A_MESSAGE_TO_A_SLACK_CHANNEL",
                    input_mapping={"channel": "#bench", "text": f"part {i} of {{{{topic}}}}"},
                )
            )
        else:
            branches.append(
                CodeNode(
                    node_id=f"score_{i}",
                    results=lambda rng, data: {"score": rng.randint(0, 100)},
                    stdout="scored\n",
                )
            )
    merge = CodeNode(node_id="merge", description="Join the parts", results=None)
    ids = [node.node_id for node in branches]
    return WorkflowSpec(
        workflow_id=bench_id(f"fanout-{width}-{index}"),
        name=f"fanout-{index}",
        description=f"Fans out to {width} branches and joins them again.",
        nodes=(prepare, *branches, merge),
        edges=(
            (START, "prepare"),
            *(("prepare", node_id) for node_id in ids),
            *((node_id, "merge") for node_id in ids),
            ("merge", END),
        ),
        selected_output="merge",
        sample_inputs=({"topic": "quarterly report"}, {"topic": "support backlog"}),
        created_at=now - 30 * 86_400,
    )


# --------------------------------------------------------------------------- worlds


class LazyReceiver(OtlpReceiver):
    """The real test receiver (gRPC + HTTP, official protobufs), made light on the hot path.

    The support receiver turns every span of every request into a `ReceivedSpan` as the
    request arrives; in the benchmark process that Python work competes with the emulator
    and made the receiver, not the exporters, the bottleneck (~2,800 spans/s for both the
    ceiling and the baseline). Here a request is only counted on arrival, and its spans
    are decoded the first time someone asks for them. Overrides the receiver's private
    `_store`: imported, not modified.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._flattened = 0  # requests already decoded into self._spans
        self._span_total = 0

    def _store(self, protocol: str, request: Any, headers: dict[str, str]) -> None:
        count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self._cond:
            self._requests.append(ReceivedRequest(protocol, request, headers, time.time()))
            self._span_total += count
            self._cond.notify_all()

    def _decode_pending(self) -> None:
        with self._cond:
            while self._flattened < len(self._requests):
                item = self._requests[self._flattened]
                self._spans.extend(flatten_request(item.request, item.protocol))
                self._flattened += 1

    def spans(self, protocol: str | None = None) -> list[ReceivedSpan]:
        self._decode_pending()
        return super().spans(protocol)

    def span_count(self) -> int:
        with self._cond:
            return self._span_total

    def clear(self) -> None:
        with self._cond:
            super().clear()
            self._flattened = 0
            self._span_total = 0


def bench_world(
    scenario: Scenario, clock: ManualClock | None, tmp: Path, **emulator_options: Any
) -> contextlib.AbstractContextManager[World]:
    """The tests' world (emulator, receiver, private state file) with the LazyReceiver."""
    return open_world(scenario, tmp, clock=clock, receiver=LazyReceiver(), **emulator_options)


def finished_runs(scenario: Scenario) -> list[tuple[str, dict[str, Any]]]:
    """(workflow id, run record) of every run the emulator shows as ended now (all pages)."""
    found = []
    for workflow_id in scenario.workflow_ids():
        for run in scenario.runs(workflow_id) or []:
            if run.get("end_time") is not None:
                found.append((workflow_id, run))
    return found


def expected_keys(
    scenario: Scenario, runs: Iterable[tuple[str, dict[str, Any]]] | None = None
) -> set[tuple[str, str]]:
    """(run id, step id or "root") of every span a correct exporter sends for `runs`."""
    keys: set[tuple[str, str]] = set()
    for workflow_id, run in finished_runs(scenario) if runs is None else runs:
        run_id = str(run["id"])
        keys.add((run_id, ROOT))
        for step in scenario.steps(workflow_id, run_id) or []:
            keys.add((run_id, str(step["id"])))
    return keys


def span_key(span: ReceivedSpan) -> tuple[str, str]:
    return (str(span.attributes.get(RUN_ID)), str(span.attributes.get(STEP_ID, ROOT)))


def delivery(
    expected: set[tuple[str, str]], spans: Sequence[ReceivedSpan], *, only_expected: bool = False
) -> dict[str, int]:
    """Expected / received / lost / duplicated; `only_expected` ignores spans of other runs."""
    counts = Counter(span_key(span) for span in spans)
    if only_expected:
        counts = Counter({key: n for key, n in counts.items() if key in expected})
    return {
        "expected": len(expected),
        "received": sum(counts.values()),
        "lost": len(expected - set(counts)),
        "duplicated": sum(n - 1 for n in counts.values() if n > 1),
        "unexpected": len(set(counts) - expected),
    }


def wait_for_keys(
    receiver: OtlpReceiver, expected: set[tuple[str, str]], timeout: float
) -> list[ReceivedSpan]:
    """Wait until every expected span arrived (or the timeout); returns what arrived."""
    deadline = time.monotonic() + timeout
    while True:
        spans = receiver.spans()
        if len(spans) >= len(expected) and expected <= {span_key(s) for s in spans}:
            return spans
        if time.monotonic() >= deadline:
            return spans
        time.sleep(0.2)


def root_arrivals(receiver: OtlpReceiver) -> dict[str, float]:
    """run id -> time.time() at which the receiver first got its root span."""
    arrivals: dict[str, float] = {}
    for request in receiver.requests():
        for span in flatten_request(request.request, request.protocol):
            if not span.parent_span_id:
                arrivals.setdefault(str(span.attributes.get(RUN_ID)), request.received_at)
    return arrivals


def arrival_window(receiver: OtlpReceiver) -> tuple[float, float] | None:
    times = [request.received_at for request in receiver.requests()]
    return (min(times), max(times)) if times else None


def run_end_s(run: dict[str, Any]) -> float:
    return parse_timestamp_ns(str(run["end_time"])) / 1e9


# --------------------------------------------------------------------------- processes


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process, in seconds (/proc/PID/stat; 10 ms resolution)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def proc_cpu_precise_s(pid: int) -> float:
    """CPU time of the live threads of a process, in seconds, to the nanosecond.

    Sums /proc/PID/task/*/schedstat (time on CPU). Threads that ended are not counted, so
    windows measured with it must not span thread exits (the daemons keep their threads).
    """
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{task}/schedstat"
        with contextlib.suppress(FileNotFoundError), open(path, encoding="ascii") as handle:
            total += int(handle.read().split()[0])
    return total / 1e9


def proc_mem_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a live process, in MiB (/proc/PID/status)."""
    found: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(found["VmRSS"], 1), "hwm_mb": round(found["VmHWM"], 1)}


class Proc(Daemon):
    """The tests' Daemon (output lines collected with their times), run from the repo,
    with CPU and memory readings: peak RSS sampled while it lives, CPU time from wait4."""

    def __init__(self, args: Sequence[str], env: dict[str, str], stdin: bool = False) -> None:
        self.cpu_s: float | None = None  # from wait4, once it exited
        self.peak_mb: float | None = None  # VmHWM, sampled
        self.ended: float | None = None
        super().__init__(args, env, cwd=REPO, stdin=stdin)
        threading.Thread(target=self._sample_peak, daemon=True).start()

    def _sample_peak(self) -> None:
        """VmHWM (peak RSS) read every 0.2 s while the process lives: its last reading is
        the peak (wait4's ru_maxrss is not used: it can report the forking parent's size)."""
        while self.process.returncode is None:
            try:
                self.peak_mb = max(self.peak_mb or 0.0, proc_mem_mb(self.pid)["hwm_mb"])
            except (OSError, KeyError):
                return
            time.sleep(0.2)

    def cpu(self) -> float:
        """CPU seconds so far (threads alive now, ns resolution: see proc_cpu_precise_s)."""
        return proc_cpu_precise_s(self.pid)

    def cpu_ticks(self) -> float:
        """CPU seconds so far, every thread ever, 10 ms resolution (/proc/PID/stat)."""
        return proc_cpu_s(self.pid)

    def mem(self) -> dict[str, float]:
        return proc_mem_mb(self.pid)

    def wait_exit(self, timeout: float) -> int:
        """Reap the process with wait4, keeping its CPU time and peak RSS."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.ended = time.monotonic()
                self.cpu_s = usage.ru_utime + usage.ru_stime
                self.process.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() >= deadline:
                self.process.kill()
                raise TimeoutError(f"{self.argv[2:4]} did not exit in {timeout}s:\n{self.tail()}")
            time.sleep(0.02)
        time.sleep(0.05)  # let the reader threads take the last lines
        return self.process.returncode

    def stop(self, timeout: float = 60) -> int:
        if self.ended is not None:  # already reaped by wait_exit
            return int(self.process.returncode)
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)


class CpuSampler:
    """A process's CPU seconds sampled every `step` s with the wall time, so CPU can be
    read afterwards over any window (`between`): to the nanosecond from the live threads
    (proc_cpu_precise_s), and every thread ever in 10 ms ticks as a cross-check
    (`between(..., ticks=True)`, proc_cpu_s)."""

    def __init__(self, pid: int, step: float = 0.05) -> None:
        self._pid = pid
        self._step = step
        self._stop = threading.Event()
        self.samples: list[tuple[float, float, float]] = []  # (time.time(), precise, ticks)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sample = (time.time(), proc_cpu_precise_s(self._pid), proc_cpu_s(self._pid))
            except (OSError, ValueError, IndexError):
                return
            self.samples.append(sample)
            self._stop.wait(self._step)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def at(self, wall: float, *, ticks: bool = False) -> float:
        """CPU seconds at `wall`, interpolated between the samples around it."""
        samples = self.samples
        index = bisect.bisect_left(samples, (wall,))
        if index <= 0 or index >= len(samples):
            raise ValueError(f"no CPU samples around {wall:.3f}")
        column = 2 if ticks else 1
        before, after = samples[index - 1], samples[index]
        share = (wall - before[0]) / (after[0] - before[0])
        return before[column] + (after[column] - before[column]) * share

    def between(self, start: float, end: float, *, ticks: bool = False) -> float:
        return self.at(end, ticks=ticks) - self.at(start, ticks=ticks)


def exporter_cmd(*args: str) -> list[str]:
    return [PY, "-m", "exporter", *args]


def naive_cmd(*args: str) -> list[str]:
    return [PY, "-m", "tests.bench.naive_baseline", *args]


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


def start_tool(
    tool: str, world: World, interval: float, env: Mapping[str, str] | None = None
) -> tuple[Proc, str]:
    """The tool's daemon polling every `interval` s, and the marker of its poll lines.

    orchestra-otel gets `env` on top of the world's (which caps the idle back-off at 2 s,
    a test default: scenarios that depend on the schedule set it themselves).
    """
    if tool == OTEL:
        extra = {"ORCHESTRA_POLL_INTERVAL": f"{interval:g}", **(env or {})}
        return Proc(exporter_cmd("run"), world.env("grpc", **extra)), "poll:"
    return Proc(naive_cmd("run", "--interval", f"{interval:g}"), world.env("grpc")), "naive poll"


def parallel(function: Callable[[str], Any], tools: Sequence[str] = TOOLS) -> dict[str, Any]:
    """function(tool) for every tool at the same time (threads); results by tool."""
    with ThreadPoolExecutor(len(tools)) as pool:
        futures = {tool: pool.submit(function, tool) for tool in tools}
        return {tool: future.result() for tool, future in futures.items()}


def run_all(jobs: Mapping[Any, tuple[Callable[[str], Any], str]]) -> dict[Any, Any]:
    """Every job (function, tool) at the same time; results by job key."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {key: pool.submit(function, tool) for key, (function, tool) in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


# --------------------------------------------------------------------------- the API's log

_WORKFLOW_IN_PATH = re.compile(r"/workflows/([^/?]+)/runs")


def request_log(world: World) -> list[dict[str, Any]]:
    """Every request the world's emulator answered: kind, path, wall time (`wall`).

    Complete only when the world was opened with a `recent_limit` above the count."""
    stats = world.emulator.stats()
    recent: list[dict[str, Any]] = stats["recent"]
    if len(recent) < sum(stats["by_kind"].values()):
        raise RuntimeError("the emulator's request log overflowed: raise recent_limit")
    return recent


def workflow_of(request: Mapping[str, Any]) -> str | None:
    """The workflow id a runs or steps request names, if any."""
    match = _WORKFLOW_IN_PATH.search(str(request["path"]))
    return match[1] if match else None


def count_by_kind(requests: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    return dict(Counter(str(request["kind"]) for request in requests))


def list_times(requests: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """workflow id -> wall times of its history listings, in order."""
    found: dict[str, list[float]] = {}
    for request in requests:
        workflow_id = workflow_of(request)
        if request["kind"] == "list_runs" and workflow_id is not None:
            found.setdefault(workflow_id, []).append(float(request["wall"]))
    return found


# --------------------------------------------------------------------------- numbers


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def timed(
    function: Callable[[], Any], repeats: int, *, min_total_s: float = 1.5, max_repeats: int = 25
) -> tuple[float, float, int]:
    """Best (wall, cpu) seconds of at least `repeats` calls, repeated until they took
    `min_total_s` in all (short measurements are the most disturbed by other load).
    Returns (wall, cpu, calls)."""
    best_wall, best_cpu = float("inf"), float("inf")
    calls, spent = 0, 0.0
    while calls < repeats or (spent < min_total_s and calls < max_repeats):
        # As timeit does: no cyclic GC while timing. Its passes cost in proportion to
        # everything else alive in this process (the worlds of earlier scenarios), not
        # to the code measured, and made json.loads alone vary 2x between runs.
        gc.collect()
        gc.disable()
        try:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            function()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        finally:
            gc.enable()
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
        calls, spent = calls + 1, spent + wall
    return best_wall, best_cpu, calls


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def gaps(times: Sequence[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def summary(values: Sequence[float], digits: int = 3) -> dict[str, float | int | None]:
    """count, p50, p90, p99, max (nearest rank) of `values`, rounded."""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, digits)

    return {
        "count": len(values),
        "p50": rounded(percentile(values, 50)),
        "p90": rounded(percentile(values, 90)),
        "p99": rounded(percentile(values, 99)),
        "max": rounded(max(values)) if values else None,
    }
