"""Figures measured by the end-to-end tests, printed in pytest's terminal summary.

A test calls `record_latency(item, name, seconds)`: the figure travels in the test
report's user properties, so that it reaches the controlling process under pytest-xdist
too, where tests/e2e/conftest.py gathers it and prints every figure of the run in a
section of its own, whatever the -r options: the latencies of a CI run can be read from
its log.
"""

from __future__ import annotations

from typing import Final

import pytest

PROPERTY: Final = "e2e_latency_s"
MEASURED: Final[list[tuple[str, float]]] = []


def record_latency(item: pytest.Item, name: str, seconds: float) -> None:
    item.user_properties.append((PROPERTY, (name, seconds)))


def gather(report: pytest.TestReport) -> None:
    """Keep the figures a finished test recorded (called once per report)."""
    if report.when != "call":
        return
    for key, value in report.user_properties:
        if key == PROPERTY:
            name, seconds = value
            MEASURED.append((str(name), float(seconds)))


def summary_lines() -> list[str]:
    if not MEASURED:
        return []
    width = max(len(name) for name, _ in MEASURED)
    return [f"{name:<{width}}  {seconds:7.1f} s" for name, seconds in MEASURED]
