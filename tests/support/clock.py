"""ManualClock: a scenario clock that moves only when a test moves it.

Pass it as `Scenario(clock=...)`: runs appear and progress only when the test calls
`advance()` or `set()`, in process or over HTTP (`POST /_emulator/clock`, which accepts
any clock of this shape: exporter.emulator.control.SteerableClock). The product never
needs one: the demo and `python -m exporter.emulator` run on the real time.
"""

from __future__ import annotations

import threading


class ManualClock:
    """A clock that only moves when told to; pass it as `Scenario(clock=...)` in tests."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        with self._lock:
            self._now = now
