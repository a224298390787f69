"""The real daemon against an Orchestra API that misbehaves (docs/design.md, "Delivery").

Faults are injected into the emulator for a limited number of requests (or until
cleared) on the workflow list, one workflow's run history and one run's steps. The
emulator's request log, with monotonic arrival times, is the witness: which requests
were retried and how often, how far apart, and that nothing left before a Retry-After
had passed. The OTLP receiver shows that every expected span still arrived.
"""

from __future__ import annotations

import math
import os
import secrets
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from exporter.emulator import FaultRule
from tests.support.api_log import (
    MAX_ATTEMPTS,
    Arrival,
    arrivals,
    backoff_window,
    control,
    describe,
    gaps,
)
from tests.support.daemon import wait_for
from tests.support.world import API_KEY, World, demo_world

pytestmark = pytest.mark.integration

# ORCHESTRA_API_TIMEOUT for the runs that inject delays: long enough that a healthy answer
# from an emulator on a machine busy with other tests never times out too.
API_TIMEOUT = 2.0
SLACK = 0.75  # scheduling noise allowed on top of a backoff's longest wait (2 busy cores)
PARALLEL_SLACK = 2.0  # the same while several cases run side by side
PARALLEL_CASES = 6


def run_ids(world: World, workflow_id: str) -> list[str]:
    return [str(run["id"]) for run in world.scenario.runs(workflow_id) or []]


def trace_ids(world: World, run_ids_: list[str] | None = None) -> set[str]:
    chosen = list(world.finished_runs()) if run_ids_ is None else run_ids_
    return {run_id.replace("-", "") for run_id in chosen}


def spans_of_runs(world: World, runs: list[str]) -> int:
    finished = world.finished_runs()
    return sum(1 + len(finished[run_id]) for run_id in runs)


def assert_everything_exported(world: World) -> None:
    world.receiver.wait_for_spans(world.expected_span_count(), timeout=15)
    assert set(world.receiver.traces()) == trace_ids(world)
    assert world.receiver.span_count() == world.expected_span_count()
    assert world.receiver.duplicate_count() == 0


def broken_urls(world: World) -> tuple[str, str, str]:
    """What the fault tests break: (the run history of the first workflow, the first run
    of the second workflow, that run's steps), as paths to match requests with."""
    workflows = world.scenario.workflow_ids()
    steps_run = run_ids(world, workflows[1])[0]
    return f"/workflows/{workflows[0]}/runs?", steps_run, f"/runs/{steps_run}/steps"


def path_counts(world: World) -> Counter[str]:
    return Counter(item.path for item in arrivals(world.emulator))


# --------------------------------------------------------------------------- the matrix

# action + options of each fault; each is injected on the three endpoints at once.
FAULTS: dict[str, dict[str, Any]] = {
    "500": {"action": "status", "status": 500},
    "502": {"action": "status", "status": 502},
    "503-html": {"action": "status", "status": 503, "body_format": "html"},
    "429-retry-after-seconds": {"action": "rate_limit", "retry_after": 1},
    "429-retry-after-date": {
        "action": "rate_limit",
        "retry_after": 1,
        "retry_after_format": "date",
    },
    "timeout": {"action": "delay", "delay": 5.0},
    "connection-reset": {"action": "reset"},
    "truncated-body": {"action": "truncate"},
    "html-200": {"action": "html"},
    "not-json-200": {"action": "not_json"},
    "wrong-shape-json": {"action": "wrong_shape"},
}


def expected_status(fault: dict[str, Any]) -> int | None:
    """The status the emulator records for a faulty answer (None: not a fixed one)."""
    if fault["action"] == "status":
        return int(fault["status"])
    if fault["action"] == "rate_limit":
        return 429
    if fault["action"] == "reset":
        return 0
    if fault["action"] in ("html", "not_json", "wrong_shape", "truncate"):
        return 200
    return None  # delay: answered after the client gave up


# Seconds a timed-out attempt may seem shorter at the emulator than at the client.
ARRIVAL_SLACK = 0.25


def check_transient_fault(name: str, world: World) -> None:
    """One fault hits discovery once, one run history twice and one steps call twice
    (once each for 429s, whose Retry-After costs real seconds). `once` must retry exactly
    that often, back off (or wait out the Retry-After) between tries, and export all."""
    fault = FAULTS[name]
    rate_limited = fault["action"] == "rate_limit"
    times = 1 if rate_limited else 2
    history_path, _, steps_path = broken_urls(world)
    faults = world.emulator.faults
    faults.add(FaultRule(kind="list_workflows", times=1, **fault))
    faults.add(FaultRule(kind="list_runs", times=times, path_contains=history_path, **fault))
    faults.add(FaultRule(kind="steps", times=times, path_contains=steps_path, **fault))

    extra = {"ORCHESTRA_API_TIMEOUT": str(API_TIMEOUT)} if fault["action"] == "delay" else {}
    result = world.cli("once", **extra)
    log = arrivals(world.emulator)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}\n{describe(log)}"
    assert "Traceback" not in result.stderr
    assert_everything_exported(world)
    assert len(faults) == 0, f"not every injected fault was used: {faults.describe()}"

    # Retried exactly as often as it failed; nothing else asked twice.
    retried = {
        "list_workflows": [a for a in log if a.kind == "list_workflows"],
        "list_runs": [a for a in log if history_path in a.path],
        "steps": [a for a in log if steps_path in a.path],
    }
    failures = {"list_workflows": 1, "list_runs": times, "steps": times}
    status = expected_status(fault)
    for kind, requests in retried.items():
        assert len(requests) == failures[kind] + 1, f"{kind}:\n{describe(log)}"
        assert requests[-1].status == 200, describe(requests)
        if status is not None:
            assert [r.status for r in requests[:-1]] == [status] * failures[kind], describe(log)
    faulty_paths = {r.path for requests in retried.values() for r in requests}
    asked_twice = {p: n for p, n in path_counts(world).items() if p not in faulty_paths and n != 1}
    assert not asked_twice, f"a healthy URL was asked twice:\n{describe(log)}"

    if rate_limited:
        check_retry_after(fault, log, retried)
        return
    # Backed off between tries: never sooner than the shortest backoff (plus the time
    # the client waited for an answer), and not absurdly later than the longest.
    waited = API_TIMEOUT if fault["action"] == "delay" else 0.0
    # The client's deadline starts before its request reaches the emulator, which logs the
    # arrival: under load that first arrival is logged late, and the gap looks shorter.
    early = ARRIVAL_SLACK if waited else 0.0
    for kind, requests in retried.items():
        for retry, gap in enumerate(gaps(requests), start=1):
            shortest, longest = backoff_window(retry)
            assert shortest + waited - early <= gap <= longest + waited + PARALLEL_SLACK, (
                f"{kind}: retry {retry} came {gap:.3f}s after the previous try, expected "
                f"{shortest + waited:.2f}..{longest + waited:.2f}s\n{describe(requests)}"
            )


def test_once_recovers_from_every_kind_of_transient_fault(tmp_path: Path) -> None:
    """Every fault of the matrix, each against its own emulator, receiver and ledger.

    The cases run side by side (they mostly sleep through backoffs); the precise shape
    of the backoff is checked without that noise by the max-attempts test below.
    """

    def case(name: str) -> None:
        with demo_world(tmp_path / name) as world:
            check_transient_fault(name, world)

    with ThreadPoolExecutor(max_workers=PARALLEL_CASES) as pool:
        futures = {name: pool.submit(case, name) for name in FAULTS}
        problems = {}
        for name, future in futures.items():
            error = future.exception(timeout=180)
            if error is not None:
                problems[name] = "".join(traceback.format_exception_only(error)).strip()
    assert not problems, "faults not survived:\n\n" + "\n\n".join(
        f"[{name}] {text}" for name, text in problems.items()
    )


def check_retry_after(
    fault: dict[str, Any], log: list[Arrival], retried: dict[str, list[Arrival]]
) -> None:
    """No request may leave before the moment the 429's Retry-After named."""
    seconds = float(fault["retry_after"])

    def allowed_from(answer: Arrival) -> tuple[str, float]:
        if fault.get("retry_after_format") == "date":
            # The header is an HTTP-date (whole seconds, rounded up by the emulator): the
            # client may send again at that wall-clock second, not before.
            return "wall", math.ceil(answer.wall + seconds) - 0.02
        return "at", answer.at + seconds

    for kind, requests in retried.items():
        limited, retry = requests[0], requests[1]
        clock, earliest = allowed_from(limited)
        assert getattr(retry, clock) >= earliest, (
            f"{kind}: retried {getattr(retry, clock) - getattr(limited, clock):.3f}s after a "
            f"429 asking for {seconds}s\n{describe(log)}"
        )
    # Discovery is alone on the wire: after its 429, nothing at all may arrive early.
    limited = retried["list_workflows"][0]
    clock, earliest = allowed_from(limited)
    early = [a for a in log if a.at > limited.at and getattr(a, clock) < earliest]
    assert not early, f"requests before the Retry-After passed:\n{describe(early, limited.at)}"


# --------------------------------------------------------------------------- bounds


def test_once_stops_after_max_attempts_and_the_next_once_catches_up(world: World) -> None:
    workflow_id = world.scenario.workflow_ids()[0]
    history_path = f"/workflows/{workflow_id}/runs?"
    world.emulator.faults.add(
        FaultRule(
            action="status",
            kind="list_runs",
            status=503,
            times=MAX_ATTEMPTS,
            path_contains=history_path,
        )
    )
    first = world.cli("once")
    assert first.returncode == 1, first.stderr
    assert "list_runs: the API answered 503" in first.stderr
    attempts = arrivals(world.emulator, contains=history_path)
    assert len(attempts) == MAX_ATTEMPTS, describe(attempts)
    assert {a.status for a in attempts} == {503}
    for retry, gap in enumerate(gaps(attempts), start=1):
        shortest, longest = backoff_window(retry)
        assert shortest <= gap <= longest + SLACK, (
            f"retry {retry}: {gap:.3f}s\n{describe(attempts)}"
        )
    # The other workflows were not held hostage by the failing one.
    healthy = [r for wid in world.scenario.workflow_ids()[1:] for r in run_ids(world, wid)]
    assert set(world.receiver.traces()) == trace_ids(world, healthy)

    world.emulator.reset_stats()
    second = world.cli("once")
    assert second.returncode == 0, second.stderr
    assert_everything_exported(world)
    steps = {a.path for a in arrivals(world.emulator, kind="steps")}
    assert steps == {
        f"/api/v1/workflow/workflows/{workflow_id}/runs/{run_id}/steps"
        for run_id in run_ids(world, workflow_id)
    }, "the second once fetched runs that were already exported"


def test_a_status_that_cannot_improve_is_not_retried(world: World) -> None:
    """400 (the request itself is wrong) and 501 (never implemented) will not change on a
    retry: one try each, the rest of the poll goes on, and the next `once` catches up."""
    workflow_id = world.scenario.workflow_ids()[1]
    hopeless = dict(zip(run_ids(world, workflow_id)[:2], (400, 501), strict=True))
    for run_id, status in hopeless.items():
        world.emulator.faults.add(
            FaultRule(
                action="status", kind="steps", status=status, path_contains=f"/runs/{run_id}/"
            )
        )
    first = world.cli("once")
    assert first.returncode == 1, first.stderr
    for run_id, status in hopeless.items():
        tries = arrivals(world.emulator, contains=f"/runs/{run_id}/steps")
        assert [t.status for t in tries] == [status], f"{status} retried:\n{describe(tries)}"
    others = [r for r in world.finished_runs() if r not in hopeless]
    world.receiver.wait_for_spans(spans_of_runs(world, others), timeout=10)
    assert set(world.receiver.traces()) == trace_ids(world, others)

    second = world.cli("once")
    assert second.returncode == 0, second.stderr
    assert_everything_exported(world)


def test_retry_after_also_holds_back_requests_waiting_for_a_slot(world: World) -> None:
    """With one request in flight at a time, every request that leaves after the 429 was
    answered is sent knowing the Retry-After: none may arrive before it has passed."""
    world.emulator.faults.add(FaultRule(action="rate_limit", kind="list_runs", retry_after=2))
    result = world.cli("once", ORCHESTRA_API_CONCURRENCY="1")
    assert result.returncode == 0, result.stderr
    assert_everything_exported(world)
    log = arrivals(world.emulator)
    limited = next(a for a in log if a.status == 429)
    early = [a for a in log if limited.at < a.at < limited.at + 2.0]
    assert not early, f"sent during the Retry-After pause:\n{describe(early, limited.at)}"


@pytest.mark.parametrize(
    ("fault", "extra", "expected_kinds"),
    [
        pytest.param(
            FaultRule(action="status", status=503, times=None), {}, {"list_workflows"}, id="503"
        ),
        pytest.param(
            FaultRule(action="reset", times=None),
            {"ORCHESTRA_WORKFLOWS": "WORKFLOWS"},
            {"list_workflows", "list_runs"},
            id="reset-explicit-workflows",
        ),
    ],
)
def test_once_against_a_dead_api_gives_up_with_exit_1(
    world: World, fault: FaultRule, extra: dict[str, str], expected_kinds: set[str]
) -> None:
    configured = world.scenario.workflow_ids()[:2]
    extra = {k: ",".join(configured) if v == "WORKFLOWS" else v for k, v in extra.items()}
    world.emulator.faults.add(fault)
    started = time.monotonic()
    result = world.cli("once", timeout=75, **extra)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert elapsed < 60, f"once took {elapsed:.0f}s against a dead API"
    assert "Traceback" not in result.stderr
    counts = Counter((a.kind, a.path) for a in arrivals(world.emulator))
    assert {kind for kind, _ in counts} == expected_kinds
    assert set(counts.values()) == {MAX_ATTEMPTS}, f"attempts per URL: {counts}"
    if "list_runs" in expected_kinds:  # without discovery, the configured ids are polled
        assert len([k for k, _ in counts if k == "list_runs"]) == len(configured)
    assert world.receiver.span_count() == 0


@pytest.mark.slow  # ~35 s: one Retry-After of 30 s is waited out before giving up
def test_once_against_a_rate_limiting_api_gives_up_within_about_a_minute(world: World) -> None:
    world.emulator.faults.add(FaultRule(action="rate_limit", retry_after=30, times=None))
    started = time.monotonic()
    result = world.cli("once", timeout=240)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert elapsed < 65, f"once took {elapsed:.0f}s:\n{describe(arrivals(world.emulator))}"


# --------------------------------------------------------------------------- the daemon


def test_daemon_stays_up_and_polite_through_an_outage_then_exports_everything(
    world: World,
) -> None:
    """Discovery fails for two polls' worth of attempts; then one run history and one
    steps call fail until cleared. Per poll, no URL is asked more than MAX_ATTEMPTS
    times; the healthy workflows are exported meanwhile; clearing brings the rest."""
    workflows = world.scenario.workflow_ids()
    history_path, steps_run, steps_path = broken_urls(world)
    faults = world.emulator.faults
    faults.add(FaultRule(action="status", kind="list_workflows", status=503, times=2 * 4))
    faults.add(
        FaultRule(
            action="status", kind="list_runs", status=502, times=None, path_contains=history_path
        )
    )
    faults.add(FaultRule(action="reset", kind="steps", times=None, path_contains=steps_path))
    healthy = [
        run_id for wid in workflows[1:] for run_id in run_ids(world, wid) if run_id != steps_run
    ]
    with world.daemon(ORCHESTRA_POLL_INTERVAL="0.5") as daemon:
        world.receiver.wait_for_spans(spans_of_runs(world, healthy), timeout=30)
        wait_for(lambda: daemon.polls() >= 4, 30, "the daemon stopped polling")
        assert daemon.alive
        assert daemon.get("/healthz")[0] == 200
        status, body = daemon.readyz()
        assert status == 503 and body["ready"] is False, body

        log = arrivals(world.emulator)
        polls = daemon.polls()  # read after the log: polls done when it was taken, or more
        counts = Counter(a.path for a in log)
        for path, count in counts.items():
            assert count <= MAX_ATTEMPTS * (polls + 1), (
                f"{path} asked {count} times in {polls} polls\n{describe(log)}"
            )
        assert len([a for a in log if a.kind == "list_workflows"]) == 2 * 4 + 1
        # Backoff inside each poll: a failing URL never sees three requests within the
        # shortest backoff (two in a row can only happen across a poll boundary).
        failing_urls = {
            "list_workflows": [a for a in log if a.kind == "list_workflows"],
            "list_runs": [a for a in log if history_path in a.path],
            "steps": [a for a in log if steps_path in a.path],
        }
        for kind, tries in failing_urls.items():
            for first, third in zip(tries, tries[2:], strict=False):
                assert third.at - first.at >= backoff_window(1)[0], f"{kind}:\n{describe(tries)}"
        assert counts[next(p for p in counts if history_path in p)] >= 2 * MAX_ATTEMPTS
        assert set(world.receiver.traces()) == trace_ids(world, healthy)
        assert world.receiver.duplicate_count() == 0

        control(world.emulator, "DELETE", "faults")
        assert_everything_exported(world)
        wait_for(lambda: daemon.readyz()[0] == 200, 15, "/readyz did not recover")
        # Exported runs are not fetched again once the API is healthy.
        settled = Counter(a.path for a in arrivals(world.emulator, kind="steps"))
        wait_for(lambda: daemon.polls() >= polls + 2, 15, "the daemon stopped polling")
        assert Counter(a.path for a in arrivals(world.emulator, kind="steps")) == settled
        code = daemon.stop()
    assert code == 0, daemon.stderr
    assert "Traceback" not in daemon.stderr


REJECTED = "rejected the API key"


@pytest.mark.parametrize("variant", ["401-rotate-emulator-key", "401-key-file", "403"])
def test_daemon_with_a_rejected_key_says_so_once_and_recovers(
    world: World, tmp_path: Path, variant: str
) -> None:
    wrong_key = f"wrong-key-{secrets.token_hex(8)}"
    extra: dict[str, str] = {"ORCHESTRA_POLL_INTERVAL": "0.5"}
    key_file = tmp_path / "api-key"
    if variant == "401-rotate-emulator-key":
        extra["ORCHESTRA_API_KEY"] = wrong_key
    elif variant == "401-key-file":
        key_file.write_text(wrong_key + "\n")
        key_file.chmod(0o600)
        extra.update({"ORCHESTRA_API_KEY": "", "ORCHESTRA_API_KEY_FILE": str(key_file)})
    else:
        world.emulator.faults.add(FaultRule(action="status", status=403, times=None))

    with world.daemon(**extra) as daemon:
        wait_for(lambda: daemon.polls() >= 4, 20, "the daemon did not keep polling")
        assert daemon.alive
        assert daemon.stderr.count(REJECTED) == 1, daemon.stderr
        status, body = daemon.readyz()
        assert status == 503, body
        assert any("API key" in reason for reason in body["reasons"]), body
        assert daemon.metric("orchestra_otel_api_auth_failing") == 1
        log = arrivals(world.emulator)
        polls = daemon.polls()
        assert {a.kind for a in log} == {"list_workflows"}
        assert len(log) <= polls + 1, f"a rejected key was retried:\n{describe(log)}"
        assert world.receiver.span_count() == 0

        if variant == "401-rotate-emulator-key":
            control(world.emulator, "POST", "api-key", {"api_key": wrong_key})
        elif variant == "401-key-file":
            staged = tmp_path / "api-key.new"
            staged.write_text(f"  {API_KEY}\n")
            os.replace(staged, key_file)
        else:
            control(world.emulator, "DELETE", "faults")

        assert_everything_exported(world)
        wait_for(lambda: daemon.readyz()[0] == 200, 15, "/readyz stayed 503 after the fix")
        assert daemon.metric("orchestra_otel_api_auth_failing") == 0
        assert daemon.alive
        code = daemon.stop()
    assert code == 0, daemon.stderr
    assert daemon.stderr.count(REJECTED) == 1, daemon.stderr
    assert wrong_key not in daemon.stderr + daemon.stdout


def test_daemon_honours_a_retry_after_longer_than_its_poll_interval(world: World) -> None:
    """A 429 asking for 2 s while the daemon polls every 0.5 s (so its backoff is capped
    at 0.5 s): attempts that would have to wait longer give up without sending, and no
    request arrives before each pause has passed."""
    pause = 2.0
    world.emulator.faults.add(FaultRule(action="rate_limit", retry_after=pause, times=None))
    with world.daemon(ORCHESTRA_POLL_INTERVAL="0.5") as daemon:
        wait_for(lambda: len(arrivals(world.emulator)) >= 3, 20, "the daemon stopped asking")
        log = arrivals(world.emulator)
        assert {a.status for a in log} == {429}, describe(log)
        for gap in gaps(log):
            assert gap >= pause, f"asked again {gap:.3f}s after a 429:\n{describe(log)}"
        assert daemon.alive
        assert daemon.metric("orchestra_otel_api_rate_limited_total") >= len(log)

        control(world.emulator, "DELETE", "faults")
        assert_everything_exported(world)
        code = daemon.stop()
    assert code == 0, daemon.stderr
