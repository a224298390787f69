"""Async client of the Orchestra workflow API: the endpoints the exporter reads.

Polite by construction: bounded concurrency, jittered exponential backoff on timeouts,
429 and 5xx, and a `Retry-After` pauses the whole client (every endpoint), because a
rate limit applies to the key, not to one URL. httpx errors are translated into our
exception tree at this one boundary (the transport in transport.py and answers.py),
and nothing we raise or log carries the key.

Bounded against a broken or hostile API too: each attempt has one deadline for the whole
exchange (a body trickled byte by byte cannot hold it), answers are read up to a byte
cap and decoded up to a record cap (exporter/source/body.py), a Retry-After pauses for
at most `RetryPolicy.max_retry_after` (pause.py), and every id is quoted into exactly
one path segment, so an id such as `../x` or `r?a=1` cannot send the key to another path.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Final, TypeVar
from urllib.parse import quote

import httpx

from exporter.errors import ApiRequestError, ApiResponseError
from exporter.source.body import DEFAULT_MAX_RECORDS, DEFAULT_MAX_RESPONSE_BYTES
from exporter.source.models import RejectedRecord, Run, Step, Workflow, parse_records
from exporter.source.retry import RetryPolicy
from exporter.source.stats import ClientStats
from exporter.source.transport import ApiTransport

__all__ = ["DEFAULT_BASE_URL", "MAX_PAGE_SIZE", "ClientStats", "OrchestraClient", "RejectHandler"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://orchestra.arcee.ai/api/v1/workflow"
MAX_PAGE_SIZE: Final = 100  # the documented default and the most the history returns

RecordT = TypeVar("RecordT", Run, Step, Workflow)
RejectHandler = Callable[[str, RejectedRecord], None]


class OrchestraClient:
    """The API's read endpoints as typed records: workflows, runs, steps, diagrams.

    Each endpoint method makes one GET through the transport (retried, bounded) and
    parses the answer's records; a record that does not parse is skipped and handed to
    `on_rejected` (or logged), never raised. `stats` counts what was asked and how it
    ended. Used by the poller, discovery and backfill (exporter/collect.py,
    exporter/discovery.py), built by exporter/app.py from the settings.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        verify: bool | str = True,
        on_rejected: RejectHandler | None = None,
        rng: random.Random | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_records: int = DEFAULT_MAX_RECORDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`timeout` bounds each attempt as a whole (connect, send, every read of the
        body); `transport` replaces the network (tests pass an httpx.MockTransport)."""
        self._transport = ApiTransport(
            base_url,
            api_key,
            timeout=timeout,
            max_concurrency=max_concurrency,
            retry=retry or RetryPolicy(),
            verify=verify,
            rng=rng or random.Random(),
            max_response_bytes=max_response_bytes,
            max_records=max_records,
            transport=transport,
        )
        self.on_rejected = on_rejected
        self.stats: ClientStats = self._transport.stats

    @property
    def paused_until(self) -> float:
        """time.monotonic() before which no request leaves (a Retry-After); 0.0: never set."""
        return self._transport.gate.paused_until

    def pause_remaining(self, now: float | None = None) -> float:
        """Seconds the client still waits because of a Retry-After (0.0 when not paused)."""
        return self._transport.gate.remaining(now)

    def set_api_key(self, api_key: str) -> None:
        """Use a new key from the next request on (the key file was rotated)."""
        self._transport.set_api_key(api_key)

    async def __aenter__(self) -> OrchestraClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    # --- endpoints (docs/orchestra-api.md, "Endpoints used") ---------------------------

    async def list_workflows(self) -> list[Workflow]:
        body = await self._transport.get_json("list_workflows", "/workflows", expected=list)
        return self._records("list_workflows", _as_list(body), Workflow)

    async def list_runs(
        self, workflow_id: str, *, limit: int = MAX_PAGE_SIZE, offset: int = 0
    ) -> list[Run]:
        body = await self._transport.get_json(
            "list_runs",
            _path("list_runs", "workflows", workflow_id, "runs"),
            {"limit": limit, "offset": offset},
            expected=list,
        )
        return self._records("list_runs", _as_list(body), Run)

    async def get_run(self, workflow_id: str, run_id: str) -> Run:
        body = await self._transport.get_json(
            "get_run",
            _path("get_run", "workflows", workflow_id, "runs", run_id),
            expected=(list, dict),
        )
        # Documented as a one-element array; a bare object is accepted too.
        if isinstance(body, list) and len(body) == 1:
            body = body[0]
        runs = self._records("get_run", [body], Run)
        if not runs:
            raise ApiResponseError("run record is not readable", endpoint="get_run")
        return runs[0]

    async def get_steps(self, workflow_id: str, run_id: str) -> list[Step]:
        body = await self._transport.get_json(
            "steps",
            _path("steps", "workflows", workflow_id, "runs", run_id, "steps"),
            expected=list,
        )
        return self._records("steps", _as_list(body), Step)

    async def get_diagram(self, workflow_id: str) -> str:
        body = await self._transport.get_json(
            "diagram", _path("diagram", "workflows", workflow_id, "diagram"), expected=dict
        )
        if not isinstance(body, dict) or not isinstance(body.get("diagram"), str):
            raise ApiResponseError("diagram response has no 'diagram' text", endpoint="diagram")
        return str(body["diagram"])

    def _records(self, endpoint: str, items: list[object], model: type[RecordT]) -> list[RecordT]:
        good, rejected = parse_records(items, model)
        for record in rejected:
            if self.on_rejected is not None:
                self.on_rejected(endpoint, record)
            else:
                log.warning("%s: skipped record #%d: %s", endpoint, record.index, record.reason)
        return good


def _as_list(body: object) -> list[object]:
    return body if isinstance(body, list) else [body]


def _path(endpoint: str, *segments: str) -> str:
    """A URL path of opaque ids, each quoted into exactly one segment.

    quote() leaves dots alone, and httpx resolves "." and ".." segments away, so an id of
    only dots has them escaped too. An empty id would address another route.
    """
    quoted = []
    for segment in segments:
        if not segment:
            raise ApiRequestError(f"{endpoint}: an empty id cannot be requested", endpoint=endpoint)
        text = quote(segment, safe="")
        quoted.append(text.replace(".", "%2E") if not text.strip(".") else text)
    return "".join("/" + text for text in quoted)
