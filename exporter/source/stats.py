"""What the API client did: requests by endpoint and outcome, retries, rate limits.

Filled by the client's transport (transport.py, answers.py, pause.py); read by the poll
summary line and the metrics (exporter/telemetry.py) through `OrchestraClient.stats`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


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

    def count(self, endpoint: str, outcome: str) -> None:
        """One request of `endpoint` ended with `outcome`: a status ("200") or a failure."""
        self.requests[(endpoint, outcome)] += 1
