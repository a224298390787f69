"""The store of a scenario: its workflows and their runs, and what the API shows of them.

No I/O. Runs are kept as entries (runs.py: planned runs and static ones) and rendered
into API records only when asked, at the time the clock reads then.
"""

from __future__ import annotations

import bisect
import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporter.emulator.graph import JsonDict, WorkflowSpec, mermaid_diagram, seconds_to_us
from exporter.emulator.runs import RenderOptions, RunEntry, StaticRun

Clock = Callable[[], float]


@dataclass(frozen=True)
class _Workflow:
    record: JsonDict
    spec: WorkflowSpec | None  # None: served but cannot be executed
    diagram: str


class RunStore:
    """Workflows and their runs, as the API would show them at the clock's current time.

    Invariants: every run belongs to a stored workflow; run ids are unique; each
    workflow's runs are kept in start order; records handed out are copies. Thread-safe
    (the server calls it from one thread per request) through one re-entrant lock,
    which `Scenario`, the subclass that makes runs, holds around its compound steps.
    Queries first call `_materialize()`, the hook where Scenario makes the runs that
    became due; here it only reads the clock.
    """

    def __init__(self, clock: Clock, options: RenderOptions) -> None:
        self.clock = clock
        self.options = options
        self._lock = threading.RLock()
        self._workflows: dict[str, _Workflow] = {}
        self._runs: dict[str, list[RunEntry]] = {}  # per workflow, ordered by start
        self._run_by_id: dict[str, RunEntry] = {}

    def now_us(self) -> int:
        return seconds_to_us(self.clock())

    # ------------------------------------------------------------------ adding

    def add_workflow(self, spec: WorkflowSpec) -> None:
        record = spec.record()
        self._put_workflow(_Workflow(record, spec, mermaid_diagram(record["graph"])))

    def add_static_workflow(self, record: JsonDict, *, diagram: str | None = None) -> None:
        """Serve `record` unchanged; it stays executable when its graph can be read."""
        try:
            spec: WorkflowSpec | None = WorkflowSpec.from_record(record)
        except (KeyError, TypeError, ValueError, AttributeError):
            spec = None
        text = diagram if diagram is not None else mermaid_diagram(record.get("graph") or {})
        self._put_workflow(_Workflow(record, spec, text))

    def add_static_run(
        self, workflow_id: str, record: JsonDict, steps: Sequence[JsonDict] = ()
    ) -> str:
        """Serve `record` and `steps` unchanged, whatever the clock says."""
        with self._lock:
            self._require_workflow(workflow_id)
            entry = StaticRun.from_record(workflow_id, record, steps)
            self._store(entry)
            return entry.run_id

    def _put_workflow(self, workflow: _Workflow) -> None:
        workflow_id = str(workflow.record["workflow_id"])
        with self._lock:
            self._workflows[workflow_id] = workflow
            self._runs.setdefault(workflow_id, [])

    def _store(self, entry: RunEntry) -> None:
        if entry.run_id in self._run_by_id:
            raise ValueError(f"duplicate run id {entry.run_id}")
        bisect.insort(self._runs[entry.workflow_id], entry, key=lambda run: run.start_us)
        self._run_by_id[entry.run_id] = entry

    def _require_workflow(self, workflow_id: str) -> _Workflow:
        workflow = self._workflows.get(workflow_id)
        if workflow is None:
            raise KeyError(f"unknown workflow {workflow_id}")
        return workflow

    def _executable(self, workflow_id: str) -> WorkflowSpec:
        spec = self._require_workflow(workflow_id).spec
        if spec is None:
            raise ValueError(f"workflow {workflow_id} has no graph the emulator can run")
        return spec

    # ------------------------------------------------------------------ queries

    def workflow_ids(self) -> list[str]:
        with self._lock:
            return list(self._workflows)

    def workflow(self, workflow_id: str) -> WorkflowSpec | None:
        with self._lock:
            workflow = self._workflows.get(workflow_id)
            return None if workflow is None else workflow.spec

    def workflow_records(self) -> list[JsonDict]:
        with self._lock:
            return [copy.deepcopy(workflow.record) for workflow in self._workflows.values()]

    def has_workflow(self, workflow_id: str) -> bool:
        with self._lock:
            return workflow_id in self._workflows

    def diagram(self, workflow_id: str) -> str | None:
        with self._lock:
            workflow = self._workflows.get(workflow_id)
            return None if workflow is None else workflow.diagram

    def runs(
        self,
        workflow_id: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        newest: int | None = None,
    ) -> list[JsonDict] | None:
        """Started runs, newest first: `[offset:offset+limit]` of the `newest` most recent.

        None for an unknown workflow.
        """
        with self._lock:
            if workflow_id not in self._workflows:
                return None
            now_us = self._materialize()
            stop = _window_end(offset, limit, newest)
            records: list[JsonDict] = []
            position = 0
            for entry in reversed(self._runs[workflow_id]):
                if stop is not None and position >= stop:
                    break
                if not entry.is_visible(now_us):
                    continue
                if position >= offset:
                    records.append(entry.record(now_us, self.options))
                position += 1
            return records

    def run(self, workflow_id: str, run_id: str) -> JsonDict | None:
        """The run record, or None when the run is unknown or has not started yet."""
        with self._lock:
            now_us = self._materialize()
            entry = self._visible_run(workflow_id, run_id, now_us)
            return None if entry is None else entry.record(now_us, self.options)

    def steps(self, workflow_id: str, run_id: str) -> list[JsonDict] | None:
        """The steps started so far, ordered by start; None for an unknown run."""
        with self._lock:
            now_us = self._materialize()
            entry = self._visible_run(workflow_id, run_id, now_us)
            return None if entry is None else entry.step_records(now_us, self.options)

    def _materialize(self) -> int:
        """Make what became due (nothing here); returns the clock reading the query uses."""
        return self.now_us()

    def _visible_run(self, workflow_id: str, run_id: str, now_us: int) -> RunEntry | None:
        entry = self._run_by_id.get(run_id)
        if entry is None or entry.workflow_id != workflow_id or not entry.is_visible(now_us):
            return None
        return entry


def _window_end(offset: int, limit: int | None, newest: int | None) -> int | None:
    ends = [end for end in (None if limit is None else offset + limit, newest) if end is not None]
    return min(ends) if ends else None
