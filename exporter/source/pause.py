"""The client-wide pause a Retry-After asks for.

A rate limit applies to the key, not to one URL: a Retry-After on any answer holds every
request of the client until it has passed, capped at `RetryPolicy.max_retry_after` so
that one absurd value cannot silence the daemon until a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from exporter.errors import ApiUnavailableError
from exporter.source.retry import RetryPolicy, parse_retry_after
from exporter.source.stats import ClientStats

# The client's one logger, whichever part of it speaks: log filters and the JSON lines'
# "logger" field stay as they were.
log = logging.getLogger("exporter.source.client")


class RetryAfterGate:
    """When the next request may leave, after the Retry-After answers seen so far.

    Invariant: `paused_until` (time.monotonic()) only moves forward, and never further
    than `max_retry_after` past the answer that moved it. A wait longer than the policy's
    `max_delay` is not waited out: the request fails at once and the next poll tries
    again. Used by the transport (transport.py): `pause_for` on a 429 or 5xx answer,
    `wait` before each request; `OrchestraClient` reports the pause for the metrics.
    """

    def __init__(self, retry: RetryPolicy, stats: ClientStats) -> None:
        self._retry = retry
        self._stats = stats
        self._resume_at = 0.0  # time.monotonic() before which no request may leave

    @property
    def paused_until(self) -> float:
        """time.monotonic() before which no request leaves (a Retry-After); 0.0: never set."""
        return self._resume_at

    def remaining(self, now: float | None = None) -> float:
        """Seconds still to wait because of a Retry-After (0.0 when not paused)."""
        return max(0.0, self._resume_at - (time.monotonic() if now is None else now))

    def pause_for(self, endpoint: str, response: httpx.Response) -> None:
        """Count a rate limit and honour the answer's Retry-After, if it has one."""
        if response.status_code == 429:
            self._stats.rate_limited += 1
        wait = parse_retry_after(response.headers.get("retry-after"))
        if wait is None:
            return
        self._stats.retry_after_pauses += 1
        cap = self._retry.max_retry_after
        if wait > cap:
            # One absurd value (years) must not silence the daemon until a restart.
            self._stats.retry_after_capped += 1
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

    async def wait(self, endpoint: str) -> None:
        """Sleep out the pause, or raise ApiUnavailableError when it is too long to wait."""
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
