"""How raw Orchestra statuses map to "is it finished?" and "did it fail?".

Only ``completed`` is documented; the other rows are the values docs/design.md decides
on ("Statuses"). Statuses compare case-insensitively; the raw value always goes on the span as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class StatusRow:
    terminal: bool | None  # None: unknown status, decided by the run (see step_is_terminal)
    failed: bool


UNKNOWN_STATUS: Final = StatusRow(terminal=None, failed=False)

STATUS_TABLE: Final[Mapping[str, StatusRow]] = {
    # terminal, succeeded
    "completed": StatusRow(terminal=True, failed=False),
    # terminal, failed: span status ERROR
    "failed": StatusRow(terminal=True, failed=True),
    "error": StatusRow(terminal=True, failed=True),
    "timeout": StatusRow(terminal=True, failed=True),
    # terminal, neither: span status UNSET (nobody should be paged for a skipped node)
    "cancelled": StatusRow(terminal=True, failed=False),
    "canceled": StatusRow(terminal=True, failed=False),
    "skipped": StatusRow(terminal=True, failed=False),
    # in flight
    "running": StatusRow(terminal=False, failed=False),
    "pending": StatusRow(terminal=False, failed=False),
    "queued": StatusRow(terminal=False, failed=False),
    "in_progress": StatusRow(terminal=False, failed=False),
    "started": StatusRow(terminal=False, failed=False),
}


def status_row(raw: str | None) -> StatusRow:
    if raw is None:
        return UNKNOWN_STATUS
    return STATUS_TABLE.get(raw.strip().casefold(), UNKNOWN_STATUS)


def step_is_terminal(raw: str | None, *, run_terminal: bool) -> bool:
    """A step is final when its status says so, and every step is once its run ended.

    docs/design.md: once the run is terminal every step is exported with its raw status; a
    step left `running` by a cancelled run would otherwise never be exported at all.
    """
    if run_terminal:
        return True
    return bool(status_row(raw).terminal)


def run_is_terminal(raw: str | None, *, has_end_time: bool) -> bool:
    """An unknown run status counts as finished once the run has an end time.

    Otherwise a run with a status we have never seen would be polled forever and its
    root span never exported.
    """
    row = status_row(raw)
    return has_end_time if row.terminal is None else row.terminal
