"""Async client of the Orchestra workflow API.

Polite by construction: bounded concurrency, jittered exponential backoff on timeouts,
429 and 5xx, and a `Retry-After` pauses the whole client (every endpoint), because a
rate limit applies to the key, not to one URL. httpx errors are translated into our
exception tree here, at this one boundary, and nothing we raise or log carries the key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import httpx

from exporter import __version__
from exporter.errors import (
    ApiAuthError,
    ApiError,
    ApiNotFoundError,
    ApiRequestError,
    ApiResponseError,
    ApiUnavailableError,
)
from exporter.source.models import (
    RejectedRecord,
    Run,
    Step,
    Workflow,
    may_hold_lone_surrogates,
    parse_records,
    replace_lone_surrogates,
)
from exporter.source.retry import RetryPolicy, is_retryable_status, parse_retry_after

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://orchestra.arcee.ai/api/v1/workflow"
MAX_PAGE_SIZE: Final = 100  # the documented default and the most the history returns

RecordT = TypeVar("RecordT", Run, Step, Workflow)
RejectHandler = Callable[[str, RejectedRecord], None]


@dataclass
class ClientStats:
    """What the client did, for the poll summary line and the metrics."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)  # (endpoint, outcome)
    retries: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


class OrchestraClient:
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
    ) -> None:
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._http = httpx.AsyncClient(
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": f"orchestra-otel/{__version__}",
            },
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_concurrency),
            verify=verify,
            follow_redirects=False,
        )
        self._slots = asyncio.Semaphore(max_concurrency)
        self._retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._resume_at = 0.0  # time.monotonic() before which no request may leave
        self.on_rejected = on_rejected
        self.stats = ClientStats()

    def set_api_key(self, api_key: str) -> None:
        """Use a new key from the next request on (the key file was rotated)."""
        self._api_key = api_key
        self._http.headers["Authorization"] = f"Bearer {api_key}"

    async def __aenter__(self) -> OrchestraClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- endpoints (docs/orchestra-api.md, "Endpoints used") ---------------------------

    async def list_workflows(self) -> list[Workflow]:
        body = await self._get_json("list_workflows", "/workflows", expected=list)
        return self._records("list_workflows", _as_list(body), Workflow)

    async def list_runs(
        self, workflow_id: str, *, limit: int = MAX_PAGE_SIZE, offset: int = 0
    ) -> list[Run]:
        body = await self._get_json(
            "list_runs",
            f"/workflows/{workflow_id}/runs",
            {"limit": limit, "offset": offset},
            expected=list,
        )
        return self._records("list_runs", _as_list(body), Run)

    async def get_run(self, workflow_id: str, run_id: str) -> Run:
        body = await self._get_json(
            "get_run", f"/workflows/{workflow_id}/runs/{run_id}", expected=(list, dict)
        )
        # Documented as a one-element array; a bare object is accepted too.
        if isinstance(body, list) and len(body) == 1:
            body = body[0]
        runs = self._records("get_run", [body], Run)
        if not runs:
            raise ApiResponseError("run record is not readable", endpoint="get_run")
        return runs[0]

    async def get_steps(self, workflow_id: str, run_id: str) -> list[Step]:
        body = await self._get_json(
            "steps", f"/workflows/{workflow_id}/runs/{run_id}/steps", expected=list
        )
        return self._records("steps", _as_list(body), Step)

    async def get_diagram(self, workflow_id: str) -> str:
        body = await self._get_json("diagram", f"/workflows/{workflow_id}/diagram", expected=dict)
        if not isinstance(body, dict) or not isinstance(body.get("diagram"), str):
            raise ApiResponseError("diagram response has no 'diagram' text", endpoint="diagram")
        return str(body["diagram"])

    # --- transport ---------------------------------------------------------------------

    async def _get_json(
        self,
        endpoint: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        expected: type | tuple[type, ...],
    ) -> object:
        """GET and decode JSON of the expected top-level type, retrying what may pass.

        Retries stop at max_attempts, or earlier when the next wait would pass the
        request's time budget: `once` must give up within about a minute.
        """
        attempt = 0
        started = time.monotonic()
        while True:
            attempt += 1
            try:
                body = await self._attempt(endpoint, path, params)
                if not isinstance(body, expected):
                    raise ApiResponseError(
                        f"{endpoint}: unexpected JSON shape ({type(body).__name__} at top level)",
                        endpoint=endpoint,
                    )
                return body
            except (ApiUnavailableError, ApiResponseError) as exc:
                delay = self._retry.backoff(attempt, self._rng)
                elapsed = time.monotonic() - started
                if attempt >= self._retry.max_attempts or elapsed + delay > self._retry.budget:
                    raise
                self.stats.retries[endpoint] += 1
                log.debug("retrying %s in %.2fs after: %s", endpoint, delay, exc)
                await asyncio.sleep(delay)

    async def _attempt(self, endpoint: str, path: str, params: dict[str, Any] | None) -> object:
        async with self._slots:
            # Inside the slot: requests queued behind a 429 must wait out its Retry-After.
            await self._wait_for_retry_after(endpoint)
            try:
                response = await self._http.get(self._base + path, params=params)
                content = response.content
            except httpx.TimeoutException as exc:
                self._count(endpoint, "timeout")
                raise ApiUnavailableError(
                    f"{endpoint}: the API did not answer in time", endpoint=endpoint
                ) from exc
            except httpx.HTTPError as exc:
                if _certificate_failure(exc):
                    self._count(endpoint, "tls_error")
                    raise ApiRequestError(
                        f"{endpoint}: the API's TLS certificate could not be verified "
                        f"({_certificate_failure(exc)}); if it is signed by a private CA, "
                        "set ORCHESTRA_CA_FILE to that CA's certificate (PEM)",
                        endpoint=endpoint,
                    ) from exc
                self._count(endpoint, "connection_error")
                raise ApiUnavailableError(
                    f"{endpoint}: cannot reach the API ({type(exc).__name__})", endpoint=endpoint
                ) from exc
        self._count(endpoint, str(response.status_code))
        self._check_status(endpoint, response)
        try:
            body = json.loads(content)
        except ValueError as exc:
            raise ApiResponseError(
                f"{endpoint}: the API answered {response.status_code} with a body that is not "
                f"JSON ({response.headers.get('content-type', 'no content type')})",
                endpoint=endpoint,
                status=response.status_code,
            ) from exc
        return replace_lone_surrogates(body) if may_hold_lone_surrogates(content) else body

    def _check_status(self, endpoint: str, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status == 429 or is_retryable_status(status):
            self._pause_for(endpoint, response)
            raise ApiUnavailableError(
                f"{endpoint}: the API answered {status}", endpoint=endpoint, status=status
            )
        error_class: type[ApiError] = ApiRequestError
        if status in (401, 403):
            error_class = ApiAuthError
        elif status == 404:
            error_class = ApiNotFoundError
        raise error_class(
            f"{endpoint}: the API answered {status}{self._redacted(_detail(response))}",
            endpoint=endpoint,
            status=status,
        )

    def _redacted(self, text: str) -> str:
        """The API may quote the token back in its error text; errors must never hold it."""
        key = self._api_key
        return text.replace(key, "[REDACTED]") if len(key) >= 4 else text

    def _pause_for(self, endpoint: str, response: httpx.Response) -> None:
        if response.status_code == 429:
            self.stats.rate_limited += 1
        wait = parse_retry_after(response.headers.get("retry-after"))
        if wait is not None:
            self._resume_at = max(self._resume_at, time.monotonic() + wait)
            log.info("API asked to wait %.1fs (Retry-After on %s)", wait, endpoint)

    async def _wait_for_retry_after(self, endpoint: str) -> None:
        wait = self._resume_at - time.monotonic()
        if wait <= 0:
            return
        if wait > self._retry.max_delay:
            # Longer than we are willing to block a poll: give up this poll without
            # sending anything; the next poll checks again.
            raise ApiUnavailableError(
                f"{endpoint}: the API asked us to wait {wait:.0f}s more (Retry-After)",
                endpoint=endpoint,
            )
        await asyncio.sleep(wait)

    def _count(self, endpoint: str, outcome: str) -> None:
        self.stats.requests[(endpoint, outcome)] += 1

    def _records(self, endpoint: str, items: list[object], model: type[RecordT]) -> list[RecordT]:
        good, rejected = parse_records(items, model)
        for record in rejected:
            if self.on_rejected is not None:
                self.on_rejected(endpoint, record)
            else:
                log.warning("%s: skipped record #%d: %s", endpoint, record.index, record.reason)
        return good


def _certificate_failure(exc: BaseException) -> str | None:
    """The reason when the TLS handshake failed on the certificate, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or "verification failed")
        seen = seen.__cause__ or seen.__context__
    return None


def _as_list(body: object) -> list[object]:
    return body if isinstance(body, list) else [body]


def _detail(response: httpx.Response) -> str:
    """The API's own short explanation, if it sent a JSON one ({"detail": ...})."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("error")
        if isinstance(detail, str) and detail:
            return f": {detail[:200]}"
    return ""
