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

import dataclasses
import logging
from pathlib import Path

import pytest

from exporter.collect import MAX_UNREADABLE_TRIES
from exporter.emulator import FaultRule
from exporter.emulator.demo import JOKE_TO_SLACK_ID, SUPPORT_TRIAGE_ID, demo_workflows
from exporter.errors import ApiResponseTooLargeError
from exporter.poller import Poller
from exporter.results import PollResult
from exporter.schedule import ScheduleSettings
from exporter.source.client import MAX_PAGE_SIZE, OrchestraClient
from exporter.source.models import Run, Step
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


# --- the adaptive schedule (exporter/schedule.py) on a real poll cycle ----------------------

LATENCY = 0.05  # how long each history answer takes on the test's clock
IDLE = ScheduleSettings(
    interval_s=POLL_INTERVAL, min_interval_s=POLL_INTERVAL, max_interval_s=240.0
)
BUSY = ScheduleSettings(
    interval_s=POLL_INTERVAL, min_interval_s=5.0, max_interval_s=240.0, active_window_s=45.0
)


class Listings:
    """A client class that notes when each history request was made, and answers it
    LATENCY later on the test's clock, as a network would: each next poll counts from
    when the answer came, a little after the tick."""

    def __init__(self, clock: ManualClock) -> None:
        self.made: list[tuple[str, float]] = []
        listings = self

        class TimedClient(OrchestraClient):
            async def list_runs(
                self, workflow_id: str, *, limit: int = MAX_PAGE_SIZE, offset: int = 0
            ) -> list[Run]:
                listings.made.append((workflow_id, clock()))
                runs = await super().list_runs(workflow_id, limit=limit, offset=offset)
                clock.advance(LATENCY)
                return runs

        self.client_class = TimedClient

    def seconds(self, workflow_id: str) -> list[float]:
        """When the workflow was listed: seconds after START, to a tenth."""
        return [round(at - START, 1) for wid, at in self.made if wid == workflow_id]


async def _poll_at(rig: Rig, poller: Poller, tick: float) -> PollResult:
    """The poll of the daemon's tick at START + tick, however long the last one took."""
    rig.clock.set(START + tick)
    return await poller.poll()


def _polled(rig: Rig, metric: str, **labels: str) -> float | None:
    return rig.telemetry.registry.get_sample_value(metric, labels)


def test_idle_workflows_are_skipped_until_due_and_back_off_to_the_max(
    rig: Rig, clock: ManualClock
) -> None:
    listings = Listings(clock)
    listed_per_poll = []

    async def body(rig: Rig) -> None:
        async with rig.poller(listings.client_class, schedule=IDLE) as poller:
            for number in range(31):
                result = await _poll_at(rig, poller, number * POLL_INTERVAL)
                listed_per_poll.append(result.workflows)
                assert result.ok, result.errors

    rig.run(body)

    # Nothing runs: waits of 60, 120, 240, 240 s... after each quiet listing, on 30 s ticks.
    expected = [0.0, 60.0, 180.0, 420.0, 660.0, 900.0]
    for workflow_id in rig.scenario.workflow_ids():
        assert listings.seconds(workflow_id) == expected
    assert [n for n, count in enumerate(listed_per_poll) if count] == [0, 2, 6, 14, 22, 30]
    assert set(listed_per_poll) == {0, 4}
    assert rig.requests()["list_runs"] == 4 * len(expected)  # a fixed pace: 4 * 31


def test_a_workflow_with_a_run_in_flight_is_polled_every_min_interval(
    rig: Rig, clock: ManualClock
) -> None:
    run_id = rig.scenario.add_run(
        JOKE, start_at=START - 1.0, step_durations={"model": 12.0, "slack_integration": 8.0}
    )
    listings = Listings(clock)
    exported_at: dict[str, float] = {}

    async def body(rig: Rig) -> None:
        async with rig.poller(listings.client_class, schedule=BUSY) as poller:
            for number in range(37):  # 0 to 180 s on 5 s ticks
                await _poll_at(rig, poller, number * 5.0)
                for name in rig.sink.of_run(run_id):
                    exported_at.setdefault(name, number * 5.0)

    rig.run(body)

    # In flight until 19 s: every 5 s; it ended: every 30 s while the 45 s window lasts;
    # then idle, backing off from 60 s.
    assert listings.seconds(JOKE) == [0.0, 5.0, 10.0, 15.0, 20.0, 50.0, 80.0, 140.0]
    for workflow_id in set(rig.scenario.workflow_ids()) - {JOKE}:
        assert listings.seconds(workflow_id) == [0.0, 60.0, 180.0]
    # Step by step, each in the first poll after it ended, once.
    assert exported_at == {"model": 15.0, "slack_integration": 20.0, "joke-to-slack": 20.0}
    assert rig.sink.duplicates() == []


def test_a_new_run_of_an_idle_workflow_is_exported_within_the_max_plus_one_interval(
    rig: Rig, clock: ManualClock
) -> None:
    schedule = BUSY  # 5 s ticks, idle waits up to 240 s
    listings = Listings(clock)
    seen: dict[str, float] = {}

    async def body(rig: Rig) -> None:
        async with rig.poller(listings.client_class, schedule=schedule) as poller:
            tick = 0.0
            while tick < 1200.0:  # a quiet spell: every workflow backs off to the max
                await _poll_at(rig, poller, tick)
                tick += schedule.tick_s
            last_listing = START + listings.seconds(JOKE)[-1]
            # The worst moment: right after the workflow's last listing, 240 s to its next.
            seen["started"] = last_listing + 1.0
            run_id = rig.scenario.add_run(
                JOKE, start_at=seen["started"], step_durations={"model": 1, "slack_integration": 1}
            )
            while not rig.sink.of_run(run_id):
                await _poll_at(rig, poller, tick)
                tick += schedule.tick_s
                assert tick < 2000.0, "the run was never exported"
            seen["exported"] = START + tick - schedule.tick_s
            seen["spans"] = len(rig.sink.of_run(run_id))

    rig.run(body)

    waited = seen["exported"] - seen["started"]
    assert schedule.interval_s < waited <= schedule.max_interval_s + schedule.interval_s
    assert seen["spans"] == 3 and rig.sink.duplicates() == []


def test_discovery_adds_a_new_workflow_that_is_polled_at_once_while_the_others_back_off(
    rig: Rig, clock: ManualClock
) -> None:
    new_id = "7d1e5c3a-2b4f-4e6a-8c9d-0a1b2c3d4e5f"
    listings = Listings(clock)
    per_poll: list[int] = []

    async def body(rig: Rig) -> None:
        async with rig.poller(listings.client_class, schedule=IDLE) as poller:
            for number in range(11):
                per_poll.append((await _poll_at(rig, poller, number * POLL_INTERVAL)).workflows)
            (spec,) = [spec for spec in demo_workflows(START) if spec.workflow_id == JOKE]
            rig.scenario.add_workflow(dataclasses.replace(spec, workflow_id=new_id))
            rig.scenario.add_history(new_id, 2, **EVERY_MINUTE)
            per_poll.append((await _poll_at(rig, poller, 11 * POLL_INTERVAL)).workflows)
            await poller.workflows.refresh()  # the discovery job, every discovery interval
            per_poll.append((await _poll_at(rig, poller, 12 * POLL_INTERVAL)).workflows)

    rig.run(body)

    assert per_poll[10:] == [0, 0, 1], "only the new workflow is due"
    assert listings.seconds(new_id) == [12 * POLL_INTERVAL]
    assert rig.sink.trace_ids() == trace_ids_of(finished_runs(rig.scenario, new_id))


def test_the_schedule_metrics_show_states_and_next_polls(rig: Rig, clock: ManualClock) -> None:
    rig.scenario.add_run(
        JOKE, start_at=START - 1.0, step_durations={"model": 12.0, "slack_integration": 8.0}
    )
    scrapes = []

    def scrape() -> tuple[dict[str, float | None], dict[str, float | None]]:
        states = {
            state: _polled(rig, "orchestra_otel_workflows_polled", state=state)
            for state in ("in_flight", "active", "idle")
        }
        spread = {
            stat: _polled(rig, "orchestra_otel_next_poll_seconds", stat=stat)
            for stat in ("min", "median", "max")
        }
        return states, spread

    async def body(rig: Rig) -> None:
        async with rig.poller(schedule=BUSY) as poller:
            scrapes.append(scrape())  # nothing polled yet: all due
            for number in range(5):  # 0 to 20 s: the run ends at 19 s
                await _poll_at(rig, poller, number * 5.0)
                if number in (0, 4):
                    scrapes.append(scrape())

    rig.run(body)

    assert scrapes == [
        ({"in_flight": 0, "active": 0, "idle": 0}, {"min": None, "median": None, "max": None}),
        ({"in_flight": 1, "active": 0, "idle": 3}, {"min": 5.0, "median": 60.0, "max": 60.0}),
        ({"in_flight": 0, "active": 1, "idle": 3}, {"min": 30.0, "median": 40.0, "max": 40.0}),
    ]


def test_polls_with_nothing_due_during_an_outage_do_not_count_as_successful(
    rig: Rig, clock: ManualClock
) -> None:
    """Failed listings are asked again every interval; between them, the min interval's
    ticks poll nothing. Those say nothing of the API: the last successful poll, which
    readiness and the OrchestraExporterNoSuccessfulPoll alert read, stays where it was."""
    state = rig.telemetry.state
    seen: list[tuple[object, object]] = []

    async def body(rig: Rig) -> None:
        async with rig.poller(schedule=BUSY) as poller:
            await _poll_at(rig, poller, 0.0)  # the API answers: idle until 60 s
            rig.emulator.faults.add(FaultRule("status", kind="list_runs", status=500, times=None))
            for number in range(1, 37):  # to 180 s, on 5 s ticks
                result = await _poll_at(rig, poller, number * 5.0)
                seen.append((result.workflows, result.api_failed))
            ready, _ = state.readiness(POLL_INTERVAL, now=clock())
            seen.append((ready, state.last_poll_ok - START))
            rig.emulator.faults.clear()
            for number in range(37, 42):  # nothing due: no news yet
                await _poll_at(rig, poller, number * 5.0)
            seen.append((state.readiness(POLL_INTERVAL, now=clock())[0], False))
            await _poll_at(rig, poller, 42 * 5.0)  # the retry of 210 s succeeds
            seen.append(state.readiness(POLL_INTERVAL, now=clock()))

    rig.run(body)

    # Listed at 60 s, then retried every 30 s: 90, 120, 150, 180 s.
    listing_ticks = [n for n, (listed, _) in enumerate(seen[:36], start=1) if listed]
    assert listing_ticks == [12, 18, 24, 30, 36]
    assert all(failed for listed, failed in seen[:36] if listed)
    # The last successful poll is the one of 55 s, before the first failure.
    assert seen[36] == (False, 55.0)
    assert seen[37] == (False, False)
    assert seen[38] == (True, [])
