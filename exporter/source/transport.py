"""How the client GETs one API path: slots, retries, one deadline, a capped body.

Every request of the client goes through `ApiTransport.get_json`. httpx errors are
translated into our exception tree here and in answers.py, the client's one boundary.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from typing import Any, Final

import httpx

from exporter import __version__
from exporter.errors import (
    ApiRequestError,
    ApiResponseError,
    ApiResponseTooLargeError,
    ApiUnavailableError,
)
from exporter.source.answers import AnswerCheck
from exporter.source.body import read_capped, read_prefix
from exporter.source.pause import RetryAfterGate
from exporter.source.retry import RetryPolicy
from exporter.source.stats import ClientStats

# The client's one logger, whichever part of it speaks (see pause.py).
log = logging.getLogger("exporter.source.client")

_ERROR_BODY_BYTES: Final = 64 * 1024  # of an error answer, read to quote its detail


class ApiTransport:
    """GETs of the API, decoded as JSON, within every bound the client promises.

    At most `max_concurrency` requests at once; each attempt has one deadline of
    `timeout` seconds for the whole exchange (a body trickled byte by byte cannot hold
    it); bodies are read up to `max_response_bytes` and decoded up to `max_records`;
    timeouts, 429 and 5xx are retried with the policy's jittered backoff within its
    budget, after any Retry-After pause (`gate`). Redirects are not followed, so the key
    goes to `base_url` only. `stats` counts every outcome. Used by OrchestraClient.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float,
        max_concurrency: int,
        retry: RetryPolicy,
        verify: bool | str,
        rng: random.Random,
        max_response_bytes: int,
        max_records: int,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self._base = base_url.rstrip("/")
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
        self._slots = asyncio.Semaphore(max_concurrency)
        self._retry = retry
        self._rng = rng
        self.stats = ClientStats()
        self.gate = RetryAfterGate(retry, self.stats)
        self._answers = AnswerCheck(api_key, max_records, self.stats, self.gate)

    def set_api_key(self, api_key: str) -> None:
        self._answers.api_key = api_key
        self._http.headers["Authorization"] = f"Bearer {api_key}"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get_json(
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
            await self.gate.wait(endpoint)
            response, raw = await self._exchange(endpoint, path, params)
        self._answers.check_status(endpoint, response, raw)
        return self._answers.decode(endpoint, response, raw)

    async def _exchange(
        self, endpoint: str, path: str, params: dict[str, Any] | None
    ) -> tuple[httpx.Response, bytearray]:
        """One request and its body, within one deadline; transport failures translated."""
        try:
            async with asyncio.timeout(self._deadline):
                return await self._send(endpoint, path, params)
        except (TimeoutError, httpx.TimeoutException) as exc:
            self.stats.count(endpoint, "timeout")
            raise ApiUnavailableError(
                f"{endpoint}: the API did not answer in time ({self._deadline:g}s, "
                "ORCHESTRA_API_TIMEOUT)",
                endpoint=endpoint,
            ) from exc
        except httpx.HTTPError as exc:
            if reason := _certificate_failure(exc):
                self.stats.count(endpoint, "tls_error")
                raise ApiRequestError(
                    f"{endpoint}: the API's TLS certificate could not be verified "
                    f"({reason}); if it is signed by a private CA, "
                    "set ORCHESTRA_CA_FILE to that CA's certificate (PEM)",
                    endpoint=endpoint,
                ) from exc
            self.stats.count(endpoint, "connection_error")
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
            self.stats.count(endpoint, "too_large")
            raise ApiResponseTooLargeError(
                f"{endpoint}: the API's answer is too large (more than {self._max_bytes} "
                "bytes, ORCHESTRA_API_MAX_RESPONSE_BYTES); not read further",
                endpoint=endpoint,
                status=response.status_code,
            )
        return response, body


def _certificate_failure(exc: BaseException) -> str | None:
    """The reason when the TLS handshake failed on the certificate, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or "verification failed")
        seen = seen.__cause__ or seen.__context__
    return None
