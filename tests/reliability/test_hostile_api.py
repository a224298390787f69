"""The real daemon against a hostile Orchestra API (issue 11): it stays bounded and honest.

Each test switches on one misbehaviour of the emulator (`exporter/emulator/faults.py`):
pages that repeat, huge, flooded and trickled bodies, deep nesting, ids with path syntax,
absurd Retry-After values, control characters in every text field. The daemon runs as
`python -m exporter run` (or `once`) in a subprocess and is watched from outside: the
emulator's request log (bounded requests), its peak RSS from /proc (bounded memory), the
clock (bounded time), its output (clean), and the OTLP receiver (every valid run is still
exported).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import unicodedata
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from exporter.emulator import FaultRule
from exporter.mapping.ids import format_trace_id, trace_id_for_run
from tests.support.api_log import MAX_ATTEMPTS, arrivals, control, describe
from tests.support.daemon import Daemon, orchestra_otel, wait_for
from tests.support.world import World, demo_world, user_env

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
# Peak RSS allowed while the daemon is fed a hostile answer: the default 32 MiB answer cap
# read, decoded and refused, on top of an idle daemon of ~65-70 MiB; three quarters of the
# 256 Mi Kubernetes limit of deploy/kubernetes. Without the caps the daemon peaked at
# 637 MiB for the huge body and 3.5 GiB for the flood.
PEAK_RSS_LIMIT_KB = 192 * 1024


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with demo_world(tmp_path, history=2, seed=11) as made:
        yield made


# --------------------------------------------------------------------------- helpers


def add_finished_run(world: World, run_id: str | None = None, workflow: int = 0) -> str:
    """A run of one of the demo workflows that ended a minute ago, under `run_id` if given."""
    workflow_id = world.scenario.workflow_ids()[workflow]
    return world.scenario.add_run(workflow_id, start_at=world.clock() - 180, run_id=run_id)


def steps_path(run_id: str) -> str:
    """How a correct client writes the run's steps path: the id is one quoted segment."""
    segment = quote(run_id, safe="")
    if not segment.strip("."):  # "." and ".." would be resolved away unless escaped
        segment = segment.replace(".", "%2E")
    return f"/runs/{segment}/steps"


def trace_of(run_id: str) -> str:
    return format_trace_id(trace_id_for_run(run_id))


def expected_traces(world: World, *, without: AbstractSet[str] = frozenset()) -> dict[str, int]:
    """trace id -> spans expected (root + steps) for every finished run but `without`."""
    return {
        trace_of(run_id): 1 + len(steps)
        for run_id, steps in world.finished_runs().items()
        if run_id not in without
    }


def assert_exported(world: World, expected: dict[str, int], timeout: float = 30) -> None:
    """Every expected trace arrived whole, exactly once; nothing else did."""

    def complete() -> bool:
        got = {trace: len(spans) for trace, spans in world.receiver.traces().items()}
        return all(got.get(trace, 0) >= count for trace, count in expected.items())

    def missing() -> str:
        got = {trace: len(spans) for trace, spans in world.receiver.traces().items()}
        return f"traces missing or incomplete: expected {expected}, got {got}"

    wait_for(complete, timeout, missing)
    got = {trace: len(spans) for trace, spans in world.receiver.traces().items()}
    assert got == expected, f"exported {got}, expected {expected}"
    assert world.receiver.duplicate_count() == 0


def tries_of(world: World, run_id: str) -> int:
    return len(arrivals(world.emulator, kind="steps", contains=steps_path(run_id)))


def start(world: World, **env: str) -> Daemon:
    """`run` as every daemon here runs: polls every 0.5 s, OTLP timeout 2 s."""
    return world.daemon(**{"OTEL_EXPORTER_OTLP_TIMEOUT": "2", **env})


def timed_once(world: World, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = world.cli("once", timeout=120, **env)
    return result, time.monotonic() - started


# --------------------------------------------------------------------------- 1. paging


def test_history_pages_that_repeat_are_not_followed_forever(world: World) -> None:
    """An API that ignores `offset` serves the same full page again and again. The
    history paginator (exporter/source/history.py) stops at the page that brings no new
    run id; before it, `once` paged on (offset=100, 200, ...) until it was killed."""
    workflow_id = world.scenario.workflow_ids()[0]
    # More unseen finished runs than one page holds, all within the default lookback.
    world.scenario.add_history(workflow_id, 150, every=15.0, duration=(1.0, 5.0))
    world.emulator.faults.add(FaultRule(action="ignore_offset", kind="list_runs", times=None))
    history = f"/workflows/{workflow_id}/runs?"
    once = Daemon(orchestra_otel("once"), world.env("grpc"))
    with contextlib.suppress(subprocess.TimeoutExpired):  # killed: asserted below
        once.wait(timeout=60)
    stderr = once.stderr
    pages = arrivals(world.emulator, contains=history)
    assert once.returncode is not None and once.returncode >= 0, (
        f"`once` never ended: {len(pages)} history requests, the last at "
        f"{pages[-1].path if pages else '-'}"
    )
    # One page, and one more that brings nothing new: then the paginator stops.
    assert len(pages) <= 2, f"{len(pages)} history requests:\n{describe(pages[:10])}"
    first_page = world.scenario.runs(workflow_id, limit=100) or []
    finished = world.finished_runs()
    visible = {str(run["id"]) for run in first_page} & set(finished)
    for other in world.scenario.workflow_ids()[1:]:
        visible |= {str(r["id"]) for r in world.scenario.runs(other) or []} & set(finished)
    exported = set(world.receiver.traces())
    assert {trace_of(run_id) for run_id in visible} <= exported, stderr[-2000:]


# --------------------------------------------------------------------------- 2. big bodies


@pytest.mark.parametrize(
    ("fault", "figure"),
    [
        pytest.param({"action": "huge", "size": 200 * MiB}, "200 MiB of padding", id="huge"),
        pytest.param({"action": "flood", "records": 1_500_000}, "1.5 M records", id="flood"),
    ],
)
def test_an_oversized_answer_is_refused_with_bounded_memory_then_given_up(
    world: World, fault: dict[str, object], figure: str
) -> None:
    """One run's steps answer is enormous on every try. The daemon reads at most the cap,
    says which endpoint was too large, counts it, exports every other run, stays far
    below the pod's memory limit, and gives the run up after MAX_UNREADABLE_TRIES polls
    (exporter/collect.py) instead of fetching it forever."""
    hostile = add_finished_run(world)
    rule = {"kind": "steps", "times": None, "path_contains": steps_path(hostile), **fault}
    world.emulator.faults.add(FaultRule.from_json(rule))
    with start(world) as daemon:
        assert_exported(world, expected_traces(world, without={hostile}))
        wait_for(
            lambda: "skipped after 3 tries" in daemon.stderr,
            60,
            lambda: f"the run was never given up:\n{daemon.stderr[-3000:]}",
        )
        polls = daemon.metric("orchestra_otel_polls_total")
        wait_for(
            lambda: daemon.metric("orchestra_otel_polls_total") >= polls + 3,
            30,
            "the daemon stopped polling",
        )
        peak = daemon.peak_rss_kb()
        assert peak < PEAK_RSS_LIMIT_KB, f"{figure}: peak RSS {peak / 1024:.0f} MiB"
        log = daemon.stderr
        assert re.search(r"steps: .*too large.*ORCHESTRA_API_MAX_RE(SPONSE_BYTES|CORDS)", log), log
        # Three tries, one per poll (never retried within one), then never asked again.
        assert tries_of(world, hostile) == 3
        refused = daemon.metric(
            "orchestra_otel_api_requests_total", endpoint="steps", outcome="too_large"
        )
        assert refused == 3, f"refusals counted: {refused}"
        assert daemon.metric("orchestra_otel_skipped_records_total", kind="run") == 1
        assert daemon.alive
    assert "Traceback" not in daemon.stdout + daemon.stderr


# --------------------------------------------------------------------------- 8. trickle


def test_a_trickled_answer_is_cut_at_the_deadline_of_each_attempt(world: World) -> None:
    """The answer arrives a few bytes every 1.5 s, so no single read ever times out.
    Each attempt must end at ORCHESTRA_API_TIMEOUT (2 s), whatever the reads do; `once`
    gives up on that run after its retries and exports the rest."""
    hostile = add_finished_run(world)
    body = json.dumps(world.scenario.steps(world.scenario.workflow_ids()[0], hostile)).encode()
    chunk = max(1, len(body) // 40)  # about 60 s for the whole body
    world.emulator.faults.add(
        FaultRule(
            action="trickle",
            kind="steps",
            times=None,
            chunk=chunk,
            delay=1.5,
            path_contains=steps_path(hostile),
        )
    )
    result, elapsed = timed_once(world, ORCHESTRA_API_TIMEOUT="2")
    tries = arrivals(world.emulator, kind="steps", contains=steps_path(hostile))
    assert result.returncode == 1, f"exit {result.returncode} after {elapsed:.1f}s"
    assert "steps: the API did not answer in time" in result.stderr, result.stderr
    assert len(tries) == MAX_ATTEMPTS, describe(tries)
    # 4 attempts of 2 s and 3 backoffs of at most 0.5 + 1 + 2 s: ~11.5 s, not ~60 s.
    assert elapsed < 30, f"`once` took {elapsed:.1f}s"
    assert_exported(world, expected_traces(world, without={hostile}))


# --------------------------------------------------------------------------- 9. nesting


def test_a_deeply_nested_answer_is_an_api_response_error(world: World) -> None:
    hostile = add_finished_run(world)
    world.emulator.faults.add(
        FaultRule(
            action="deep",
            kind="steps",
            times=None,
            depth=100_000,
            path_contains=steps_path(hostile),
        )
    )
    result, _ = timed_once(world)
    assert result.returncode == 1, result.stderr
    assert "steps: the API's answer is nested too deeply" in result.stderr, result.stderr
    assert "recursion" not in result.stderr.lower(), result.stderr
    # Not retried: the same answer would come again.
    assert tries_of(world, hostile) == 1
    assert_exported(world, expected_traces(world, without={hostile}))


def test_a_record_nested_deeper_than_the_limit_is_skipped_and_the_run_exported(
    world: World,
) -> None:
    """600 levels: decodable, but deeper than the 256 the client lets through (code
    after it recurses into values). That step record alone is skipped and reported;
    the run is exported with its other steps."""
    hostile = add_finished_run(world)
    world.emulator.faults.add(
        FaultRule(
            action="deep", kind="steps", times=None, depth=600, path_contains=steps_path(hostile)
        )
    )
    result, _ = timed_once(world)
    assert result.returncode == 0, result.stderr
    assert "steps record #0: skipped: nested deeper than 256 levels" in result.stderr
    expected = expected_traces(world)
    expected[trace_of(hostile)] -= 1
    assert_exported(world, expected)


# --------------------------------------------------------------------------- 7. ids

PATH_SYNTAX_IDS = (
    "../../x",
    "r1?admin=true",
    "r2#frag",
    "..",
    ".",
    "r3/steps",
    "r4%2F..%2Fx",
    "r5 \x1b[2K\r\nspace",
)


def test_run_ids_with_path_syntax_stay_one_path_segment(world: World) -> None:
    """Ids the API sent are opaque: whatever they hold, each request goes to the route it
    was meant for (the emulator routes the quoted id back to the same run), so the bearer
    token never travels to another path, and every such run is exported."""
    for run_id in PATH_SYNTAX_IDS:
        add_finished_run(world, run_id=run_id)
    result, _ = timed_once(world)
    log = arrivals(world.emulator)
    strays = [a for a in log if a.kind == "unknown"]
    assert not strays, f"requests to paths the client never meant:\n{describe(strays)}"
    asked = {
        unquote(a.path.split("?", 1)[0].rsplit("/runs/", 1)[1].removesuffix("/steps"))
        for a in log
        if a.kind == "steps"
    }
    assert set(PATH_SYNTAX_IDS) <= asked, f"asked for {sorted(asked)}\n{describe(log)}"
    assert result.returncode == 0, result.stderr
    assert_exported(world, expected_traces(world))


# --------------------------------------------------------------------------- 10. Retry-After


@pytest.mark.parametrize("retry_after_format", ["seconds", "date"])
def test_an_absurd_retry_after_is_capped(world: World, retry_after_format: str) -> None:
    """`Retry-After: 999999999` (31 years) once: the daemon pauses for the cap
    (ORCHESTRA_API_MAX_RETRY_AFTER, 3 s here, 300 s by default), not until restart.

    NOTE: /readyz reasons and a metric for the pause are the lead's wiring (client
    `pause_remaining()` and `stats.retry_after_capped`); not asserted here yet.
    """
    world.emulator.faults.add(
        FaultRule(
            action="rate_limit",
            kind="list_workflows",
            retry_after=999_999_999,
            retry_after_format=retry_after_format,  # type: ignore[arg-type]
        )
    )
    cap = 3.0
    with start(world, ORCHESTRA_API_MAX_RETRY_AFTER=str(cap)) as daemon:
        assert_exported(world, expected_traces(world), timeout=45)
        log = arrivals(world.emulator)
        limited = next(a for a in log if a.status == 429)
        after = [a for a in log if a.at > limited.at]
        assert after[0].at - limited.at >= cap, f"the cap was not honoured:\n{describe(log)}"
        assert after[0].at - limited.at < cap + 15, describe(log)
        assert re.search(r"Retry-After.*capped at 3s", daemon.stderr), daemon.stderr
        assert daemon.alive


# --------------------------------------------------------------------------- clean output

# Any character of Unicode category Cc (C0, DEL, C1) or Cf (bidi, zero-width) but the
# newline that ends a line and the tab.
_FORBIDDEN = re.compile(
    "["
    + "".join(
        re.escape(chr(code))
        for code in range(0x110000)
        if unicodedata.category(chr(code)) in ("Cc", "Cf") and chr(code) not in "\n\t"
    )
    + "]"
)


def raw_controls(text: str) -> list[str]:
    return [line for line in text.splitlines() if _FORBIDDEN.search(line)]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_control_characters_in_every_text_field_never_reach_the_output(
    world: World, log_format: str
) -> None:
    """Every free-text field of every answer, a run id and a 404's detail carry terminal
    escapes, CR/LF, NUL, C1 and bidi controls. Every run is exported, and no log line
    holds a raw control character.

    NOTE: escaping control characters in the logs is another helper's part of issue 11
    (finding 4); until it lands, this test fails here on the log lines.
    """
    hostile = add_finished_run(world, run_id="r\x1b[2K\rforged\nline\x85\u202e")
    detail = json.dumps({"detail": "bad \x1b[2K\rforged\nline \x00\x85\u202e"})
    world.emulator.faults.add(
        FaultRule(action="status", status=400, kind="steps", times=1, body=detail)
    )
    world.emulator.faults.add(FaultRule(action="control_chars", times=None))
    with start(world, ORCHESTRA_LOG_LEVEL="debug", ORCHESTRA_LOG_FORMAT=log_format) as daemon:
        assert_exported(world, expected_traces(world))
        assert trace_of(hostile) in world.receiver.traces()
    # At debug level a poll error comes with its traceback, on purpose: lines are lines.
    dirty = raw_controls(daemon.stdout) + raw_controls(daemon.stderr)
    assert not dirty, f"{len(dirty)} log lines with raw control characters, e.g. {dirty[:3]!r}"


def test_demo_trees_stay_clean_with_control_characters_in_every_text_field(
    tmp_path: Path,
) -> None:
    """The demo prints each trace as a tree; its emulator is steered over HTTP as a user
    rehearsing failures would. With no lookback, only runs that end after the switch is
    on are printed. NOTE: like the test above, this waits for the log and tree escaping
    of finding 4."""
    env = user_env(ORCHESTRA_HTTP_ADDR="off", ORCHESTRA_LOOKBACK="0")
    with Daemon(orchestra_otel("demo", "--duration", "25"), env, cwd=tmp_path) as demo:
        # Its first line says where its emulator listens; "" is in every line.
        _, first = demo.wait_lines("", 1, timeout=60, stream="out")[0]
        match = re.search(r"emulated Orchestra API at (http://[^/\s]+)", first)
        assert match, first
        control(match.group(1), "POST", "faults", {"action": "control_chars", "times": None})
        code = demo.wait(timeout=90)
    assert code == 0, demo.stderr[-2000:]
    assert re.search(r"^trace [0-9a-f]{32}$", demo.stdout, re.MULTILINE), "no tree printed"
    dirty = raw_controls(demo.stdout) + raw_controls(demo.stderr)
    assert not dirty, f"{len(dirty)} lines with raw control characters, e.g. {dirty[:3]!r}"
