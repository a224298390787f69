"""A very large run (10,000 steps) through the real CLI into a real OTLP/gRPC receiver.

What is measured (README "Configuration", poller.py):
* every one of the 10,001 spans (10,000 steps + the root) arrives, exactly once;
* they come in several export requests, each with at most ORCHESTRA_EXPORT_BATCH_SIZE
  spans (512 by default; 100 when set) and each well under the 4 MiB that gRPC
  receivers (the OpenTelemetry Collector, Tempo, Jaeger) accept by default;
* when spans are big (large captured content), the byte bound splits batches before the
  count bound does, and requests still stay under 4 MiB.

The run is served by the emulator's static API: a four-node loop workflow (code ->
model -> model -> Slack), realistic step records with prompts and replies of ~1-2 KB
(captured with ORCHESTRA_CAPTURE_CONTENT=true), a few hard failures and a few
integrations answering `successful: false`.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from exporter.emulator import Scenario
from exporter.mapping.graph import graph_from_api
from exporter.mapping.options import MappingOptions
from exporter.mapping.spans import WorkflowInfo, map_run
from exporter.source.models import Run, Step, parse_records
from tests.support.clock import ManualClock
from tests.support.otlp_receiver import OtlpReceiver, ReceivedRequest
from tests.support.world import World, open_world

pytestmark = pytest.mark.integration

GRPC_DEFAULT_MAX_BYTES = 4 * 1024 * 1024  # gRPC's default max receive message size
DEFAULT_BATCH = 512  # ORCHESTRA_EXPORT_BATCH_SIZE default (README)
STEPS = 10_000
NODES = ("fetch_item", "summarize", "classify", "notify")
_WORDS = (
    "invoice", "customer", "order", "shipment", "delayed", "refund", "warehouse", "priority",
    "ticket", "escalate", "summary", "weather", "forecast", "storm", "cloud", "report",
    "nightly", "digest", "account", "balance", "review", "approved", "rejected", "pending",
    "analysis", "model", "response", "token", "latency", "budget", "quarter",
)  # fmt: skip


# --------------------------------------------------------------------------- the run


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _workflow_record(workflow_id: str, name: str, *, links: bool = True) -> dict[str, Any]:
    nodes = {
        "fetch_item": {"type": "code", "metadata": {"description": "Fetch the next item"}},
        "summarize": {"type": "model", "metadata": {"model": "virtuoso-large"}},
        "classify": {"type": "model", "metadata": {"model": "virtuoso-medium"}},
        "notify": {"type": "integration", "metadata": {"app_name": "slack"}},
    }
    if links:
        edges = [
            ["START", "fetch_item"],
            ["fetch_item", "summarize"],
            ["summarize", "classify"],
            ["classify", "notify"],
            ["notify", "fetch_item"],
            ["notify", "END"],
        ]
    else:  # every node straight from START: no links between steps
        edges = [edge for node in nodes for edge in (["START", node], [node, "END"])]
    return {
        "workflow_id": workflow_id,
        "name": name,
        "status": "active",
        "description": "Summarise, classify and announce every item of a nightly batch.",
        "graph": {"nodes": nodes, "edges": edges, "selectedOutput": "notify"},
        "created_at": "2025-03-12 00:59:55.465508+00:00",
    }


class _Text:
    """Cheap realistic text: slices of one long random-word corpus (or a given alphabet)."""

    def __init__(self, rng: random.Random, corpus: str | None = None) -> None:
        self._rng = rng
        self._corpus = corpus or " ".join(rng.choice(_WORDS) for _ in range(60_000))

    def __call__(self, length: int) -> str:
        start = self._rng.randrange(len(self._corpus) - length)
        return self._corpus[start : start + length]


def _step_record(
    run_id: str,
    index: int,
    start: datetime,
    text: _Text,
    content: tuple[int, int],
    rng: random.Random,
) -> dict[str, Any]:
    node = NODES[index % len(NODES)]
    begin = start + timedelta(microseconds=120_000 + index * 90_000 + rng.randrange(500))
    end = begin + timedelta(microseconds=rng.randrange(20_000, 85_000))
    previous = NODES[(index - 1) % len(NODES)]
    status, error = "completed", None
    inputs: dict[str, Any] = {"run_id": run_id, "input_data": {previous: text(60)}}
    outputs: Any
    if node == "fetch_item":
        inputs["code"] = "item = queue.pop()\nprint(item)"
        outputs = {
            "successful": True,
            "data": {
                "sandbox_id": f"sbx-{index}",
                "stdout": text(rng.randint(*content) // 2),
                "error": None,
            },
        }
    elif node in ("summarize", "classify"):
        prompt, reply = text(rng.randint(*content)), text(rng.randint(*content) // 2)
        inputs.update(
            model="virtuoso-large" if node == "summarize" else "virtuoso-medium",
            stream=False,
            max_tokens=8192,
            temperature=0.7,
            top_p=1,
            top_k=50,
            messages=[{"role": "user", "content": prompt}],
        )
        outputs = {
            "id": f"chatcmpl-{index:08x}",
            "object": "chat.completion",
            "model": inputs["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply, "tool_calls": []},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(reply) // 4},
        }
        if index % 997 == 1:  # a hard failure now and then: the model's rate limit
            status, error, outputs = "failed", "RateLimitError: upstream returned 429", None
    else:
        ok = index % 50 != 3
        inputs.update(
            app_name="slack",
            action="SLACK_SENDS_A_MESSAGE_TO_A_SLACK_CHANNEL",
            input_mapping={"channel": "#nightly", "text": text(rng.randint(*content) // 2)},
        )
        outputs = {
            "result": {
                "successful": ok,
                "successfull": ok,
                "error": None if ok else "channel_not_found",
                "data": {"ok": ok, "channel": "C0257V9FS09", "ts": f"{index}.000100"},
            }
        }
    return {
        "id": f"{uuid.UUID(int=rng.getrandbits(128), version=4)}",
        "user_id": "2*****************1",
        "organization_id": "2*****************7",
        "node_id": node,
        "status": status,
        "start_time": _iso(begin),
        "end_time": _iso(end),
        "elapsed_time": int((end - begin).total_seconds()),
        "error": error,
        "outputs": outputs,
        "inputs": inputs,
        "step_metadata": None,
        "tokens": 0,
    }


@dataclasses.dataclass(frozen=True)
class BigRun:
    workflow_id: str
    run_id: str
    step_ids: frozenset[str]

    @property
    def trace_id(self) -> str:
        return self.run_id.replace("-", "")

    @property
    def span_count(self) -> int:
        return len(self.step_ids) + 1


def add_big_run(
    scenario: Scenario,
    name: str,
    steps: int,
    *,
    content: tuple[int, int],
    seed: int,
    corpus: str | None = None,
    links: bool = True,
) -> BigRun:
    """A finished run of `steps` steps, ended a minute ago (inside the lookback)."""
    rng = random.Random(seed)
    workflow_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    run_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    scenario.add_static_workflow(_workflow_record(workflow_id, name, links=links))
    end = datetime.now(timezone.utc) - timedelta(seconds=60)
    start = end - timedelta(microseconds=120_000 + steps * 90_000 + 50_000)
    text = _Text(rng, corpus)
    records = [_step_record(run_id, i, start, text, content, rng) for i in range(steps)]
    run = {
        "id": run_id,
        "status": "failed" if any(r["status"] == "failed" for r in records) else "completed",
        "start_time": _iso(start),
        "end_time": _iso(end),
        "elapsed_time": int((end - start).total_seconds()),
        "error": None,
        "outputs": text(300),
        "all_outputs": {},
        "inputs": {"batch": "nightly", "items": steps // len(NODES)},
    }
    scenario.add_static_run(workflow_id, run, records)
    return BigRun(workflow_id, run_id, frozenset(r["id"] for r in records))


# --------------------------------------------------------------------------- fixtures


@dataclasses.dataclass(frozen=True)
class Setup:
    world: World
    big: BigRun
    heavy: BigRun


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    clock = ManualClock(time.time())  # static runs do not move with it
    scenario = Scenario(clock=clock, seed=5)
    # Linked steps: mapping stays linear in the number of steps (see the test at the end).
    big = add_big_run(scenario, "nightly-digest", STEPS, content=(1000, 2000), seed=1, links=True)
    # Big spans: ~12 KB prompts and ~6 KB replies kept whole (limit 16384 characters).
    heavy = add_big_run(scenario, "long-documents", 1200, content=(10_000, 12_000), seed=2)
    with open_world(scenario, tmp_path_factory.mktemp("large"), clock=clock) as world:
        yield Setup(world, big, heavy)


def _once(world: World, tmp_path: Path, run: BigRun, **env: str) -> World:
    world.receiver.clear()
    fresh = dataclasses.replace(world, state_path=tmp_path / "ledger.db")
    settings = {
        "ORCHESTRA_WORKFLOWS": run.workflow_id,
        "ORCHESTRA_CAPTURE_CONTENT": "true",
        "ORCHESTRA_API_TIMEOUT": "120",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "60",
        **env,
    }
    started = time.monotonic()
    result = fresh.cli("once", timeout=600, **settings)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"\n`once` exported {run.span_count} spans in {elapsed:.1f}s")
    return fresh


def _request_figures(requests: list[ReceivedRequest]) -> list[tuple[int, int]]:
    """(spans, serialized bytes) of every accepted request."""
    figures = []
    for received in requests:
        spans = sum(
            len(scope.spans)
            for resource in received.request.resource_spans
            for scope in resource.scope_spans
        )
        figures.append((spans, len(received.request.SerializeToString())))
    return figures


def _check_delivery(world: World, run: BigRun) -> None:
    spans = world.receiver.wait_for_spans(run.span_count, timeout=60)
    time.sleep(0.5)  # anything extra would arrive now
    spans = world.receiver.spans()
    assert world.receiver.duplicate_count() == 0, "a span arrived twice"
    assert len(spans) == run.span_count
    assert {s.trace_id for s in spans} == {run.trace_id}
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1
    step_ids = Counter(s.attributes.get("orchestra.step.id") for s in spans if s.parent_span_id)
    assert set(step_ids) == run.step_ids and max(step_ids.values()) == 1
    assert {s.parent_span_id for s in spans if s.parent_span_id} == {roots[0].span_id}


def _print_figures(label: str, figures: list[tuple[int, int]]) -> None:
    sizes = sorted(size for _, size in figures)
    counts = [count for count, _ in figures]
    print(
        f"{label}: {len(figures)} requests, spans/request max {max(counts)} min {min(counts)}, "
        f"bytes/request max {sizes[-1] / 2**20:.2f} MiB median {sizes[len(sizes) // 2] / 2**20:.2f}"
        f" MiB, total {sum(sizes) / 2**20:.1f} MiB"
    )


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("batch_size", [None, 100], ids=["default-batch", "batch-100"])
def test_ten_thousand_steps_arrive_once_in_bounded_requests(
    setup: Setup, tmp_path: Path, batch_size: int | None
) -> None:
    run = setup.big
    env = {} if batch_size is None else {"ORCHESTRA_EXPORT_BATCH_SIZE": str(batch_size)}
    world = _once(setup.world, tmp_path, run, **env)
    _check_delivery(world, run)
    limit = batch_size or DEFAULT_BATCH
    figures = _request_figures(world.receiver.requests("grpc"))
    _print_figures(f"batch size {limit}", figures)
    assert sum(count for count, _ in figures) == run.span_count
    assert len(figures) >= math.ceil(run.span_count / limit), "more spans than the batch size"
    for count, size in figures:
        assert count <= limit, f"a request carried {count} spans (limit {limit})"
        assert size < GRPC_DEFAULT_MAX_BYTES, f"a request of {size} bytes (limit 4 MiB)"
    # Content was captured (and cut at the default 2048 characters).
    model = next(
        s for s in world.receiver.spans() if s.attributes.get("orchestra.node.id") == "summarize"
    )
    messages = model.attributes["gen_ai.input.messages"]
    assert 1000 <= len(messages) <= 2048


def test_big_spans_are_split_by_bytes_below_4_mib(setup: Setup, tmp_path: Path) -> None:
    run = setup.heavy
    world = _once(setup.world, tmp_path, run, ORCHESTRA_CONTENT_MAX_LENGTH="16384")
    _check_delivery(world, run)
    figures = _request_figures(world.receiver.requests("grpc"))
    _print_figures("~20 KB spans", figures)
    for count, size in figures:
        assert count <= DEFAULT_BATCH
        assert size < GRPC_DEFAULT_MAX_BYTES, f"a request of {size} bytes (limit 4 MiB)"
    # The byte bound, not the count bound, cut these batches.
    assert max(count for count, _ in figures) < DEFAULT_BATCH
    assert len(figures) > math.ceil(run.span_count / DEFAULT_BATCH)


def test_non_ascii_content_stays_under_4_mib_per_request(tmp_path: Path) -> None:
    rng = random.Random(9)
    alphabet = "日本語の要約と分類を行いました。顧客注文出荷遅延返金倉庫🙂📦"
    corpus = "".join(rng.choice(alphabet) for _ in range(60_000))
    scenario = Scenario(clock=ManualClock(time.time()))
    # Prompts, replies, messages and stdout all past the default 2048 characters.
    run = add_big_run(scenario, "multilingual", 1200, content=(4200, 5000), seed=3, corpus=corpus)
    strict = OtlpReceiver(max_message_bytes=GRPC_DEFAULT_MAX_BYTES)
    with open_world(scenario, tmp_path, receiver=strict) as world:
        # A refused request is retried until the OTLP timeout.
        world = _once(
            world,
            tmp_path,
            run,
            OTEL_EXPORTER_OTLP_TIMEOUT="10",
            # The emulator escapes non-ASCII text (\uXXXX): this steps answer is 35 MiB,
            # past the default 32 MiB cap (17 MiB as the UTF-8 a FastAPI server sends).
            ORCHESTRA_API_MAX_RESPONSE_BYTES=str(64 * 1024 * 1024),
        )
        figures = _request_figures(strict.requests("grpc"))
        _print_figures("non-ASCII content", figures)
        _check_delivery(world, run)
        assert all(size < GRPC_DEFAULT_MAX_BYTES for _, size in figures)


# --------------------------------------------------------------------------- mapping cost


def _mapping_work(steps: int) -> int:
    """Python trace events (calls, lines, returns) of mapping a finished run of eight
    nodes, each step naming all eight: a count of the work done, the same on every
    machine and under any load, unlike a timing."""
    start = datetime(2025, 3, 13, 2, 0, tzinfo=timezone.utc)
    nodes = [f"node_{n}" for n in range(8)]
    records = [
        {
            "id": f"step-{i}",
            "node_id": nodes[i % len(nodes)],
            "status": "completed",
            "start_time": _iso(start + timedelta(milliseconds=10 * i)),
            "end_time": _iso(start + timedelta(milliseconds=10 * i + 5)),
            "inputs": {"input_data": {node: "x" for node in nodes}},
            "outputs": {"successful": True, "data": {"sandbox_id": "s", "stdout": "ok"}},
        }
        for i in range(steps)
    ]
    parsed, _ = parse_records(records, Step)
    runs, _ = parse_records([{"id": "r", "status": "completed", "end_time": _iso(start)}], Run)
    events = 0

    def count(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal events
        events += 1
        return count

    sys.settrace(count)
    try:
        result = map_run(WorkflowInfo("wf"), runs[0], parsed, MappingOptions())
    finally:
        sys.settrace(None)
    assert len(result.steps) == steps
    return events


def test_mapping_work_grows_linearly_with_the_steps() -> None:
    small, large = _mapping_work(400), _mapping_work(2000)
    ratio = large / small
    print(f"\nmap_run: 400 steps {small:,} trace events, 2000 steps {large:,}, ratio {ratio:.2f}")
    # Five times the steps: 5x the work when linear. Finding each step's upstream steps
    # by scanning instead of bisecting measured 15.7x; quadratic work tends to 25x.
    assert ratio < 6, f"5x the steps took {ratio:.1f}x the work"


def test_the_graph_of_the_big_workflow_is_read() -> None:
    """Guards the fixture: links come from the graph (GET /workflows), not only inputs."""
    graph = graph_from_api(_workflow_record("wf", "w")["graph"])
    assert graph.upstream["summarize"] == ("fetch_item",)
    assert graph.node_types["notify"] == "integration"
