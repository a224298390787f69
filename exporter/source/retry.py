"""Retry policy of the API client: which failures to retry, and how long to wait.

Pure functions (the caller passes the clock and the random source), so the schedule
is testable without sleeping.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Final

_DELTA_SECONDS: Final = re.compile(r"[0-9]{1,10}")  # ASCII digits only, unlike str.isdigit
RETRYABLE_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0  # the daemon caps this at its poll interval
    budget: float = 25.0  # seconds one request may spend on retries before giving up
    # Longest pause a Retry-After may impose (ORCHESTRA_API_MAX_RETRY_AFTER): one absurd
    # value must not silence the client until a restart.
    max_retry_after: float = 300.0

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """Equal jitter: half the exponential step, plus up to half again at random.

        Full jitter can pick ~0 and hammer a struggling API; no jitter makes replicas
        retry in lockstep.
        """
        exponent = min(max(retry_number - 1, 0), 62)  # 2**62 s is past any cap: no overflow
        step = min(self.max_delay, self.base_delay * (2**exponent))
        return float(step / 2 + rng.uniform(0, step / 2))


def is_retryable_status(status: int) -> bool:
    # 501 Not Implemented and 505 will not change on a retry.
    return status in RETRYABLE_STATUS or (status >= 500 and status not in (501, 505))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now or datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())
