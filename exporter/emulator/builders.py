"""Generated runs: a run history and a schedule of runs, each run drawn from its own seed.

Pure functions of a workflow spec and a seed tag: a run is the same whenever it is made,
so a scenario's history and its scheduled runs repeat exactly for the same seed. Used by
`Scenario.add_history` and `Scenario.add_schedule`; runs.py plans each run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from exporter.emulator.graph import WorkflowSpec, random_uuid
from exporter.emulator.runs import (
    PlannedRun,
    choose_failure,
    failure_at,
    plan_run,
    sample_durations,
)


@dataclass(frozen=True)
class RunMix:
    """What generated runs look like: about `duration` (min, max) seconds long, failing at
    `failure_rate` (0..1, picked by seed) and always at the run indexes in `fail_runs`."""

    duration: tuple[float, float] = (1.0, 6.0)
    failure_rate: float = 0.0
    fail_runs: frozenset[int] = frozenset()


def generated_run(
    spec: WorkflowSpec, tag: str, index: int, mix: RunMix, *, start_us: int, jitter_us: int = 0
) -> PlannedRun:
    """Run number `index` of a batch seeded by `tag`, starting up to `jitter_us` late."""
    # One generator per run, seeded by its tag: a run is the same whenever it is made.
    rng = random.Random(f"{tag}:{index}")
    run_id = random_uuid(rng)
    start_us += rng.randrange(jitter_us) if jitter_us > 0 else 0
    inputs = rng.choice(spec.sample_inputs)
    forced = index in mix.fail_runs
    fail_node = choose_failure(spec, rng, rate=mix.failure_rate, forced=forced)
    failure = None if fail_node is None else failure_at(spec, fail_node)
    return plan_run(
        spec,
        rng,
        run_id=run_id,
        start_us=start_us,
        inputs=inputs,
        durations_us=sample_durations(spec, rng, mix.duration),
        failure=failure,
    )


def history(
    spec: WorkflowSpec, tag: str, count: int, mix: RunMix, *, every_us: int, end_us: int
) -> list[PlannedRun]:
    """`count` runs started `every_us` apart, oldest first, the newest `every_us` before
    `end_us`."""
    return [
        generated_run(spec, tag, index, mix, start_us=end_us - (count - index) * every_us)
        for index in range(count)
    ]


@dataclass
class Schedule:
    """A workflow started every `every_us` from `first_us`; its runs are made when due.

    `made` counts the runs made so far; `count` bounds them (None: no bound).
    """

    spec: WorkflowSpec
    tag: str
    first_us: int
    every_us: int
    jitter_us: int
    mix: RunMix
    count: int | None
    made: int = 0

    def next_due_us(self) -> int | None:
        if self.count is not None and self.made >= self.count:
            return None
        return self.first_us + self.made * self.every_us

    def due_runs(self, now_us: int) -> Iterator[PlannedRun]:
        """The runs due by `now_us` that were not made yet, each counted as made."""
        while (due := self.next_due_us()) is not None and due <= now_us:
            run = generated_run(
                self.spec, self.tag, self.made, self.mix, start_us=due, jitter_us=self.jitter_us
            )
            self.made += 1
            yield run
