"""exporter/mapping/status.py: the status table of docs/design.md ("Statuses")."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from exporter.mapping.status import (
    STATUS_TABLE,
    UNKNOWN_STATUS,
    StatusRow,
    run_is_terminal,
    status_row,
    step_is_terminal,
)

# Written out from docs/design.md, independently of the table: a changed row fails here.
EXPECTED: list[tuple[str, bool, bool]] = [
    # status, terminal, failed
    ("completed", True, False),
    ("failed", True, True),
    ("error", True, True),
    ("timeout", True, True),
    ("cancelled", True, False),
    ("canceled", True, False),
    ("skipped", True, False),
    ("running", False, False),
    ("pending", False, False),
    ("queued", False, False),
    ("in_progress", False, False),
    ("started", False, False),
]

UNKNOWN: list[str | None] = [None, "", "   ", "weird", "complete", "succeeded", "fail"]


def test_table_has_exactly_the_documented_statuses() -> None:
    assert set(STATUS_TABLE) == {status for status, _, _ in EXPECTED}


@pytest.mark.parametrize(("status", "row"), sorted(STATUS_TABLE.items()))
def test_every_table_row_is_consistent(status: str, row: StatusRow) -> None:
    assert status == status.strip().casefold()
    assert row.terminal is not None
    assert not (row.failed and not row.terminal), "an in-flight status cannot have failed"
    assert status_row(status) == row
    # While the run is in flight a known status decides; once it ended, every step is final.
    assert step_is_terminal(status, run_terminal=False) is row.terminal
    assert step_is_terminal(status, run_terminal=True) is True
    for has_end in (True, False):
        assert run_is_terminal(status, has_end_time=has_end) is row.terminal


@pytest.mark.parametrize(("status", "terminal", "failed"), EXPECTED)
def test_documented_row(status: str, terminal: bool, failed: bool) -> None:
    assert STATUS_TABLE[status] == StatusRow(terminal=terminal, failed=failed)
    assert status_row(status).terminal is terminal
    assert status_row(status).failed is failed


@pytest.mark.parametrize(("status", "terminal", "failed"), EXPECTED)
@pytest.mark.parametrize(
    "spell", [str.upper, str.title, lambda s: f"  {s}\t", lambda s: f"\n{s.upper()} "]
)
def test_case_and_whitespace_insensitive(
    status: str, terminal: bool, failed: bool, spell: Callable[[str], str]
) -> None:
    raw = spell(status)
    assert raw != status
    assert status_row(raw) == StatusRow(terminal=terminal, failed=failed)
    # While the run is in flight the (respelt) status alone decides.
    assert step_is_terminal(raw, run_terminal=False) is terminal
    assert run_is_terminal(raw, has_end_time=not terminal) is terminal


@pytest.mark.parametrize("raw", UNKNOWN)
def test_unknown_status_row(raw: str | None) -> None:
    assert status_row(raw) == UNKNOWN_STATUS
    assert status_row(raw).terminal is None
    assert status_row(raw).failed is False


@pytest.mark.parametrize("raw", UNKNOWN)
@pytest.mark.parametrize("run_terminal", [True, False])
def test_unknown_step_status_follows_the_run(raw: str | None, run_terminal: bool) -> None:
    assert step_is_terminal(raw, run_terminal=run_terminal) is run_terminal


@pytest.mark.parametrize("raw", UNKNOWN)
@pytest.mark.parametrize("has_end_time", [True, False])
def test_unknown_run_status_follows_end_time(raw: str | None, has_end_time: bool) -> None:
    assert run_is_terminal(raw, has_end_time=has_end_time) is has_end_time


def test_in_flight_run_with_end_time_is_still_in_flight() -> None:
    # A known status wins over the presence of an end time.
    assert run_is_terminal("running", has_end_time=True) is False
    assert run_is_terminal("completed", has_end_time=False) is True
