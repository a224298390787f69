"""Problems with what the API returned: each said once, each skip counted.

A bad record is a fact about the data, not an event: it is logged the first time it is
met, counted in `orchestra_otel_skipped_records_total` every time something is skipped,
and never stops the daemon (docs/design.md, "Delivery").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from exporter.mapping.ids import format_trace_id
from exporter.mapping.steps import Problem
from exporter.source.models import RejectedRecord
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)

# A flood of distinct bad records must not grow memory without end.
MAX_REMEMBERED: Final = 10_000
MAX_MODEL_LABELS: Final = 100


class ProblemReporter:
    """Says each (record, reason) once at warning level and counts skipped records.

    Shared by the poll cycle's parts and `backfill`; the client calls `rejected` for
    records that fail validation.
    """

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        self._reported: set[tuple[str, str]] = set()
        self._models: set[str] = set()
        self.skipped_records = 0

    def once(self, record: str, reason: str, *, trace_id: int | None = None) -> bool:
        """Log the problem unless it was said before; True when it was said now.

        `trace_id`: the run's trace, written as `trace_id` in JSON logs, so a log line
        about a run links to the run's trace (Grafana, Loki, Elastic).
        """
        key = (record, reason)
        if key in self._reported:
            return False
        if len(self._reported) > MAX_REMEMBERED:
            self._reported.clear()
        self._reported.add(key)
        extra = {"trace_id": format_trace_id(trace_id)} if trace_id is not None else None
        log.warning("%s: %s", record, reason, extra=extra)
        return True

    def skipped(self, kind: str, count: int = 1) -> None:
        if count:
            self.skipped_records += count
            self._telemetry.skipped_records.labels(kind).inc(count)

    def rejected(self, endpoint: str, record: RejectedRecord) -> None:
        """A record of an API answer failed validation: logged once, counted, skipped."""
        self.skipped(f"{endpoint}_record")
        self.once(f"{endpoint} record #{record.index}", f"skipped: {record.reason}")

    def unpriced(self, models: Sequence[str]) -> None:
        """Model steps without a price (each logged once per model by the mapping)."""
        for model in models:
            self._telemetry.unpriced_steps.labels(self._model_label(model)).inc()

    def _model_label(self, model: str) -> str:
        # Model names come from the API: the label keeps the first MAX_MODEL_LABELS.
        if model in self._models or len(self._models) < MAX_MODEL_LABELS:
            self._models.add(model)
            return model
        return "other"

    def mapping_problems(
        self, workflow_id: str, problems: Sequence[Problem], trace_id: int | None = None
    ) -> None:
        for problem in problems:
            if problem.skipped:
                self.skipped(problem.record.split(" ", 1)[0])
            action = "skipped" if problem.skipped else "exported with what is valid"
            reason = f"{problem.reason} ({action}; {workflow_id})"
            said = self.once(problem.record, reason, trace_id=trace_id)
            if said and problem.counted is not None:
                self.skipped(problem.counted)  # a run mapped at every poll counts once
