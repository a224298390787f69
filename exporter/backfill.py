"""`orchestra-otel backfill`: export the run history of a time window, resumably.

Pages each workflow's history as far as the API allows, skips runs the ledger already
captured (so an interrupted backfill resumes where it stopped), and pipelines: while one
chunk of runs is exported, the steps of the next chunk are fetched.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TextIO

from exporter.collect import settle_all
from exporter.delivery import Delivery
from exporter.errors import ConfigError, MappingError
from exporter.mapping.spans import WorkflowInfo
from exporter.mapping.steps import run_ended
from exporter.mapping.timeparse import lenient_timestamp_ns, parse_timestamp_ns
from exporter.poller import Poller
from exporter.results import PollResult
from exporter.source.history import BACKFILL_MAX_PAGES, HistoryPaginator
from exporter.source.models import Run
from exporter.state import Ledger

log = logging.getLogger(__name__)

_NS = 1_000_000_000
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
CHUNK_RUNS = 32


def parse_time_arg(value: str, *, now: float, flag: str) -> int:
    """`2025-03-01`, `2025-03-01T10:00:00Z`, or a duration ago such as `36h` or `7d`."""
    relative = _RELATIVE.match(value)
    if relative:
        seconds = float(relative[1]) * _UNIT_SECONDS[relative[2]]
        return int((now - seconds) * _NS)
    text = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        text += "T00:00:00Z"
    try:
        return parse_timestamp_ns(text)
    except MappingError as exc:
        raise ConfigError(
            [f"{flag}: {value!r} is not a time (use 2025-03-01, 2025-03-01T10:00:00Z or 36h)"]
        ) from exc


@dataclass(frozen=True)
class Window:
    since_ns: int
    until_ns: int
    workflows: tuple[str, ...] = ()  # empty: every workflow the poller owns

    def holds(self, run: Run) -> bool:
        start = lenient_timestamp_ns(run.start_time)
        moment = start if start is not None else lenient_timestamp_ns(run.end_time)
        return moment is not None and self.since_ns <= moment <= self.until_ns


@dataclass
class Progress:
    """Runs and spans found and done, shown on a terminal or as periodic log lines."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    runs_found: int = 0
    runs_skipped: int = 0
    runs_done: int = 0
    spans_done: int = 0
    started: float = field(default_factory=time.monotonic)
    _last_shown: float = 0.0

    def show(self, *, final: bool = False) -> None:
        now = time.monotonic()
        interactive = self.stream.isatty()
        if not final and now - self._last_shown < (0.5 if interactive else 10.0):
            return
        self._last_shown = now
        line = self.line(now)
        if interactive:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
            self.stream.flush()
        else:
            log.info("%s", line)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = self.spans_done / elapsed
        todo = self.runs_found - self.runs_done
        runs_rate = self.runs_done / elapsed
        eta = f"{todo / runs_rate:.0f}s" if runs_rate > 0 and todo > 0 else "-"
        return (
            f"backfill: runs {self.runs_done}/{self.runs_found} "
            f"({self.runs_skipped} already exported), spans {self.spans_done}, "
            f"{rate:.0f} spans/s, ETA {eta}"
        )


async def backfill(poller: Poller, window: Window, progress: Progress) -> PollResult:
    """Export the finished runs of the window that the ledger has not captured yet."""
    result = PollResult()
    before = poller.client.stats.total_requests
    workflows, collector, delivery = poller.workflows, poller.collector, poller.delivery
    if not workflows.discovered:
        await workflows.refresh()
    infos = [workflows.info(wid) for wid in (window.workflows or tuple(workflows.workflows))]
    result.workflows = len(infos)
    paginator = poller.history_paginator(BACKFILL_MAX_PAGES)
    queue: list[tuple[WorkflowInfo, Run]] = []
    for info in infos:
        found = await _runs_in_window(paginator, poller.ledger, info, window, progress)
        queue.extend((info, run) for run in found)
    progress.show()
    flushing: asyncio.Task[None] | None = None
    for start in range(0, len(queue), CHUNK_RUNS):
        chunk = queue[start : start + CHUNK_RUNS]
        captures = await settle_all([collector.collect_run(i, r, result) for i, r in chunk], result)
        if flushing is not None:
            await flushing  # one export under way at a time; the spool keeps the rest
        delivery.capture([c for c in captures if c is not None], result)
        progress.runs_done += len(chunk)
        flushing = asyncio.create_task(_flush(delivery, result, progress))
    if flushing is not None:
        await flushing
    await _flush(delivery, result, progress)
    progress.show(final=True)
    result.runs_seen = progress.runs_found
    result.requests = poller.client.stats.total_requests - before
    return result


async def _flush(delivery: Delivery, result: PollResult, progress: Progress) -> None:
    before = result.spans_exported
    await delivery.flush(result, force=True)
    progress.spans_done += result.spans_exported - before
    progress.show()


async def _runs_in_window(
    paginator: HistoryPaginator,
    ledger: Ledger,
    info: WorkflowInfo,
    window: Window,
    progress: Progress,
) -> list[Run]:
    """Finished runs of the window not yet captured, paging the history while it lasts."""
    found: list[Run] = []
    async with aclosing(paginator.pages(info.workflow_id)) as pages:
        async for page in pages:
            states = ledger.run_states(info.workflow_id, [run.id for run in page])
            for run in page:
                if not window.holds(run) or not run_ended(run):
                    continue
                progress.runs_found += 1
                state = states.get(run.id)
                if state is not None and state.done:
                    progress.runs_skipped += 1
                    progress.runs_done += 1
                    continue
                found.append(run)
            if _all_older(page, window.since_ns):
                break
    return found


def _all_older(page: Sequence[Run], since_ns: int) -> bool:
    """History is newest first: once a whole page started before the window, stop."""
    starts = [lenient_timestamp_ns(run.start_time) for run in page]
    return all(start is not None and start < since_ns for start in starts)


def describe_window(window: Window) -> str:
    def fmt(ns: int) -> str:
        return datetime.fromtimestamp(ns / _NS, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")

    return f"{fmt(window.since_ns)} .. {fmt(window.until_ns)}"
