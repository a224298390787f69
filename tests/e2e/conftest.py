"""The end-to-end tests' fixtures and the terminal section with their measured figures."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import promtool  # noqa: F401  (a pytest fixture)
from tests.e2e.latencies import gather, summary_lines


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    gather(report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = summary_lines()
    if lines:
        terminalreporter.section("measured by the end-to-end tests")
        for line in lines:
            terminalreporter.write_line(line)
