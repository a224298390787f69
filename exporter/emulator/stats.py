"""Request counting, so tests can check how politely a client used the API."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

# Status recorded for a request whose connection was reset without an answer.
NO_RESPONSE = 0


class RequestStats:
    """Counts per endpoint kind and per (kind, status), and the last requests in order.

    Each request is recorded when it arrives (its `at` is `time.monotonic()` then, so a
    test can check that nothing arrived before a Retry-After expired) and completed with
    its status when the answer is sent: `status` is None while it is in flight and 0 when
    the connection was reset. Thread-safe.
    """

    def __init__(self, recent_limit: int = 1000) -> None:
        self._lock = threading.Lock()
        self._total = 0
        self._by_kind: Counter[str] = Counter()
        self._by_status: dict[str, Counter[str]] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent_limit)

    def reset(self) -> None:
        with self._lock:
            self._total = 0
            self._by_kind.clear()
            self._by_status.clear()
            self._recent.clear()

    def begin(self, method: str, kind: str, path: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "at": time.monotonic(),
            "wall": time.time(),
            "method": method,
            "kind": kind,
            "path": path,
            "status": None,
        }
        with self._lock:
            self._total += 1
            self._by_kind[kind] += 1
            self._recent.append(entry)
        return entry

    def finish(self, entry: dict[str, Any], status: int) -> None:
        with self._lock:
            entry["status"] = status
            self._by_status.setdefault(entry["kind"], Counter())[str(status)] += 1

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: `total`, `by_kind`, `by_status` ({kind: {"200": n}}), `recent`."""
        with self._lock:
            return {
                "total": self._total,
                "by_kind": dict(self._by_kind),
                "by_status": {kind: dict(counts) for kind, counts in self._by_status.items()},
                "recent": [dict(entry) for entry in self._recent],
            }
