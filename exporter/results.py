"""What one poll (or backfill, or export-run) did: the summary line and the exit code."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from exporter.errors import ApiAuthError, ApiError, StateError

log = logging.getLogger(__name__)


@dataclass
class PollResult:
    workflows: int = 0
    runs_seen: int = 0
    runs_completed: int = 0
    spans_exported: int = 0
    logs_exported: int = 0
    requests: int = 0
    runs_in_flight: int = 0
    pending_spans: int = 0
    pending_logs: int = 0
    errors: list[str] = field(default_factory=list)
    auth_failed: bool = False
    api_failed: bool = False
    export_failed: bool = False
    log_export_failed: bool = False
    ledger_failed: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def note_error(self, exc: BaseException) -> None:
        """Record a failure of one part of the cycle; the other parts go on."""
        if isinstance(exc, ApiError):
            self.api_failed = True
        if isinstance(exc, ApiAuthError):
            self.auth_failed = True
        if isinstance(exc, StateError):
            self.ledger_failed = True
        self.errors.append(str(exc))
        log.debug("poll error", exc_info=exc)

    def summary(self) -> str:
        text = (
            f"poll: {self.workflows} workflows, {self.runs_seen} runs seen, "
            f"{self.runs_completed} completed, {self.spans_exported} spans exported, "
            f"{self.requests} requests, backlog {self.runs_in_flight} runs in flight"
            f" / {self.pending_spans} spans unsent"
        )
        if self.logs_exported or self.pending_logs:
            text += f", {self.logs_exported} failure logs exported / {self.pending_logs} unsent"
        if self.errors:
            text += f", {len(self.errors)} errors"
        return text
