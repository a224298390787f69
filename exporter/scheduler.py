"""The daemon's schedule: APScheduler jobs for discovery and polling, clean shutdown.

Each concern is one job with ``max_instances=1`` and ``coalesce=True``: a slow poll
never overlaps the next, and polls missed while one ran collapse into one. Job errors
are logged by a listener that never raises. SIGTERM/SIGINT stop the schedule, let the
poll under way finish its export (bounded), and return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from exporter.logs import Condition

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 20.0


class Daemon:
    """`orchestra-otel run`: the poll and discovery jobs on an AsyncIOScheduler.

    Invariants: one poll at a time (max_instances=1, missed runs coalesced); a job that
    raises is logged and the next run goes on; on SIGTERM/SIGINT the poll under way gets
    SHUTDOWN_GRACE_S to finish before it is cancelled. Built by cli.py around a Runtime.
    """

    def __init__(
        self,
        poll: Callable[[], Awaitable[None]],
        discover: Callable[[], Awaitable[None]],
        *,
        poll_interval: float,
        discovery_interval: float,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
        on_overrun: Callable[[], None] = lambda: None,
    ) -> None:
        self._poll = poll
        self._overruns = Overruns(poll_interval, on_overrun)
        self._discover = discover
        self._poll_interval = poll_interval
        self._discovery_interval = discovery_interval
        self._shutdown_grace_s = shutdown_grace_s
        self._stop = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, duration: float | None = None) -> None:
        scheduler = AsyncIOScheduler(timezone=timezone.utc, logger=_SchedulerLog())
        scheduler.add_listener(_log_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        scheduler.add_listener(self._overruns.event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_EXECUTED)
        now = datetime.now(timezone.utc)
        common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        scheduler.add_job(
            self._guarded(self._poll, "poll"),
            "interval",
            seconds=self._poll_interval,
            next_run_time=now,
            id="poll",
            **common,
        )
        scheduler.add_job(
            self._guarded(self._discover, "discovery"),
            "interval",
            seconds=self._discovery_interval,
            next_run_time=now + timedelta(seconds=self._discovery_interval),
            id="discovery",
            **common,
        )
        self._install_signal_handlers()
        scheduler.start()
        try:
            if duration is None:
                await self._stop.wait()
            else:
                await asyncio.wait_for(self._stop.wait(), timeout=duration)
        except asyncio.TimeoutError:
            pass
        finally:
            # Pause first: shutting the scheduler down would cancel the job under way,
            # and with it an export that is about to be confirmed.
            scheduler.pause()
            await self._finish_running()
            scheduler.shutdown(wait=False)

    def _guarded(
        self, job: Callable[[], Awaitable[None]], name: str
    ) -> Callable[[], Awaitable[None]]:
        async def run_job() -> None:
            if self._stop.is_set():
                return
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            try:
                await job()
            except asyncio.CancelledError:
                # Only shutdown cancels a job, after its grace: what it had not confirmed
                # stays spooled for the next start. Not an error.
                log.warning("%s cancelled at shutdown; unconfirmed spans stay spooled", name)
            except Exception:
                log.exception("%s failed unexpectedly; the next run will try again", name)
            finally:
                self._running.discard(task)

        run_job.__name__ = f"{name}_job"
        return run_job

    async def _finish_running(self) -> None:
        """Let a poll under way finish its export; past the grace period, cancel it.

        A cancelled export is not recorded in the ledger, so it is sent again next time.
        """
        if not self._running:
            return
        grace = self._shutdown_grace_s
        log.info("stopping: waiting up to %.0fs for the poll under way", grace)
        pending = set(self._running)
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=2.0)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Not possible outside the main thread (tests embed the daemon): skip then.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            return
        log.info("received %s: finishing up", sig.name)
        self._stop.set()


def _log_job_event(event: JobExecutionEvent) -> None:
    try:
        if event.code == EVENT_JOB_MISSED:
            log.debug("job %s missed its slot (previous run still going)", event.job_id)
        elif event.exception is not None:
            log.error("job %s failed: %s", event.job_id, event.exception)
    except Exception:  # a listener must never raise into the scheduler
        pass


class _SchedulerLog(logging.LoggerAdapter[logging.Logger]):
    """APScheduler's own log, with its warning at every tick a slow poll skips said at
    DEBUG: Overruns counts those ticks and says once when polls fall behind. Setting the
    `apscheduler` logger's level is not enough: at debug level the warning would be back.
    """

    def __init__(self) -> None:
        super().__init__(logging.getLogger("apscheduler.scheduler"), {})

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        skipped = isinstance(msg, str) and "maximum number of running instances" in msg
        self.log(logging.DEBUG if skipped else logging.WARNING, msg, *args, **kwargs)


class Overruns:
    """Polls that outlast their interval: counted, and said when it starts and ends.

    A slow poll skips the ticks it overlaps (max_instances=1); that is a fact for a metric
    and for one log line when polls start falling behind and one when they catch up, not
    a warning at every tick (APScheduler's own is said at DEBUG: `_SchedulerLog`).
    A listener: it never raises into the scheduler.
    """

    def __init__(self, interval: float, on_overrun: Callable[[], None]) -> None:
        self._on_overrun = on_overrun
        self._behind = Condition(log)
        self._skipped_since_last = 0
        self._started = (
            f"a poll takes longer than the {interval:g}s interval: ticks are skipped until "
            "it ends (orchestra_otel_poll_overruns_total)"
        )
        self._ended = f"polls keep up with the {interval:g}s interval again"

    def event(self, event: JobEvent) -> None:
        try:
            if event.job_id != "poll":
                return
            if event.code == EVENT_JOB_MAX_INSTANCES:
                self._skipped_since_last += 1
                self._on_overrun()
                self._say(behind=True)
            elif event.code == EVENT_JOB_EXECUTED:
                # Behind until a poll ends with no tick skipped since the one before.
                self._say(behind=self._skipped_since_last > 0)
                self._skipped_since_last = 0
        except Exception:  # a listener must never raise into the scheduler
            pass

    def _say(self, *, behind: bool) -> None:
        self._behind.update(
            behind,
            started=self._started,
            ended=self._ended,
            level=logging.INFO,
            ended_level=logging.INFO,
        )
