"""Shared fixtures: a real OTLP receiver, the emulator, paths to the shared payloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.latencies import gather, summary_lines
from tests.support.fixtures import otlp_receiver, world  # noqa: F401  (pytest fixtures)

REPO = Path(__file__).resolve().parent.parent


def _shared_dir() -> Path:
    """A copy of the project's shared payloads, kept in the repo so tests run anywhere.

    tests/unit/test_shared_copy.py checks the copy against ../shared when that exists.
    """
    return REPO / "tests" / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _shared_dir()


def expected_seconds(item: pytest.Item) -> float:
    """How long a test is expected to take: `@pytest.mark.slow(seconds=N)` says N, a bare
    `slow` mark 30, anything else 0."""
    mark = item.get_closest_marker("slow")
    if mark is None:
        return 0.0
    return float(mark.kwargs.get("seconds", 30.0))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest tests first: pytest-xdist hands tests out in this order, so the soak starts
    at once and the short tests fill the workers around it (the wall time is then close
    to the longest test, not to the sum of the slow tests on one worker)."""
    items.sort(key=expected_seconds, reverse=True)  # stable: the rest keep their order


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/testdata from the current mapping (review the diff!)",
    )


# The end-to-end tests' measured latencies (tests/e2e/latencies.py). These hooks live
# here, not in tests/e2e/conftest.py: under pytest-xdist the controlling process, which
# receives the reports and writes the summary, loads only this top-level conftest.
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    gather(report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = summary_lines()
    if lines:
        terminalreporter.section("measured by the end-to-end tests")
        for line in lines:
            terminalreporter.write_line(line)
