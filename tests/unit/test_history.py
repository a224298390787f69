"""HistoryPaginator: one workflow's run history, bounded whatever the API does.

A pass ends on a short page, on a page that brings no run id the pass has not seen (an
API ignoring `offset`), at the page cap, or when the consumer stops; the last two that
point at the API are told to the callback (exporter/source/history.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import aclosing

from exporter.source.client import MAX_PAGE_SIZE
from exporter.source.history import HistoryPaginator, StopReason
from exporter.source.models import Run

WF = "wf-1"
PageSource = Callable[[int, int], Sequence[str]]  # (offset, limit) -> run ids


class FakeLister:
    """Answers list_runs from `source`; remembers every request."""

    def __init__(self, source: PageSource) -> None:
        self._source = source
        self.requests: list[tuple[str, int, int]] = []

    async def list_runs(self, workflow_id: str, *, limit: int, offset: int) -> list[Run]:
        self.requests.append((workflow_id, limit, offset))
        return [Run(id=run_id) for run_id in self._source(offset, limit)]


def history_of(count: int) -> PageSource:
    """A well-behaved history of `count` runs, newest first."""
    ids = [f"run-{i:05d}" for i in range(count)]
    return lambda offset, limit: ids[offset : offset + limit]


def _run_pass(
    lister: FakeLister, *, max_pages: int = 100, stop_after: int | None = None
) -> tuple[list[list[str]], list[tuple[str, StopReason, int]]]:
    """Pages yielded (as run ids) and the stop callbacks, for one pass over WF."""
    stops: list[tuple[str, StopReason, int]] = []
    paginator = HistoryPaginator(
        lister, max_pages=max_pages, on_stop=lambda *why: stops.append(why)
    )

    async def consume() -> list[list[str]]:
        pages: list[list[str]] = []
        async with aclosing(paginator.pages(WF)) as stream:
            async for page in stream:
                pages.append([run.id for run in page])
                if stop_after is not None and len(pages) >= stop_after:
                    break
        return pages

    return asyncio.run(consume()), stops


def test_a_short_page_ends_the_pass() -> None:
    lister = FakeLister(history_of(250))
    pages, stops = _run_pass(lister)
    assert [len(page) for page in pages] == [100, 100, 50]
    assert [offset for _, _, offset in lister.requests] == [0, 100, 200]
    assert all(limit == MAX_PAGE_SIZE for _, limit, _ in lister.requests)
    assert stops == []  # the history's end, not a fault of the API
    assert len({run for page in pages for run in page}) == 250


def test_an_empty_page_after_a_full_one_ends_the_pass() -> None:
    lister = FakeLister(history_of(200))
    pages, stops = _run_pass(lister)
    assert [len(page) for page in pages] == [100, 100, 0]
    assert len(lister.requests) == 3 and stops == []


def test_an_empty_history_is_one_request() -> None:
    lister = FakeLister(history_of(0))
    pages, stops = _run_pass(lister)
    assert pages == [[]] and len(lister.requests) == 1 and stops == []


def test_a_page_of_runs_already_seen_ends_the_pass_and_says_so() -> None:
    """An API that ignores offset answers the first page forever."""
    first_page = [f"run-{i:05d}" for i in range(MAX_PAGE_SIZE)]
    lister = FakeLister(lambda offset, limit: first_page)
    pages, stops = _run_pass(lister)
    assert pages == [first_page]
    assert len(lister.requests) == 2
    assert stops == [(WF, "repeated", MAX_PAGE_SIZE)]


def test_a_page_that_overlaps_yields_only_the_new_runs_and_goes_on() -> None:
    """New runs arriving between two requests push older ones onto the next page."""
    ids = [f"run-{i:05d}" for i in range(160)]

    def shifting(offset: int, limit: int) -> list[str]:
        start = offset - 30 if offset else 0  # 30 runs arrived: page 2 repeats 30
        return ids[start : start + limit]

    lister = FakeLister(shifting)
    pages, stops = _run_pass(lister)
    assert [len(page) for page in pages] == [100, 60]
    assert pages[1] == ids[100:160]
    assert stops == []


def test_duplicate_ids_inside_one_page_are_yielded_once() -> None:
    lister = FakeLister(lambda offset, limit: ["a", "b", "a", "c", "b"])
    pages, stops = _run_pass(lister)
    assert pages == [["a", "b", "c"]] and stops == []
    assert len(lister.requests) == 1  # a short page: the end


def test_the_page_cap_ends_an_endless_history_and_says_so() -> None:
    lister = FakeLister(lambda offset, limit: [f"run-{offset + i}" for i in range(limit)])
    pages, stops = _run_pass(lister, max_pages=3)
    assert len(pages) == 3 and len(lister.requests) == 3
    assert stops == [(WF, "capped", 3 * MAX_PAGE_SIZE)]


def test_a_consumer_that_stops_early_costs_no_further_request() -> None:
    lister = FakeLister(history_of(1_000))
    pages, stops = _run_pass(lister, stop_after=2)
    assert len(pages) == 2
    assert [offset for _, _, offset in lister.requests] == [0, 100]
    assert stops == []  # stopping by choice is not a fault of the API


def test_each_pass_starts_afresh() -> None:
    """Ids seen in one pass do not count as repeated in the next (the next poll)."""
    lister = FakeLister(history_of(50))
    paginator = HistoryPaginator(lister, max_pages=10, on_stop=lambda *why: None)

    async def two_passes() -> list[int]:
        sizes = []
        for _ in range(2):
            async with aclosing(paginator.pages(WF)) as stream:
                sizes.extend([len(page) async for page in stream])
        return sizes

    assert asyncio.run(two_passes()) == [50, 50]
    assert len(lister.requests) == 2
