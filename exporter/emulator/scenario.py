"""What the emulator serves: workflows, and runs that appear and progress with a clock.

No I/O here except reading the packaged fixtures. All times come from an injectable
`clock` (epoch seconds), so tests can freeze and advance them; every generated id, text
and duration comes from `random.Random` seeded per run, so a seed reproduces a scenario.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from exporter.emulator import demo
from exporter.emulator.graph import (
    JsonDict,
    WorkflowSpec,
    mermaid_diagram,
    random_uuid,
    seconds_to_us,
)
from exporter.emulator.runs import (
    PlannedRun,
    RenderOptions,
    RunEntry,
    RunOutputs,
    StaticRun,
    choose_failure,
    default_durations,
    failure_at,
    plan_run,
    sample_durations,
)

Clock = Callable[[], float]

# Ids that the documented fixtures use (docs/orchestra-api.md; payloads in tests/shared/fixtures).
FIXTURE_HI_WORKFLOW_ID = "1234f567-bb12-1234-b7cd-f7a71a98cd24"
FIXTURE_JOKE_WORKFLOW_ID = "7c1e2f34-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
FIXTURE_STEPS_RUN_ID = "5b69669f-975a-49af-a33a-61ff9ae5a20f"


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


@dataclass
class _Schedule:
    """A workflow started every `every_us`; its runs are made when the clock reaches them."""

    spec: WorkflowSpec
    tag: str
    first_us: int
    every_us: int
    jitter_us: int
    duration: tuple[float, float]
    failure_rate: float
    fail_runs: frozenset[int]
    count: int | None
    made: int = 0

    def next_due_us(self) -> int | None:
        if self.count is not None and self.made >= self.count:
            return None
        return self.first_us + self.made * self.every_us


@dataclass(frozen=True)
class _Workflow:
    record: JsonDict
    spec: WorkflowSpec | None  # None: served but cannot be executed
    diagram: str


class Scenario:
    """Workflows and their runs, as the API would show them at the clock's current time.

    Thread-safe: the server calls it from one thread per request.
    """

    def __init__(
        self,
        workflows: Iterable[WorkflowSpec] = (),
        *,
        clock: Clock = time.time,
        seed: int = 0,
        running_status: str = "running",
        completed_status: str = "completed",
        failed_status: str = "failed",
        run_outputs: RunOutputs = "selected",
    ) -> None:
        self.clock = clock
        self.seed = seed
        self.options = RenderOptions(running_status, completed_status, failed_status, run_outputs)
        self._lock = threading.RLock()
        self._workflows: dict[str, _Workflow] = {}
        self._runs: dict[str, list[RunEntry]] = {}  # per workflow, ordered by start
        self._run_by_id: dict[str, RunEntry] = {}
        self._schedules: list[_Schedule] = []
        self._batches = itertools.count()  # keeps the seed tags of separate calls apart
        for spec in workflows:
            self.add_workflow(spec)

    def now_us(self) -> int:
        return seconds_to_us(self.clock())

    # ------------------------------------------------------------------ building

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

    def _put_workflow(self, workflow: _Workflow) -> None:
        workflow_id = str(workflow.record["workflow_id"])
        with self._lock:
            self._workflows[workflow_id] = workflow
            self._runs.setdefault(workflow_id, [])

    def add_static_run(
        self, workflow_id: str, record: JsonDict, steps: Sequence[JsonDict] = ()
    ) -> str:
        """Serve `record` and `steps` unchanged, whatever the clock says."""
        with self._lock:
            self._require_workflow(workflow_id)
            entry = StaticRun.from_record(workflow_id, record, steps)
            self._store(entry)
            return entry.run_id

    def add_run(
        self,
        workflow_id: str,
        start_at: float | None = None,
        fail_node: str | None = None,
        step_durations: Mapping[str, float] | None = None,
        *,
        inputs: Mapping[str, Any] | None = None,
        fail_soft: bool | None = None,
        fail_message: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Add one run starting at `start_at` (default: now) and return its id.

        `step_durations` gives seconds per node id (others take a default from the node's
        weight); `fail_node` makes that node fail, hard unless `fail_soft` or the node's own
        `Failure` says soft. `run_id` serves the run under that id, whatever its text (path
        syntax such as `../x` or `r?a=1`, control characters: what a hostile API could send).
        Raises KeyError for an unknown workflow, ValueError for a bad node or a taken id.
        """
        with self._lock:
            spec = self._executable(workflow_id)
            durations = default_durations(spec, step_durations)
            failure = None
            if fail_node is not None:
                failure = failure_at(spec, fail_node, soft=fail_soft, message=fail_message)
            rng = random.Random(f"{self.seed}:run:{next(self._batches)}")
            generated_id = random_uuid(rng)
            run_id = generated_id if run_id is None else run_id
            chosen = inputs if inputs is not None else rng.choice(spec.sample_inputs)
            start = self.clock() if start_at is None else start_at
            run = plan_run(
                spec,
                rng,
                run_id=run_id,
                start_us=seconds_to_us(start),
                inputs=chosen,
                durations_us=durations,
                failure=failure,
            )
            self._store(run)
            return run_id

    def add_history(
        self,
        workflow_id: str,
        count: int,
        *,
        every: float = 60.0,
        end_by: float | None = None,
        duration: tuple[float, float] = (1.0, 6.0),
        failure_rate: float = 0.0,
        fail_runs: Collection[int] = (),
    ) -> list[str]:
        """Add `count` runs started `every` seconds apart, the newest `every` before `end_by`.

        With `every` above the longest duration they have all finished by `end_by` (default
        now). `fail_runs` are indexes (0 = oldest) that fail whatever `failure_rate` says.
        Returns the run ids, oldest first.
        """
        with self._lock:
            spec = self._executable(workflow_id)
            end_us = seconds_to_us(self.clock() if end_by is None else end_by)
            tag = f"{self.seed}:history:{workflow_id}:{next(self._batches)}"
            run_ids = []
            for index in range(count):
                start_us = end_us - (count - index) * seconds_to_us(every)
                run = self._generated_run(
                    spec,
                    f"{tag}:{index}",
                    start_us=start_us,
                    jitter_us=0,
                    duration=duration,
                    failure_rate=failure_rate,
                    forced_failure=index in fail_runs,
                )
                self._store(run)
                run_ids.append(run.run_id)
            return run_ids

    def add_schedule(
        self,
        workflow_id: str,
        every: float,
        *,
        first_at: float | None = None,
        jitter: float = 0.0,
        duration: tuple[float, float] = (1.0, 6.0),
        failure_rate: float = 0.0,
        fail_runs: Collection[int] = (),
        count: int | None = None,
    ) -> None:
        """Start a run of the workflow every `every` seconds from `first_at` (default now).

        Runs are made lazily when the clock reaches them, each delayed by up to `jitter`
        seconds and lasting about `duration` (min, max) seconds. `failure_rate` (0..1) picks
        failing runs by seed; `fail_runs` are run indexes (0 = first) that always fail.
        `count` bounds how many runs the schedule makes (default: no bound).
        """
        if every <= 0:
            raise ValueError("every must be positive")
        with self._lock:
            spec = self._executable(workflow_id)
            first = self.clock() if first_at is None else first_at
            self._schedules.append(
                _Schedule(
                    spec=spec,
                    tag=f"{self.seed}:schedule:{workflow_id}:{next(self._batches)}",
                    first_us=seconds_to_us(first),
                    every_us=seconds_to_us(every),
                    jitter_us=seconds_to_us(jitter),
                    duration=duration,
                    failure_rate=failure_rate,
                    fail_runs=frozenset(fail_runs),
                    count=count,
                )
            )

    def _generated_run(
        self,
        spec: WorkflowSpec,
        tag: str,
        *,
        start_us: int,
        jitter_us: int,
        duration: tuple[float, float],
        failure_rate: float,
        forced_failure: bool,
    ) -> PlannedRun:
        # One generator per run, seeded by its tag: a run is the same whenever it is made.
        rng = random.Random(tag)
        run_id = random_uuid(rng)
        start_us += rng.randrange(jitter_us) if jitter_us > 0 else 0
        inputs = rng.choice(spec.sample_inputs)
        fail_node = choose_failure(spec, rng, rate=failure_rate, forced=forced_failure)
        failure = None if fail_node is None else failure_at(spec, fail_node)
        return plan_run(
            spec,
            rng,
            run_id=run_id,
            start_us=start_us,
            inputs=inputs,
            durations_us=sample_durations(spec, rng, duration),
            failure=failure,
        )

    def _materialize(self) -> int:
        """Make the scheduled runs that are due; returns the clock reading used."""
        now_us = self.now_us()
        for schedule in self._schedules:
            while (due := schedule.next_due_us()) is not None and due <= now_us:
                run = self._generated_run(
                    schedule.spec,
                    f"{schedule.tag}:{schedule.made}",
                    start_us=due,
                    jitter_us=schedule.jitter_us,
                    duration=schedule.duration,
                    failure_rate=schedule.failure_rate,
                    forced_failure=schedule.made in schedule.fail_runs,
                )
                schedule.made += 1
                self._store(run)
        return now_us

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

    def _visible_run(self, workflow_id: str, run_id: str, now_us: int) -> RunEntry | None:
        entry = self._run_by_id.get(run_id)
        if entry is None or entry.workflow_id != workflow_id or not entry.is_visible(now_us):
            return None
        return entry


def _window_end(offset: int, limit: int | None, newest: int | None) -> int | None:
    ends = [end for end in (None if limit is None else offset + limit, newest) if end is not None]
    return min(ends) if ends else None


# ---------------------------------------------------------------------------- built-ins


def demo_scenario(clock: Clock = time.time, *, seed: int = 0) -> Scenario:
    """Realistic workflows that start runs every few seconds, some of which fail.

    A 20-30 s demo sees several finished traces and at least one failure; a few finished
    runs from the last minutes are there from the start.
    """
    now = clock()
    scenario = Scenario(demo.demo_workflows(now), clock=clock, seed=seed)
    for plan in demo.DEMO_PLANS:
        scenario.add_history(
            plan.workflow_id,
            plan.history,
            every=plan.history_every,
            end_by=now - 5.0,
            duration=plan.duration,
            failure_rate=plan.failure_rate,
            fail_runs=plan.history_fail_runs,
        )
        scenario.add_schedule(
            plan.workflow_id,
            plan.every,
            first_at=now + plan.first_in,
            jitter=plan.jitter,
            duration=plan.duration,
            failure_rate=plan.failure_rate,
            fail_runs=plan.fail_runs,
        )
    return scenario


def packaged_fixtures() -> Traversable:
    """The copy of shared/fixtures shipped inside the package."""
    return resources.files("exporter.emulator") / "data"


def fixture_scenario(
    shared_dir: Path | Traversable | None = None, *, clock: Clock = time.time, seed: int = 0
) -> Scenario:
    """Serve the documented fixtures exactly as they are (static records).

    `shared_dir` is the folder holding the fixture files or its parent (`shared/`);
    default: the copy packaged in `exporter/emulator/data`.
    """
    folder = _fixture_folder(shared_dir)

    def load(name: str) -> Any:
        return json.loads((folder / name).read_text(encoding="utf-8"))

    diagram = load("diagram.json")["diagram"]
    scenario = Scenario(clock=clock, seed=seed)
    for record in load("workflows.json"):
        is_joke = record["workflow_id"] == FIXTURE_JOKE_WORKFLOW_ID
        scenario.add_static_workflow(record, diagram=diagram if is_joke else None)
    steps = load("steps-model-slack.json")
    for record in load("runs-list.json"):
        run_steps = steps if record["id"] == FIXTURE_STEPS_RUN_ID else ()
        scenario.add_static_run(FIXTURE_JOKE_WORKFLOW_ID, record, run_steps)
    for record in load("run.json"):  # documented as a one-element array
        scenario.add_static_run(FIXTURE_HI_WORKFLOW_ID, record)
    return scenario


def _fixture_folder(shared_dir: Path | Traversable | None) -> Path | Traversable:
    if shared_dir is None:
        return packaged_fixtures()
    nested = shared_dir / "fixtures"
    return nested if nested.is_dir() else shared_dir
