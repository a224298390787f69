"""`backfill` in process against the emulator: a window of history, exported once.

Invariants (exporter/backfill.py): the finished runs that started inside the window are
exported, each once, whatever number of history pages they span; runs outside it and runs
still going are not; paging stops once a whole page is older than the window; a second
backfill resumes from the ledger (what was captured counts as already exported); an API
that answers the same page again ends the pass instead of paging forever.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from exporter.backfill import Progress, Window, backfill
from exporter.emulator import FaultRule
from exporter.emulator.demo import JOKE_TO_SLACK_ID, SUPPORT_TRIAGE_ID
from exporter.results import PollResult
from tests.support.clock import ManualClock
from tests.unit.inprocess import START, Rig, demo_scenario_at, finished_runs, trace_ids_of

NS = 1_000_000_000
JOKE = JOKE_TO_SLACK_ID
MINUTE = 60.0
PAGE = 100  # runs per history page


class History:
    """Runs before, inside and after a window (the API lists them newest first)."""

    def __init__(self, rig: Rig, *, after: int, inside: int, before: int) -> None:
        scenario, now = rig.scenario, rig.clock()
        self.window_end = now - (after + 2) * MINUTE  # before the first run after it
        self.window_start = self.window_end - (inside + 1) * MINUTE
        runs = {"every": MINUTE, "duration": (1.0, 6.0)}
        self.before = scenario.add_history(JOKE, before, end_by=self.window_start - 600, **runs)
        self.inside = scenario.add_history(JOKE, inside, end_by=self.window_end, **runs)
        self.after = scenario.add_history(JOKE, after, end_by=now - 60, **runs)
        self.spans = finished_runs(scenario, JOKE)

    def window(self, *, until: float | None = None) -> Window:
        end = self.window_end if until is None else until
        return Window(int(self.window_start * NS), int(end * NS), (JOKE,))

    def spans_of(self, run_ids: list[str]) -> int:
        return sum(self.spans[run_id] for run_id in run_ids)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    # The API's history reaches back past the window (the default lists the newest 100).
    return Rig(
        demo_scenario_at(ManualClock(START)), tmp_path / "ledger.db", {"history_limit": 1000}
    )


async def _backfill(rig: Rig, window: Window) -> tuple[PollResult, Progress, dict[str, int]]:
    progress = Progress(stream=io.StringIO())
    before = rig.requests()
    async with rig.poller() as poller:
        result = await backfill(poller, window, progress)
    return result, progress, dict(rig.requests() - before)


def test_a_window_of_several_pages_is_exported_once_and_resumes(rig: Rig) -> None:
    # Page 0: 10 runs after the window, 90 inside; page 1: 30 inside, 70 before; page 2:
    # all before, so paging stops there, not at the history's end (page 3).
    history = History(rig, after=10, inside=120, before=200)

    async def body(rig: Rig) -> list[tuple[PollResult, Progress, dict[str, int]]]:
        return [await _backfill(rig, history.window()), await _backfill(rig, history.window())]

    (first, progress, requests), (again, progress_again, requests_again) = rig.run(body)

    assert first.ok and first.spans_exported == history.spans_of(history.inside)
    assert rig.sink.trace_ids() == trace_ids_of(history.inside)
    assert rig.sink.duplicates() == []
    assert (progress.runs_found, progress.runs_done, progress.runs_skipped) == (120, 120, 0)
    assert first.runs_seen == 120 and first.pending_spans == 0
    assert requests["list_runs"] == 3
    assert requests["steps"] == 120

    # The second backfill finds every run already exported and fetches no steps.
    assert again.ok and again.spans_exported == 0
    assert (progress_again.runs_found, progress_again.runs_skipped) == (120, 120)
    assert progress_again.runs_done == 120
    assert requests_again == {"list_workflows": 1, "list_runs": 3}
    assert len(rig.sink.spans) == history.spans_of(history.inside)


def test_an_interrupted_backfill_resumes_where_it_stopped(rig: Rig) -> None:
    """A first pass over the older part of the window (as far as it got), then the whole."""
    history = History(rig, after=5, inside=40, before=5)
    halfway = history.window_start + 15 * MINUTE

    async def body(rig: Rig) -> tuple[Progress, PollResult, Progress]:
        _, partial, _ = await _backfill(rig, history.window(until=halfway))
        result, resumed, _ = await _backfill(rig, history.window())
        return partial, result, resumed

    partial, result, resumed = rig.run(body)

    assert 0 < partial.runs_found < len(history.inside)
    assert resumed.runs_skipped == partial.runs_found
    assert result.spans_exported == history.spans_of(history.inside) - partial.spans_done
    assert rig.sink.trace_ids() == trace_ids_of(history.inside)
    assert rig.sink.duplicates() == []


def test_spans_a_backfill_could_not_deliver_go_out_with_the_next(rig: Rig) -> None:
    history = History(rig, after=5, inside=40, before=5)

    async def body(rig: Rig) -> tuple[PollResult, PollResult]:
        rig.sink.refusing = True
        refused, _, _ = await _backfill(rig, history.window())
        rig.sink.refusing = False
        resumed, _, requests = await _backfill(rig, history.window())
        assert "steps" not in requests, "captured runs are not fetched again"
        return refused, resumed

    refused, resumed = rig.run(body)

    expected = history.spans_of(history.inside)
    assert refused.export_failed and refused.spans_exported == 0
    assert refused.pending_spans == expected
    assert resumed.spans_exported == expected and resumed.pending_spans == 0
    assert rig.sink.trace_ids() == trace_ids_of(history.inside)
    assert rig.sink.duplicates() == []


def test_runs_still_going_are_left_to_the_daemon(rig: Rig) -> None:
    now = rig.clock()
    finished = rig.scenario.add_history(SUPPORT_TRIAGE_ID, 3, every=MINUTE, duration=(1.0, 5.0))
    going = rig.scenario.add_run(SUPPORT_TRIAGE_ID, start_at=now - 1.0)
    window = Window(int((now - 3600) * NS), int(now * NS), (SUPPORT_TRIAGE_ID,))

    async def body(rig: Rig) -> tuple[PollResult, Progress, dict[str, int]]:
        return await _backfill(rig, window)

    result, progress, requests = rig.run(body)

    assert rig.sink.trace_ids() == trace_ids_of(finished)  # not the one still going
    assert rig.sink.of_run(going) == []
    assert progress.runs_found == 3 and requests["steps"] == 3
    assert result.spans_exported == sum(finished_runs(rig.scenario, SUPPORT_TRIAGE_ID).values())


def test_an_api_that_repeats_its_first_page_ends_the_pass(rig: Rig) -> None:
    """Orchestra ignoring `offset` would answer page 0 for every page."""
    history = History(rig, after=95, inside=30, before=0)
    first_page = rig.scenario.runs(JOKE, offset=0, limit=PAGE) or []
    rig.emulator.faults.add(
        FaultRule(
            "wrong_shape",  # with a body: this very body, as a 200
            kind="list_runs",
            times=None,
            path_contains=f"offset={PAGE}",
            body=json.dumps(first_page),
        )
    )
    on_first_page = [run["id"] for run in first_page if run["id"] in set(history.inside)]

    async def body(rig: Rig) -> tuple[PollResult, Progress, dict[str, int]]:
        return await _backfill(rig, history.window())

    result, progress, requests = rig.run(body)

    assert len(on_first_page) == 5
    assert requests["list_runs"] == 2
    assert rig.sink.trace_ids() == trace_ids_of(on_first_page)
    assert progress.runs_found == 5
    assert result.spans_exported == history.spans_of(on_first_page)
    stopped = rig.telemetry.history_paging_stopped.labels("repeated")._value.get()
    assert stopped == 1
