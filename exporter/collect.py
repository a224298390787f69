"""Workflows -> captures: which runs are due, their steps, and the spans mapped from them.

The request budget of docs/design.md ("Request budget") is kept here: per poll one history
request per workflow (further pages only while they still hold unseen runs), one steps
request per run that is in flight or just ended, and none for runs already captured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from contextlib import aclosing
from typing import TypeVar

from exporter.errors import ApiNotFoundError, ApiResponseTooLargeError
from exporter.mapping.ids import trace_id_for_run
from exporter.mapping.options import MappingOptions
from exporter.mapping.spans import RunSpans, WorkflowInfo, map_run
from exporter.mapping.timeparse import lenient_timestamp_ns
from exporter.problems import ProblemReporter
from exporter.results import PollResult
from exporter.source.client import OrchestraClient
from exporter.source.history import HistoryPaginator
from exporter.source.models import Run
from exporter.spool import outgoing_log, outgoing_span
from exporter.state import Capture, Ledger

_NS = 1_000_000_000
_T = TypeVar("_T")
# A run whose answers exceed a bound this many polls in a row is given up: asking again
# would only fetch the same oversized answer again (docs/design.md, "Bounds").
MAX_UNREADABLE_TRIES = 3
MAX_REMEMBERED_OUTSIDE = 10_000  # per workflow: 100 history pages


class CollectObserver:
    """Told what the collector saw, for the metrics (the runs in flight, zero series)."""

    def listed(self, info: WorkflowInfo, due: Sequence[Run]) -> None:
        """The runs of one workflow that are unseen or unfinished, after a good listing."""

    def mapped(self, spans: RunSpans) -> None:
        """The spans just mapped from one run's steps."""


class Collector:
    """Finds the due runs of each workflow and maps what the ledger has not captured.

    Invariants: a run whose root was captured is never fetched again; a run that is tracked
    but fell off the history pages is fetched by id until it ends or is gone (404). Called
    by the poll cycle (`collect`) and by `backfill` and `export-run` (`collect_run`).
    """

    def __init__(
        self,
        client: OrchestraClient,
        ledger: Ledger,
        options: MappingOptions,
        paginator: HistoryPaginator,
        reporter: ProblemReporter,
        *,
        lookback_s: float,
        clock: Callable[[], float] = time.time,
        observer: CollectObserver | None = None,
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._options = options
        self._paginator = paginator
        self._reporter = reporter
        self._lookback_s = lookback_s
        self._clock = clock
        self._observer = observer or CollectObserver()
        # Per workflow: unseen runs that ended before its window. The window only moves
        # up, so they stay outside; they are skipped without parsing or a ledger lookup.
        self._outside: dict[str, set[str]] = {}

    async def collect(self, workflows: Iterable[WorkflowInfo], result: PollResult) -> list[Capture]:
        per_workflow = [self._collect_workflow(info, result) for info in workflows]
        return [c for found in await settle_all(per_workflow, result) for c in found]

    async def _collect_workflow(self, info: WorkflowInfo, result: PollResult) -> list[Capture]:
        now_ns = int(self._clock() * _NS)
        since = self._ledger.workflow_since(info.workflow_id)
        if since is None:
            first_since = now_ns - int(self._lookback_s * _NS)
            since = self._ledger.register_workflow(
                info.workflow_id, since_ns=first_since, now_ns=now_ns
            )
        due = await self._due_runs(info.workflow_id, since, now_ns)
        self._observer.listed(info, due)
        result.runs_seen += len(due)
        captures = await settle_all([self.collect_run(info, run, result) for run in due], result)
        return [capture for capture in captures if capture is not None]

    async def _due_runs(self, workflow_id: str, since_ns: int, now_ns: int) -> list[Run]:
        """Runs of the history that are unseen or unfinished, paging only as far as needed."""
        due: dict[str, Run] = {}
        outside = self._outside.setdefault(workflow_id, set())
        async with aclosing(self._paginator.pages(workflow_id)) as pages:
            async for page in pages:
                fresh = [run for run in page if run.id not in outside]
                states = self._ledger.run_states(workflow_id, [run.id for run in fresh])
                oldest_unseen = False
                for run in page:
                    state = states.get(run.id)
                    oldest_unseen = state is None and self._inside(run, since_ns, outside)
                    if oldest_unseen or (state is not None and not state.done):
                        due.setdefault(run.id, run)
                # Newest first: the next page can hold unseen runs only if this page's
                # oldest run is unseen too (the runs before it were seen in earlier polls).
                if not oldest_unseen:
                    break
        self._ledger.track_runs(workflow_id, [(r.id, r.status) for r in due.values()], now_ns)
        for run_id in self._ledger.open_runs(workflow_id):
            if run_id not in due:  # fell off the history pages while still open
                tracked = await self._run_by_id(workflow_id, run_id, now_ns)
                if tracked is not None:
                    due[run_id] = tracked
        return list(due.values())

    def _inside(self, run: Run, since_ns: int, outside: set[str]) -> bool:
        """Whether an unseen run ended within the export window; remembers those that did
        not, so the runs before the window (every listing shows them) are judged once."""
        if run.id in outside:
            return False
        if not _ended_before(run, since_ns):
            return True
        if len(outside) >= MAX_REMEMBERED_OUTSIDE:
            outside.clear()
        outside.add(run.id)
        return False

    async def _run_by_id(self, workflow_id: str, run_id: str, now_ns: int) -> Run | None:
        try:
            return await self._client.get_run(workflow_id, run_id)
        except ApiNotFoundError:
            # Gone from the API: close it, or it would be asked for at every poll.
            trace_id = trace_id_for_run(run_id)
            self._reporter.once(
                f"run {run_id}", "tracked run no longer exists (404)", trace_id=trace_id
            )
            self._ledger.capture([Capture.closed(workflow_id, run_id)], now_ns)
            return None

    async def collect_run(
        self,
        info: WorkflowInfo,
        run: Run,
        result: PollResult,
        *,
        already: AbstractSet[str] | None = None,
    ) -> Capture | None:
        """Fetch a run's steps and map those not captured yet (`already`: from the ledger)."""
        captured = self._ledger.captured_steps(run.id) if already is None else already
        try:
            steps = await self._client.get_steps(info.workflow_id, run.id)
        except ApiResponseTooLargeError as exc:
            if not self._give_up(info.workflow_id, run, exc):
                raise  # a bare raise: the frames go with the exception, not with us
            return Capture.closed(info.workflow_id, run.id, run.status)
        mapped = map_run(info, run, steps, self._options, already_exported=captured)
        self._observer.mapped(mapped)
        self._reporter.mapping_problems(info.workflow_id, mapped.problems, mapped.trace_id)
        self._reporter.unpriced(mapped.unpriced_models)
        if not mapped.run_terminal:
            result.runs_in_flight += 1
        return capture_of(info.workflow_id, run, mapped)

    def _give_up(self, workflow_id: str, run: Run, exc: ApiResponseTooLargeError) -> bool:
        """Count an answer past the bounds; True once the run is to be given up."""
        tries = self._ledger.note_unreadable(workflow_id, run.id)
        if tries < MAX_UNREADABLE_TRIES:
            return False
        self._reporter.skipped("run")
        trace_id = trace_id_for_run(run.id)
        self._reporter.once(
            f"run {run.id}", f"skipped after {tries} tries: {exc}", trace_id=trace_id
        )
        return True


async def settle_all(jobs: Sequence[Awaitable[_T]], result: PollResult) -> list[_T]:
    """Run concurrently; failures are noted in the result, the others are returned."""
    done: list[_T] = []
    for item in await asyncio.gather(*jobs, return_exceptions=True):
        if isinstance(item, Exception):
            result.note_error(item)
        elif isinstance(item, BaseException):
            raise item
        else:
            done.append(item)
    return done


def capture_of(workflow_id: str, run: Run, mapped: RunSpans) -> Capture | None:
    # A terminal run whose root could not be built is done all the same: polling it
    # again would only repeat the same problem.
    if not mapped.steps and mapped.root is None and not mapped.run_terminal:
        return None
    return Capture(
        workflow_id=workflow_id,
        run_id=run.id,
        status=run.status,
        steps=tuple(mapped.steps),
        outgoing=(
            *(outgoing_span(span) for span in mapped.all_spans()),
            *(outgoing_log(record) for record in mapped.logs),
        ),
        run_done=mapped.run_terminal,
    )


def _ended_before(run: Run, since_ns: int) -> bool:
    """True for runs that finished before this workflow's export window opened.

    A run whose end cannot be read counts as inside: export rather than lose it.
    """
    end = lenient_timestamp_ns(run.end_time)
    return end is not None and end < since_ns
