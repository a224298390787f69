"""`orchestra-otel backfill`: a window of history, paged past one page, resumable."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from exporter.emulator import Scenario
from exporter.emulator.demo import demo_workflows
from exporter.mapping.timeparse import parse_timestamp_ns
from tests.support.clock import ManualClock
from tests.support.world import open_world

pytestmark = pytest.mark.integration


def test_backfill_pages_the_history_and_resumes(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    scenario = Scenario(demo_workflows(clock()), clock=clock, seed=11)
    joke, hello = scenario.workflow_ids()[1], scenario.workflow_ids()[0]
    # 250 runs a minute apart: more than two pages of history.
    scenario.add_history(joke, 250, every=60.0, duration=(1.0, 5.0), failure_rate=0.1)
    scenario.add_history(hello, 20, every=60.0, duration=(0.5, 1.0))
    with open_world(scenario, tmp_path, clock=clock, history_limit=1000) as world:
        emulator, rx = world.emulator, world.receiver
        # Window: the last 3 hours of the joke workflow only (180 runs of its 250). An
        # absolute time: the emulator's clock stands still while the real one moves on.
        # Half a spacing off the minute grid, so no run starts right at the boundary.
        since_s = clock() - 3 * 3600 - 30
        since = datetime.fromtimestamp(since_s, timezone.utc).isoformat()
        first = world.cli("backfill", "--since", since, "--workflow", joke)
        assert first.returncode == 0, first.stderr
        since_ns = int(since_s * 1e9)
        in_window = [
            run
            for run in scenario.runs(joke) or []
            if parse_timestamp_ns(run["start_time"]) >= since_ns
        ]
        assert 170 <= len(in_window) <= 181
        expected = sum(1 + len(scenario.steps(joke, str(r["id"])) or []) for r in in_window)
        rx.wait_for_spans(expected, timeout=20)
        assert set(rx.traces()) == {str(r["id"]).replace("-", "") for r in in_window}
        assert emulator.stats()["by_kind"]["list_runs"] >= 2, "it must page past the first page"
        assert "backfill: runs" in first.stderr
        # Again: everything is in the ledger, nothing is fetched or sent twice.
        emulator.reset_stats()
        again = world.cli("backfill", "--since", since, "--workflow", joke)
        assert again.returncode == 0, again.stderr
        assert emulator.stats()["by_kind"].get("steps", 0) == 0
        assert rx.span_count() == expected and rx.duplicate_count() == 0


def test_backfill_rejects_a_bad_window(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    scenario = Scenario(demo_workflows(clock()), clock=clock)
    with open_world(scenario, tmp_path, clock=clock) as world:
        result = world.cli("backfill", "--since", "yesterday-ish")
        assert result.returncode == 2
        assert "--since" in result.stderr
        result = world.cli("backfill", "--since", "1h", "--until", "2h")
        assert result.returncode == 2 and "before --until" in result.stderr
