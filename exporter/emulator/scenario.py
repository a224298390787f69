"""What the emulator serves: workflows, and runs that appear and progress with a clock.

No I/O here. All times come from an injectable `clock` (epoch seconds), so tests can
freeze and advance them; every generated id, text and duration comes from
`random.Random` seeded per run, so a seed reproduces a scenario. The store of workflows
and runs is store.py, the generated runs builders.py; the built-in scenarios are
`demo_scenario` (demo.py) and `fixture_scenario` (fixtures.py).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from exporter.emulator.builders import RunMix, Schedule, history
from exporter.emulator.graph import WorkflowSpec, random_uuid, seconds_to_us
from exporter.emulator.runs import (
    RenderOptions,
    RunOutputs,
    default_durations,
    failure_at,
    plan_run,
)
from exporter.emulator.store import Clock, RunStore


class Scenario(RunStore):
    """A RunStore that makes runs: one at a time, a finished history, or on a schedule.

    Scheduled runs are made lazily, when a query finds the clock has reached them, so a
    scenario needs no thread of its own. Run ids and contents come from the seed and the
    order of the calls that made them. Thread-safe. Used by the Emulator (which serves
    it), by `demo_scenario` and `fixture_scenario`, and by tests and benchmarks that
    build their own workflows and runs.
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
        options = RenderOptions(running_status, completed_status, failed_status, run_outputs)
        super().__init__(clock, options)
        self.seed = seed
        self._schedules: list[Schedule] = []
        self._batches = itertools.count()  # keeps the seed tags of separate calls apart
        for spec in workflows:
            self.add_workflow(spec)

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
            mix = RunMix(duration, failure_rate, frozenset(fail_runs))
            runs = history(spec, tag, count, mix, every_us=seconds_to_us(every), end_us=end_us)
            for run in runs:
                self._store(run)
            return [run.run_id for run in runs]

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
                Schedule(
                    spec=spec,
                    tag=f"{self.seed}:schedule:{workflow_id}:{next(self._batches)}",
                    first_us=seconds_to_us(first),
                    every_us=seconds_to_us(every),
                    jitter_us=seconds_to_us(jitter),
                    mix=RunMix(duration, failure_rate, frozenset(fail_runs)),
                    count=count,
                )
            )

    def _materialize(self) -> int:
        """Make the scheduled runs that are due; returns the clock reading used."""
        now_us = self.now_us()
        for schedule in self._schedules:
            for run in schedule.due_runs(now_us):
                self._store(run)
        return now_us
