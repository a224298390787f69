"""The poll cycle in process: Poller and Collector against the real emulator.

Each test runs the poller in its own event loop against the emulator over real HTTP; the
emulator's runs move only when the test's ManualClock does, and the sink is a recording
one that can refuse. Invariants (exporter/poller.py, collect.py, delivery.py): the first
poll exports the lookback window; a run whose root was captured is never fetched again;
steps go out as they finish and the root once the run ends; a tracked run that fell off
the history is fetched by id and closed on 404; one workflow failing does not stop the
others; a run whose answer stays past the client's bounds is given up after three polls;
a refused export keeps everything spooled and backs off while polling goes on, and a
later poll delivers everything once; a broken ledger is reported, not raised.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from exporter.collect import MAX_UNREADABLE_TRIES
from exporter.emulator import FaultRule
from exporter.emulator.demo import JOKE_TO_SLACK_ID, SUPPORT_TRIAGE_ID
from exporter.errors import ApiResponseTooLargeError
from exporter.poller import Poller
from exporter.results import PollResult
from exporter.source.client import OrchestraClient
from exporter.source.models import Step
from tests.support.clock import ManualClock
from tests.unit.inprocess import START, Rig, demo_scenario_at, finished_runs, trace_ids_of

POLL_INTERVAL = 30.0
JOKE = JOKE_TO_SLACK_ID  # two steps: model, slack_integration
# Runs that take 1-6 s, started a minute apart: all finished by the time they are listed.
EVERY_MINUTE = {"every": 60.0, "duration": (1.0, 6.0)}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def rig(clock: ManualClock, tmp_path: Path) -> Rig:
    return Rig(demo_scenario_at(clock), tmp_path / "ledger.db")


async def _poll(rig: Rig, poller: Poller) -> tuple[PollResult, dict[str, int]]:
    """One poll, and the API requests it made by endpoint kind."""
    before = rig.requests()
    result = await poller.poll()
    return result, dict(rig.requests() - before)


def _counted(rig: Rig, metric: str) -> float:
    book = rig.telemetry.book.series
    return sum(series.count for (name, _), series in book.items() if name == metric)


def test_the_first_poll_exports_the_lookback_window_and_the_next_reads_only_history(
    rig: Rig, clock: ManualClock
) -> None:
    rig.scenario.add_history(JOKE, 20, **EVERY_MINUTE)  # the last 20 minutes
    rig.scenario.add_history(SUPPORT_TRIAGE_ID, 3, **EVERY_MINUTE)
    lookback = 600.0
    expected = {
        **finished_runs(rig.scenario, JOKE, ended_after=clock() - lookback),
        **finished_runs(rig.scenario, SUPPORT_TRIAGE_ID, ended_after=clock() - lookback),
    }

    async def body(rig: Rig) -> list[tuple[PollResult, dict[str, int]]]:
        async with rig.poller(lookback_s=lookback) as poller:
            first = await _poll(rig, poller)
            clock.advance(POLL_INTERVAL)
            return [first, await _poll(rig, poller)]

    (first, first_requests), (second, second_requests) = rig.run(body)

    assert 10 <= len(expected) < 23, "the window must cut the history"
    assert first.ok and first.workflows == 4
    assert rig.sink.trace_ids() == trace_ids_of(expected)
    assert first.spans_exported == len(rig.sink.spans) == sum(expected.values())
    assert first.runs_completed == len(expected) and first.pending_spans == 0
    assert rig.sink.duplicates() == []
    # Discovery, one history page per workflow, one steps request per run in the window.
    assert first_requests["list_workflows"] == 1
    assert first_requests["list_runs"] == 4
    assert first_requests["steps"] == len(expected)
    assert first.requests == sum(first_requests.values())

    assert second.ok and second.spans_exported == 0
    assert second_requests == {"list_runs": 4}, "nothing new: only the history is read"
    # Metric totals are the confirmed spans, no more, no less.
    assert _counted(rig, "orchestra_runs") == len(rig.sink.roots()) == len(expected)
    assert _counted(rig, "orchestra_steps") == len(rig.sink.spans) - len(expected)


def test_an_in_flight_run_goes_out_step_by_step_and_its_root_once_it_ends(
    rig: Rig, clock: ManualClock
) -> None:
    run_id = rig.scenario.add_run(JOKE, step_durations={"model": 2.0, "slack_integration": 3.0})
    timeline = []

    async def body(rig: Rig) -> None:
        async with rig.poller(workflows=(JOKE,)) as poller:
            for advance in (0.5, 2.0, 1.0, 3.0, POLL_INTERVAL):
                clock.advance(advance)
                result, requests = await _poll(rig, poller)
                timeline.append(
                    (rig.sink.of_run(run_id), result.runs_in_flight, requests.get("steps", 0))
                )

    rig.run(body)

    assert timeline == [
        ([], 1, 1),  # the model step is running: nothing to export yet
        (["model"], 1, 1),  # the model step ended: its span, no root
        (["model"], 1, 1),  # slack still running
        (["model", "slack_integration", "joke-to-slack"], 0, 1),  # the run ended
        (["model", "slack_integration", "joke-to-slack"], 0, 0),  # done: never asked again
    ]
    assert rig.sink.duplicates() == []


def test_a_tracked_run_that_fell_off_the_history_is_fetched_by_id(
    tmp_path: Path, clock: ManualClock
) -> None:
    # The API lists only the newest 3 runs; a long run is pushed out by 5 short ones.
    rig = Rig(demo_scenario_at(clock), tmp_path / "ledger.db", {"history_limit": 3})
    long_run = rig.scenario.add_run(JOKE, step_durations={"model": 60.0, "slack_integration": 60})
    found = []

    async def body(rig: Rig) -> None:
        async with rig.poller(workflows=(JOKE,)) as poller:
            clock.advance(1.0)
            await poller.poll()  # the long run is tracked, in flight
            for index in range(5):
                rig.scenario.add_run(JOKE, start_at=clock() + 2.0 + index, step_durations={})
            clock.advance(30.0)
            result, requests = await _poll(rig, poller)
            found.append((requests.get("get_run", 0), result.runs_in_flight))
            clock.advance(100.0)  # the long run ends
            result, requests = await _poll(rig, poller)
            found.append((requests.get("get_run", 0), result.runs_in_flight))
            result, requests = await _poll(rig, poller)
            found.append((requests.get("get_run", 0), result.runs_in_flight))

    rig.run(body)

    assert found == [(1, 1), (1, 0), (0, 0)]
    assert rig.sink.of_run(long_run) == ["model", "slack_integration", "joke-to-slack"]
    assert rig.sink.duplicates() == []


def test_a_tracked_run_the_api_no_longer_knows_is_closed_on_404(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    gone = "0b7f2a36-5c1e-4d8a-9f3b-6e2d1c0a9b87"
    asked = []

    async def body(rig: Rig) -> None:
        async with rig.poller(workflows=(JOKE,)) as poller:
            # Tracked by an earlier process, deleted from Orchestra since.
            poller.ledger.track_runs(JOKE, [(gone, "running")], int(START * 1e9))
            for _ in range(3):
                result, requests = await _poll(rig, poller)
                asked.append(requests.get("get_run", 0))
                assert result.ok, result.errors
            assert poller.ledger.open_runs(JOKE) == []
            assert poller.ledger.run_states(JOKE, [gone])[gone].done

    with caplog.at_level(logging.WARNING):
        rig.run(body)

    assert asked == [1, 0, 0]
    said = [r.getMessage() for r in caplog.records if gone in r.getMessage()]
    assert said == [f"run {gone}: tracked run no longer exists (404)"]
    assert rig.sink.spans == []


def test_a_run_whose_answer_stays_too_large_is_given_up_after_three_polls(
    rig: Rig, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    readable, oversized = rig.scenario.add_history(JOKE, 2, **EVERY_MINUTE)

    class BoundedClient(OrchestraClient):
        """The real client, but the steps of one run are past its bounds at every try."""

        async def get_steps(self, workflow_id: str, run_id: str) -> list[Step]:
            if run_id == oversized:
                raise ApiResponseTooLargeError("steps: the answer passes a bound")
            return await super().get_steps(workflow_id, run_id)

    seen = []

    async def body(rig: Rig) -> None:
        async with rig.poller(BoundedClient, workflows=(JOKE,)) as poller:
            for _ in range(MAX_UNREADABLE_TRIES + 1):
                result, requests = await _poll(rig, poller)
                seen.append((result.api_failed, requests.get("steps", 0)))
                clock.advance(POLL_INTERVAL)
            assert poller.ledger.open_runs(JOKE) == []
            assert poller.reporter.skipped_records == 1

    with caplog.at_level(logging.WARNING):
        rig.run(body)

    # A poll error while it may still pass; given up (closed, no spans) at the third try,
    # and never asked about again.
    assert seen == [(True, 1), (True, 0), (False, 0), (False, 0)]
    assert rig.sink.of_run(readable) != [] and rig.sink.of_run(oversized) == []
    said = [r.getMessage() for r in caplog.records if oversized in r.getMessage()]
    assert said == [f"run {oversized}: skipped after 3 tries: steps: the answer passes a bound"]


def test_one_workflow_failing_does_not_stop_the_others(rig: Rig, clock: ManualClock) -> None:
    rig.scenario.add_history(JOKE, 3, **EVERY_MINUTE)
    rig.scenario.add_history(SUPPORT_TRIAGE_ID, 3, **EVERY_MINUTE)
    joke_runs = finished_runs(rig.scenario, JOKE)
    triage_runs = finished_runs(rig.scenario, SUPPORT_TRIAGE_ID)
    rig.emulator.faults.add(
        FaultRule("status", kind="list_runs", status=500, times=None, path_contains=JOKE)
    )

    async def body(rig: Rig) -> tuple[PollResult, set[int], PollResult]:
        async with rig.poller() as poller:
            failed = await poller.poll()
            during = rig.sink.trace_ids()
            rig.emulator.faults.clear()
            clock.advance(POLL_INTERVAL)
            return failed, during, await poller.poll()

    failed, during, recovered = rig.run(body)

    assert failed.api_failed and not failed.ledger_failed and not failed.export_failed
    assert failed.errors == ["list_runs: the API answered 500"]
    assert during == trace_ids_of(triage_runs)
    assert failed.spans_exported == sum(triage_runs.values())
    assert recovered.ok and recovered.spans_exported == sum(joke_runs.values())
    assert rig.sink.trace_ids() == trace_ids_of({**joke_runs, **triage_runs})
    assert rig.sink.duplicates() == []


def test_a_refused_export_spools_everything_backs_off_and_delivers_once(
    rig: Rig, clock: ManualClock
) -> None:
    rig.scenario.add_history(JOKE, 4, **EVERY_MINUTE)
    rig.scenario.add_history(SUPPORT_TRIAGE_ID, 2, **EVERY_MINUTE)
    expected = {
        **finished_runs(rig.scenario, JOKE),
        **finished_runs(rig.scenario, SUPPORT_TRIAGE_ID),
    }
    spans = sum(expected.values())
    state = rig.telemetry.state
    seen = []

    async def body(rig: Rig) -> None:
        async with rig.poller() as poller:
            rig.sink.refusing = True
            refused, _ = await _poll(rig, poller)
            ready, reasons = state.readiness(POLL_INTERVAL, now=clock())
            seen.append(("refused", refused.export_failed, refused.pending_spans, ready, reasons))
            for _ in range(3):  # polling goes on inside the 5 s pause: no export is tried
                clock.advance(POLL_INTERVAL)
                rig.monotonic.advance(1.0)
                paused, requests = await _poll(rig, poller)
                seen.append(("paused", requests, paused.pending_spans, rig.sink.attempts))
            rig.sink.refusing = False
            rig.monotonic.advance(2.0)  # 5 s after the refusal
            clock.advance(POLL_INTERVAL)
            delivered, requests = await _poll(rig, poller)
            seen.append(("delivered", requests, delivered.spans_exported, state.export_failing))

    rig.run(body)

    failing = f"the span export is failing; {spans} spans spooled"
    assert seen[0] == ("refused", True, spans, False, [failing])
    assert seen[1:4] == [("paused", {"list_runs": 4}, spans, 1)] * 3
    # The spool, not the API, holds the outage: no steps are fetched again.
    assert seen[4] == ("delivered", {"list_runs": 4}, spans, False)
    assert rig.sink.trace_ids() == trace_ids_of(expected)
    assert len(rig.sink.spans) == spans and rig.sink.duplicates() == []
    assert _counted(rig, "orchestra_runs") == len(expected)
    assert _counted(rig, "orchestra_steps") == spans - len(expected)
    assert rig.telemetry.pending_spans._value.get() == 0
    assert state.readiness(POLL_INTERVAL, now=clock()) == (True, [])


def test_a_broken_ledger_is_noted_in_the_result_and_makes_the_daemon_not_ready(
    rig: Rig, clock: ManualClock
) -> None:
    rig.scenario.add_history(JOKE, 2, **EVERY_MINUTE)
    spans = sum(finished_runs(rig.scenario, JOKE).values())
    state = rig.telemetry.state

    async def body(rig: Rig) -> PollResult:
        async with rig.poller(workflows=(JOKE,)) as poller:
            rig.sink.refusing = True  # a backlog, so that there is one to keep
            await poller.poll()
            poller.ledger.close()  # as a failing disk or a deleted file would leave it
            rig.scenario.add_run(JOKE)
            clock.advance(POLL_INTERVAL)
            rig.monotonic.advance(60.0)
            return await poller.poll()

    broken = rig.run(body)

    assert broken.ledger_failed and not broken.api_failed
    assert broken.errors and all("state file" in error for error in broken.errors)
    ready, reasons = state.readiness(POLL_INTERVAL, now=clock())
    assert not ready
    assert "the state file cannot be read or written (see the log)" in reasons
    # The spool could not be read: the last known backlog stands, not a made-up zero.
    assert state.ledger_failing and state.pending_spans == spans
    assert rig.telemetry.pending_spans._value.get() == spans


def test_counts_of_a_poll_add_up(rig: Rig, clock: ManualClock) -> None:
    """runs_seen counts the due runs; the summary line says what the result holds."""
    rig.scenario.add_history(JOKE, 3, **EVERY_MINUTE)
    in_flight = rig.scenario.add_run(JOKE, step_durations={"model": 60.0})

    async def body(rig: Rig) -> PollResult:
        async with rig.poller(workflows=(JOKE,)) as poller:
            clock.advance(1.0)
            return await poller.poll()

    result = rig.run(body)
    assert (result.workflows, result.runs_seen, result.runs_completed) == (1, 4, 3)
    assert result.runs_in_flight == 1
    assert rig.sink.of_run(in_flight) == []
    assert result.summary() == (
        f"poll: 1 workflows, 4 runs seen, 3 completed, {result.spans_exported} spans exported, "
        f"{result.requests} requests, backlog 1 runs in flight / 0 spans unsent"
    )
    assert len(rig.sink.roots()) == 3
