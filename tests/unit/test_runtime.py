"""Runtime.poll_and_log and Condition: a persistent problem is said when it starts and
when it ends, not at every poll; the same error line poll after poll is said once.

The polls run in process against the emulator (tests/unit/inprocess.py); the ledger is
made to fail for real, by a second SQLite connection moving the spool table away (as a
damaged or foreign-modified state file would), and the key is rejected by the emulator.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from exporter.app import Runtime
from exporter.config import Settings
from exporter.emulator import FaultRule
from exporter.emulator.demo import JOKE_TO_SLACK_ID, SUPPORT_TRIAGE_ID
from exporter.logs import Condition
from exporter.results import PollResult
from exporter.schedule import ScheduleSettings
from tests.support.clock import ManualClock
from tests.unit.inprocess import API_KEY, START, Rig, demo_scenario_at, finished_runs, trace_ids_of

POLL_INTERVAL = 30.0
JOKE = JOKE_TO_SLACK_ID
LEDGER_STARTED = "the state file cannot be used"
LEDGER_ENDED = "the state file works again"
AUTH_STARTED = "the Orchestra API rejected the API key"
AUTH_ENDED = "the API accepts the key again; polling resumed"


def _said(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if text in record.getMessage()]


# --- Condition --------------------------------------------------------------------------


def test_a_condition_is_said_when_it_starts_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    condition = Condition(logging.getLogger("exporter.app"))
    with caplog.at_level(logging.INFO, logger="exporter.app"):
        for active in (False, True, True, True, False, False, True):
            condition.update(active, started="it began", ended="it is over", level=logging.ERROR)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "it began"),
        (logging.WARNING, "it is over"),
        (logging.ERROR, "it began"),
    ]
    assert condition.active


# --- Runtime.poll_and_log ---------------------------------------------------------------


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(demo_scenario_at(ManualClock(START)), tmp_path / "ledger.db")


@asynccontextmanager
async def _runtime(rig: Rig, **settings: object) -> AsyncIterator[Runtime]:
    """A Runtime around the rig's poller (closed by the rig, not by Runtime.close)."""
    async with rig.poller(**settings) as poller:
        config = Settings(
            base_url=rig.emulator.base_url, state_path=rig.ledger_path, http_addr=None
        )
        yield Runtime(config, poller.client, poller.ledger, rig.sink, poller, _api_key=API_KEY)


def _move_spool(path: Path, away: bool) -> None:
    names = ("spool", "spool_moved_away") if away else ("spool_moved_away", "spool")
    with sqlite3.connect(path) as db:
        db.execute(f"ALTER TABLE {names[0]} RENAME TO {names[1]}")


def test_a_failing_ledger_is_said_once_when_it_starts_and_once_when_it_ends(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    clock = rig.clock
    rig.scenario.add_history(JOKE, 2, every=60.0, duration=(1.0, 5.0))
    results: list[PollResult] = []

    async def body(rig: Rig) -> None:
        async with _runtime(rig, workflows=(JOKE,)) as runtime:
            results.append(await runtime.poll_and_log())
            _move_spool(rig.ledger_path, away=True)
            for _ in range(3):  # runs keep finishing while the ledger fails
                rig.scenario.add_run(JOKE, step_durations={"model": 1, "slack_integration": 1})
                clock.advance(POLL_INTERVAL)
                results.append(await runtime.poll_and_log())
            _move_spool(rig.ledger_path, away=False)
            for _ in range(2):
                clock.advance(POLL_INTERVAL)
                results.append(await runtime.poll_and_log())

    with caplog.at_level(logging.INFO):
        rig.run(body)

    assert [r.ledger_failed for r in results] == [False, True, True, True, False, False]
    assert len(_said(caplog, LEDGER_STARTED)) == 1
    assert len(_said(caplog, LEDGER_ENDED)) == 1
    assert _said(caplog, LEDGER_STARTED)[0].levelno == logging.WARNING
    error_lines = _said(caplog, "  cannot write the state file")
    assert len(error_lines) == 1, "the same error, poll after poll, is one line"
    # Nothing was lost meanwhile: the runs that ended during the failure are exported.
    assert rig.sink.trace_ids() == trace_ids_of(finished_runs(rig.scenario, JOKE))
    assert rig.sink.duplicates() == []


def test_a_rejected_key_is_said_once_and_its_recovery_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    clock = rig.clock
    rig.scenario.add_history(JOKE, 2, every=60.0, duration=(1.0, 5.0))
    health = []

    async def body(rig: Rig) -> None:
        async with _runtime(rig, workflows=(JOKE,)) as runtime:
            rig.emulator.api_key = "rotated-elsewhere"
            for _ in range(4):
                await runtime.poll_and_log()
                clock.advance(POLL_INTERVAL)
            state = runtime.telemetry.state
            health.append((state.auth_failing, runtime.telemetry.api_auth_failing._value.get()))
            rig.emulator.api_key = API_KEY
            for _ in range(2):
                await runtime.poll_and_log()
                clock.advance(POLL_INTERVAL)
            health.append((state.auth_failing, runtime.telemetry.api_auth_failing._value.get()))

    with caplog.at_level(logging.INFO):
        rig.run(body)

    assert health == [(True, 1), (False, 0)]
    started = _said(caplog, AUTH_STARTED)
    assert len(started) == 1 and started[0].levelno == logging.ERROR
    assert len(_said(caplog, AUTH_ENDED)) == 1
    assert len(_said(caplog, "  list_runs: the API answered 401")) == 1
    assert API_KEY not in caplog.text
    assert rig.sink.trace_ids() == trace_ids_of(finished_runs(rig.scenario, JOKE))


def test_a_rejected_key_is_said_once_also_when_ticks_between_retries_poll_nothing(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed listing is asked again after the interval; the min interval's ticks in
    between poll nothing, which says nothing of the key: no recovery, no new error line."""
    clock = rig.clock
    schedule = ScheduleSettings(interval_s=POLL_INTERVAL, min_interval_s=5.0)
    failing = []

    async def body(rig: Rig) -> None:
        async with _runtime(rig, workflows=(JOKE,), schedule=schedule) as runtime:
            for number in range(37):  # 0 to 180 s on 5 s ticks
                clock.set(START + number * 5.0)
                await runtime.poll_and_log()
                failing.append(runtime.telemetry.state.auth_failing)
                rig.emulator.api_key = "rotated-elsewhere"  # after discovery and a listing
            rig.emulator.api_key = API_KEY
            for number in range(37, 43):  # the retry at 210 s succeeds
                clock.set(START + number * 5.0)
                await runtime.poll_and_log()
            failing.append(runtime.telemetry.state.auth_failing)

    with caplog.at_level(logging.INFO):
        rig.run(body)

    # Idle after the first listing: asked again at 60 s, refused, retried every 30 s.
    assert failing == [False] * 12 + [True] * 25 + [False]
    assert len(_said(caplog, AUTH_STARTED)) == 1
    assert len(_said(caplog, AUTH_ENDED)) == 1
    assert len(_said(caplog, "  list_runs: the API answered 401")) == 1


def test_an_error_line_is_said_again_once_it_went_away_and_came_back(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.scenario.add_history(SUPPORT_TRIAGE_ID, 1, every=60.0)
    failing = FaultRule("status", kind="list_runs", status=500, times=None)
    sequence = [True, True, False, True, True]

    async def body(rig: Rig) -> None:
        async with _runtime(rig, workflows=(SUPPORT_TRIAGE_ID,)) as runtime:
            for fail in sequence:
                rig.emulator.faults.clear()
                if fail:
                    rig.emulator.faults.add(failing)
                await runtime.poll_and_log()
                rig.clock.advance(POLL_INTERVAL)

    with caplog.at_level(logging.INFO, logger="exporter.app"):
        rig.run(body)

    summaries = _said(caplog, "poll: 1 workflows")
    assert [r.levelno for r in summaries] == [
        logging.WARNING if fail else logging.INFO for fail in sequence
    ]
    assert len(_said(caplog, "  list_runs: the API answered 500")) == 2
