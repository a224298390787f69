"""Figures measured by the end-to-end tests, printed in pytest's terminal summary.

A test calls `record_latency(name, seconds)`; tests/e2e/conftest.py prints every figure
recorded during the run in a section of its own, whatever the -r options, so that the
latencies of a CI run can be read from its log.
"""

from __future__ import annotations

from typing import Final

MEASURED: Final[list[tuple[str, float]]] = []


def record_latency(name: str, seconds: float) -> None:
    MEASURED.append((name, seconds))


def summary_lines() -> list[str]:
    if not MEASURED:
        return []
    width = max(len(name) for name, _ in MEASURED)
    return [f"{name:<{width}}  {seconds:7.1f} s" for name, seconds in MEASURED]
