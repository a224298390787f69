"""The daemon's schedule in process: no overlap, coalescing, errors, a bounded stop.

Invariants (exporter/scheduler.py): a poll slower than the interval never overlaps the
next, and the slots it missed collapse into one poll; a poll that raises is logged and
the next one runs; stopping lets the poll under way finish within the grace and cancels
it past the grace. Intervals are tens of milliseconds and the tests count polls rather
than time them: the sleeps below only let slots go by, the asserts never depend on how
many.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest

from exporter.scheduler import Daemon

INTERVAL = 0.02
MISSED = 10 * INTERVAL  # long enough for several slots to go by
WAIT = 10.0  # generous bound for what should happen at once


class Polls:
    """A poll job whose n-th call runs `behaviour(n)`, counting calls and overlap."""

    def __init__(self, behaviour: Callable[[int], Awaitable[None]]) -> None:
        self._behaviour = behaviour
        self.calls = 0
        self.active = 0
        self.most_active = 0
        self.finished = 0
        self.cancelled = 0
        self.started: dict[int, asyncio.Event] = {}

    def event(self, call: int) -> asyncio.Event:
        return self.started.setdefault(call, asyncio.Event())

    async def __call__(self) -> None:
        self.calls += 1
        number = self.calls
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.event(number).set()
        try:
            await self._behaviour(number)
            self.finished += 1
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


async def _nothing() -> None:
    return None


def _daemon(polls: Polls, **options: float) -> Daemon:
    return Daemon(polls, _nothing, poll_interval=INTERVAL, discovery_interval=3600.0, **options)


async def _started(polls: Polls, call: int) -> None:
    await asyncio.wait_for(polls.event(call).wait(), WAIT)


def _stop_once_started(polls: Polls, call: int, **options: float) -> None:
    """Run the daemon until poll number `call` has started, then stop it and wait."""

    async def main() -> None:
        daemon = _daemon(polls, **options)
        running = asyncio.create_task(daemon.run())
        await _started(polls, call)
        daemon.request_stop()
        await asyncio.wait_for(running, WAIT)

    asyncio.run(main())


def test_a_slow_poll_never_overlaps_the_next() -> None:
    release = asyncio.Event()

    async def behaviour(number: int) -> None:
        if number == 1:
            await release.wait()

    polls = Polls(behaviour)

    async def main() -> tuple[int, int]:
        daemon = _daemon(polls)
        running = asyncio.create_task(daemon.run())
        await _started(polls, 1)
        await asyncio.sleep(MISSED)
        during = polls.calls
        release.set()
        await _started(polls, 3)  # polling goes on afterwards
        daemon.request_stop()
        await asyncio.wait_for(running, WAIT)
        return during, polls.most_active

    during, most_active = asyncio.run(main())
    assert during == 1, "no second poll may start while the first runs"
    assert most_active == 1


def test_slots_missed_while_the_loop_was_blocked_collapse_into_one_poll() -> None:
    """A poll that holds the event loop (CPU-bound mapping of a huge run) lets ten slots
    pass; afterwards one poll runs, not a burst of ten back to back."""

    async def behaviour(number: int) -> None:
        if number == 1:
            time.sleep(MISSED)  # blocks the loop itself: the scheduler cannot even wake

    polls = Polls(behaviour)

    async def main() -> int:
        daemon = _daemon(polls)
        running = asyncio.create_task(daemon.run())
        await _started(polls, 2)
        # Read before the loop runs anything else: a burst of missed slots would run
        # within the same job without ever yielding to this task.
        after_stall = polls.calls
        daemon.request_stop()
        await asyncio.wait_for(running, WAIT)
        return after_stall

    assert asyncio.run(main()) == 2
    assert polls.most_active == 1


def test_a_poll_that_raises_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def behaviour(number: int) -> None:
        if number == 1:
            raise RuntimeError("the poll broke")

    polls = Polls(behaviour)
    with caplog.at_level(logging.ERROR, logger="exporter.scheduler"):
        _stop_once_started(polls, 2)

    failures = [r for r in caplog.records if "poll failed unexpectedly" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None and "the poll broke" in str(failures[0].exc_info[1])
    assert polls.finished >= 1, "the poll after the failure ran to its end"


def test_stop_lets_the_poll_under_way_finish_within_the_grace() -> None:
    release = asyncio.Event()

    async def behaviour(number: int) -> None:
        await release.wait()

    polls = Polls(behaviour)

    async def main() -> tuple[bool, int]:
        daemon = _daemon(polls, shutdown_grace_s=WAIT)
        running = asyncio.create_task(daemon.run())
        await _started(polls, 1)
        daemon.request_stop()
        await asyncio.sleep(MISSED)  # slots go by: none may start a poll now
        still_waiting = not running.done()
        release.set()
        await asyncio.wait_for(running, WAIT)
        return still_waiting, polls.calls

    still_waiting, calls = asyncio.run(main())
    assert still_waiting, "run() must wait for the poll under way"
    assert calls == 1
    assert (polls.finished, polls.cancelled) == (1, 0)


def test_a_poll_that_outlasts_the_grace_is_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    async def behaviour(number: int) -> None:
        await asyncio.Event().wait()  # an export that hangs

    polls = Polls(behaviour)
    with caplog.at_level(logging.WARNING, logger="exporter.scheduler"):
        _stop_once_started(polls, 1, shutdown_grace_s=0.05)

    assert (polls.finished, polls.cancelled) == (0, 1)
    said = [r.getMessage() for r in caplog.records]
    assert "poll cancelled at shutdown; unconfirmed spans stay spooled" in said


def test_polls_that_fall_behind_are_counted_and_said_once_each_way_never_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two polls in a row outlast several ticks each, then polls are quick again: every
    skipped tick is counted, one INFO line says polls fall behind and one that they keep
    up again; APScheduler itself says the skips at DEBUG at most, never as a WARNING
    (its logger is captured at DEBUG here, as ORCHESTRA_LOG_LEVEL=debug would set it).

    Ticks of 0.1 s: a quick poll counts as an overrun too when the event loop stalls
    for a whole tick, which the stop right after the keep-up line leaves no time for."""
    interval = 0.1
    releases = {1: asyncio.Event(), 2: asyncio.Event()}

    async def behaviour(number: int) -> None:
        if number in releases:
            await releases[number].wait()

    polls = Polls(behaviour)
    overruns: list[int] = []

    def said(text: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if text in r.getMessage()]

    async def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(interval / 4)

    async def main() -> tuple[int, int]:
        daemon = Daemon(
            polls,
            _nothing,
            poll_interval=interval,
            discovery_interval=3600.0,
            on_overrun=lambda: overruns.append(polls.calls),
        )
        running = asyncio.create_task(daemon.run())
        await _started(polls, 1)
        await until(lambda: len(overruns) >= 3, "ticks skipped during poll 1")
        releases[1].set()
        await _started(polls, 2)
        during_first = len(overruns)
        await until(lambda: len(overruns) >= during_first + 3, "ticks skipped during poll 2")
        caught_up_before_the_end = len(said("keep up"))
        releases[2].set()
        await until(lambda: bool(said("keep up")), "the keep-up line")
        daemon.request_stop()
        await asyncio.wait_for(running, WAIT)
        return caught_up_before_the_end, polls.most_active

    caplog.set_level(logging.INFO, logger="exporter.scheduler")
    caplog.set_level(logging.DEBUG, logger="apscheduler")  # last: the handler keeps DEBUG
    caught_up_too_early, most_active = asyncio.run(main())

    assert most_active == 1
    assert caught_up_too_early == 0, "still behind while the second slow poll runs"
    behind, keep_up = said("takes longer than the 0.1s interval"), said("keep up")
    assert [r.levelno for r in behind] == [logging.INFO]
    assert [r.levelno for r in keep_up] == [logging.INFO]
    assert caplog.records.index(behind[0]) < caplog.records.index(keep_up[0])
    assert {1, 2} <= set(overruns), "ticks skipped during both slow polls"
    from_apscheduler = [r for r in caplog.records if r.name.startswith("apscheduler")]
    skipped = [r for r in from_apscheduler if "maximum number of running" in r.getMessage()]
    assert len(skipped) == len(overruns), "the skips APScheduler saw are the ones counted"
    assert [r for r in from_apscheduler if r.levelno >= logging.WARNING] == []
