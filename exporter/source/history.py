"""One workflow's run history, page by page, bounded whatever the API does.

The history endpoint pages with `limit`/`offset`, newest first, and says nothing about
totals (docs/orchestra-api.md, "Execution history"). An API that ignores `offset` would
answer the same page forever, so a pass ends when a page brings no run id it has not
already brought, when a page is short, or at a page cap; the caller may stop earlier
(the poll cycle stops once it reaches runs it has seen before). Used by the poll cycle
and by `backfill`, so both stop the same way.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Final, Literal, Protocol

from exporter.source.client import MAX_PAGE_SIZE
from exporter.source.models import Run

POLL_MAX_PAGES: Final = 100  # 10,000 runs of one workflow between two polls
BACKFILL_MAX_PAGES: Final = 10_000

StopReason = Literal["repeated", "capped"]
# Told when a pass ends for a reason that points at the API, not at the history's end.
StopHandler = Callable[[str, StopReason, int], None]


class RunLister(Protocol):
    async def list_runs(self, workflow_id: str, *, limit: int, offset: int) -> list[Run]: ...


class HistoryPaginator:
    """Yields the runs of each history page that no earlier page of this pass brought."""

    def __init__(self, client: RunLister, *, max_pages: int, on_stop: StopHandler) -> None:
        self._client = client
        self._max_pages = max_pages
        self._on_stop = on_stop

    async def pages(self, workflow_id: str) -> AsyncGenerator[list[Run], None]:
        seen: set[str] = set()
        offset = 0
        for _ in range(self._max_pages):
            page = await self._client.list_runs(workflow_id, limit=MAX_PAGE_SIZE, offset=offset)
            fresh = _unseen(page, seen)
            if page and not fresh:
                self._on_stop(workflow_id, "repeated", offset)
                return
            yield fresh
            if len(page) < MAX_PAGE_SIZE:
                return
            offset += len(page)
        self._on_stop(workflow_id, "capped", offset)


def _unseen(page: list[Run], seen: set[str]) -> list[Run]:
    """The runs of `page` not met before in this pass; remembers them."""
    fresh = []
    for run in page:
        if run.id not in seen:
            seen.add(run.id)
            fresh.append(run)
    return fresh
