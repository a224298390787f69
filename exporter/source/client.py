"""Async client of the Orchestra workflow API.

Polite by construction: bounded concurrency, jittered exponential backoff on timeouts,
429 and 5xx, and a `Retry-After` pauses the whole client (every endpoint), because a
rate limit applies to the key, not to one URL. httpx errors are translated into our
exception tree here, at this one boundary, and nothing we raise or log carries the key.

Bounded against a broken or hostile API too: each attempt has one deadline for the whole
exchange (a body trickled byte by byte cannot hold it), answers are read up to a byte
cap and decoded up to a record cap (exporter/source/body.py), a Retry-After pauses for
at most `RetryPolicy.max_retry_after`, and every id is quoted into exactly one path
segment, so an id such as `../x` or `r?a=1` cannot send the key to another path.
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
from urllib.parse import quote

import httpx

from exporter import __version__
from exporter.errors import (
    ApiAuthError,
    ApiError,
    ApiNotFoundError,
    ApiRequestError,
    ApiResponseError,
    ApiResponseTooLargeError,
    ApiUnavailableError,
)
from exporter.source.body import (
    DEFAULT_MAX_RECORDS,
    DEFAULT_MAX_RESPONSE_BYTES,
    decode_json,
    read_capped,
    read_prefix,
)
from exporter.source.models import RejectedRecord, Run, Step, Workflow, parse_records
from exporter.source.retry import RetryPolicy, is_retryable_status, parse_retry_after

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://orchestra.arcee.ai/api/v1/workflow"
MAX_PAGE_SIZE: Final = 100  # the documented default and the most the history returns
_ERROR_BODY_BYTES: Final = 64 * 1024  # of an error answer, read to quote its detail

RecordT = TypeVar("RecordT", Run, Step, Workflow)
RejectHandler = Callable[[str, RejectedRecord], None]


@dataclass
class ClientStats:
    """What the client did, for the poll summary line and the metrics."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)  # (endpoint, outcome)
    retries: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    retry_after_pauses: int = 0  # Retry-After answers that paused the client
    retry_after_capped: int = 0  # ... of which asked for longer than max_retry_after

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
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_records: int = DEFAULT_MAX_RECORDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`timeout` bounds each attempt as a whole (connect, send, every read of the
        body); `transport` replaces the network (tests pass an httpx.MockTransport)."""
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
            transport=transport,
        )
        self._deadline = timeout
        self._max_bytes = max_response_bytes
        self._max_records = max_records
        self._slots = asyncio.Semaphore(max_concurrency)
        self._retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._resume_at = 0.0  # time.monotonic() before which no request may leave
        self.on_rejected = on_rejected
        self.stats = ClientStats()

    @property
    def paused_until(self) -> float:
        """time.monotonic() before which no request leaves (a Retry-After); 0.0: never set."""
        return self._resume_at

    def pause_remaining(self, now: float | None = None) -> float:
        """Seconds the client still waits because of a Retry-After (0.0 when not paused)."""
        return max(0.0, self._resume_at - (time.monotonic() if now is None else now))

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
            _path("list_runs", "workflows", workflow_id, "runs"),
            {"limit": limit, "offset": offset},
            expected=list,
        )
        return self._records("list_runs", _as_list(body), Run)

    async def get_run(self, workflow_id: str, run_id: str) -> Run:
        body = await self._get_json(
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
        body = await self._get_json(
            "steps",
            _path("steps", "workflows", workflow_id, "runs", run_id, "steps"),
            expected=list,
        )
        return self._records("steps", _as_list(body), Step)

    async def get_diagram(self, workflow_id: str) -> str:
        body = await self._get_json(
            "diagram", _path("diagram", "workflows", workflow_id, "diagram"), expected=dict
        )
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
        request's time budget: `once` must give up within about a minute. An answer too
        large or too deep is final: it would be the same on a retry.
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
                if isinstance(exc, ApiResponseTooLargeError):
                    raise  # the same answer would come again
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
            response, raw = await self._exchange(endpoint, path, params)
        self._check_status(endpoint, response, raw)
        return self._decode(endpoint, response, raw)

    async def _exchange(
        self, endpoint: str, path: str, params: dict[str, Any] | None
    ) -> tuple[httpx.Response, bytearray]:
        """One request and its body, within one deadline; transport failures translated."""
        try:
            async with asyncio.timeout(self._deadline):
                return await self._send(endpoint, path, params)
        except (TimeoutError, httpx.TimeoutException) as exc:
            self._count(endpoint, "timeout")
            raise ApiUnavailableError(
                f"{endpoint}: the API did not answer in time ({self._deadline:g}s, "
                "ORCHESTRA_API_TIMEOUT)",
                endpoint=endpoint,
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

    async def _send(
        self, endpoint: str, path: str, params: dict[str, Any] | None
    ) -> tuple[httpx.Response, bytearray]:
        async with self._http.stream("GET", self._base + path, params=params) as response:
            if not 200 <= response.status_code < 300:
                return response, bytearray(await read_prefix(response, _ERROR_BODY_BYTES))
            body = await read_capped(response, self._max_bytes)
        if body is None:
            self._count(endpoint, "too_large")
            raise ApiResponseTooLargeError(
                f"{endpoint}: the API's answer is too large (more than {self._max_bytes} "
                "bytes, ORCHESTRA_API_MAX_RESPONSE_BYTES); not read further",
                endpoint=endpoint,
                status=response.status_code,
            )
        return response, body

    def _decode(self, endpoint: str, response: httpx.Response, raw: bytearray) -> object:
        status = response.status_code
        decoded = decode_json(raw, self._max_records)
        if decoded.problem is None:
            self._count(endpoint, str(status))
            return decoded.value
        if decoded.problem == "too_many_records":
            self._count(endpoint, "too_large")
            raise ApiResponseTooLargeError(
                f"{endpoint}: the API's answer is too large (more than {self._max_records} "
                "records, ORCHESTRA_API_MAX_RECORDS); not read further",
                endpoint=endpoint,
                status=status,
            )
        if decoded.problem == "too_deep":
            self._count(endpoint, "too_deep")
            raise ApiResponseTooLargeError(
                f"{endpoint}: the API's answer is nested too deeply to be read",
                endpoint=endpoint,
                status=status,
            )
        self._count(endpoint, str(status))
        raise ApiResponseError(
            f"{endpoint}: the API answered {status} with a body that is not JSON "
            f"({response.headers.get('content-type', 'no content type')}; {decoded.detail})",
            endpoint=endpoint,
            status=status,
        )

    def _check_status(self, endpoint: str, response: httpx.Response, raw: bytearray) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        self._count(endpoint, str(status))
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
            f"{endpoint}: the API answered {status}{self._redacted(_detail(raw))}",
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
        if wait is None:
            return
        self.stats.retry_after_pauses += 1
        cap = self._retry.max_retry_after
        if wait > cap:
            # One absurd value (years) must not silence the daemon until a restart.
            self.stats.retry_after_capped += 1
            log.warning(
                "API asked to wait %.0fs (Retry-After on %s); capped at %.0fs "
                "(ORCHESTRA_API_MAX_RETRY_AFTER)",
                wait,
                endpoint,
                cap,
            )
            wait = cap
        else:
            log.info("API asked to wait %.1fs (Retry-After on %s)", wait, endpoint)
        self._resume_at = max(self._resume_at, time.monotonic() + wait)

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


def _detail(raw: bytes | bytearray) -> str:
    """The API's own short explanation, if it sent a JSON one ({"detail": ...})."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("error")
        if isinstance(detail, str) and detail:
            return f": {detail[:200]}"
    return ""
