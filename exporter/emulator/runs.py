"""Runs: planned in full when created, rendered as API records at request time.

Planning fixes every step's start, end, inputs and outputs from a seeded generator; what a
request sees is derived from that plan and the clock at that moment. A run therefore
"progresses" with no background thread, and the same seed always gives the same ids,
texts and timings.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from exporter.emulator.graph import (
    START,
    US_PER_S,
    Failure,
    JsonDict,
    Node,
    WorkflowSpec,
    format_run_time,
    parse_time_us,
    random_uuid,
    seconds_to_us,
)

# Pauses measured in the documented example (run 5b69669f and its steps).
LEAD_US = 120_000  # run start -> first step start
GAP_US = 20_000  # parent end -> child start
TAIL_US = 20_000  # last step end -> run end
# Seconds per unit of node weight when a run is given no durations.
DEFAULT_SECONDS_PER_WEIGHT = 0.5

RunOutputs = Literal["selected", "all"]


@dataclass(frozen=True)
class RenderOptions:
    """The undocumented choices in how records look (docs/orchestra-api.md, "Statuses")."""

    running_status: str = "running"
    completed_status: str = "completed"
    failed_status: str = "failed"
    # "selected": `outputs` is the selected node's published value (history example);
    # "all": a copy of `all_outputs` (single-run example).
    run_outputs: RunOutputs = "selected"


@dataclass(frozen=True)
class PlannedStep:
    step_id: str
    node_id: str
    start_us: int
    end_us: int
    inputs: JsonDict
    outputs: JsonDict | None  # None when the step failed hard
    error: str | None
    published: Any
    route: str | None  # see Node.route

    @property
    def failed_hard(self) -> bool:
        return self.error is not None

    def routes_to(self, child: str) -> bool:
        return self.route is None or self.route == child

    def record(self, now_us: int, run: PlannedRun, options: RenderOptions) -> JsonDict:
        finished = now_us >= self.end_us
        if finished:
            status = options.failed_status if self.failed_hard else options.completed_status
        else:
            status = options.running_status
        return {
            "id": self.step_id,
            "user_id": run.user_id,
            "organization_id": run.organization_id,
            "node_id": self.node_id,
            "status": status,
            "start_time": format_run_time(self.start_us),
            "end_time": format_run_time(self.end_us) if finished else None,
            "elapsed_time": (min(now_us, self.end_us) - self.start_us) // US_PER_S,
            "error": self.error if finished else None,
            "outputs": self.outputs if finished else None,
            "inputs": self.inputs,
            "step_metadata": None,
            "tokens": 0,  # documented as always 0
        }


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    workflow_id: str
    user_id: str
    organization_id: str
    start_us: int
    end_us: int
    inputs: JsonDict
    steps: tuple[PlannedStep, ...]  # ordered by start
    selected_output: str
    error: str | None  # the first hard failure's message

    @property
    def failed(self) -> bool:
        return self.error is not None

    def is_visible(self, now_us: int) -> bool:
        return now_us >= self.start_us

    def record(self, now_us: int, options: RenderOptions) -> JsonDict:
        finished = now_us >= self.end_us
        all_outputs = dict(self.inputs)
        for step in self.steps:
            if now_us >= step.end_us and not step.failed_hard:
                all_outputs[step.node_id] = step.published
        if finished:
            status = options.failed_status if self.failed else options.completed_status
            outputs = None if self.failed else self._outputs(all_outputs, options)
        else:
            status, outputs = options.running_status, None
        return {
            "id": self.run_id,
            "status": status,
            "start_time": format_run_time(self.start_us),
            "end_time": format_run_time(self.end_us) if finished else None,
            "elapsed_time": (min(now_us, self.end_us) - self.start_us) // US_PER_S,
            "error": self.error if finished else None,
            "outputs": outputs,
            "all_outputs": all_outputs,
            "inputs": self.inputs,
        }

    def _outputs(self, all_outputs: JsonDict, options: RenderOptions) -> Any:
        if options.run_outputs == "all":
            return dict(all_outputs)
        return all_outputs.get(self.selected_output)

    def step_records(self, now_us: int, options: RenderOptions) -> list[JsonDict]:
        return [
            step.record(now_us, self, options) for step in self.steps if now_us >= step.start_us
        ]


@dataclass(frozen=True)
class StaticRun:
    """A run served exactly as given (fixtures), whatever the clock says."""

    run_id: str
    workflow_id: str
    start_us: int
    run: JsonDict
    steps: tuple[JsonDict, ...]

    @classmethod
    def from_record(
        cls, workflow_id: str, record: JsonDict, steps: Sequence[JsonDict] = ()
    ) -> StaticRun:
        start = record.get("start_time")
        start_us = parse_time_us(start) if isinstance(start, str) else 0
        return cls(str(record["id"]), workflow_id, start_us, record, tuple(steps))

    def is_visible(self, now_us: int) -> bool:
        return True

    def record(self, now_us: int, options: RenderOptions) -> JsonDict:
        return copy.deepcopy(self.run)

    def step_records(self, now_us: int, options: RenderOptions) -> list[JsonDict]:
        return copy.deepcopy(list(self.steps))


RunEntry = PlannedRun | StaticRun

# ---------------------------------------------------------------------------- planning


def plan_run(
    spec: WorkflowSpec,
    rng: random.Random,
    *,
    run_id: str,
    start_us: int,
    inputs: Mapping[str, Any],
    durations_us: Mapping[str, int],
    failure: tuple[str, Failure] | None = None,
) -> PlannedRun:
    """Plan every step of one run.

    A node starts when all of its parents that ran have ended; a router's children that it
    did not pick never run, nor does anything only they lead to. A hard failure stops the
    run: steps that would start after it ended produce no record.
    """
    run_inputs = dict(inputs)
    produced: dict[str, PlannedStep] = {}
    for node in spec.topological_order:
        begin = _start_of(spec, node.node_id, produced, start_us)
        if begin is None:
            continue
        input_data = dict(run_inputs)
        for ancestor in spec.ancestors[node.node_id]:
            if ancestor in produced and not produced[ancestor].failed_hard:
                input_data[ancestor] = produced[ancestor].published
        node_failure = failure[1] if failure is not None and failure[0] == node.node_id else None
        produced[node.node_id] = _plan_step(
            node,
            rng,
            run_id=run_id,
            begin_us=begin,
            end_us=begin + max(durations_us.get(node.node_id, 0), 1),
            input_data=input_data,
            failure=node_failure,
        )
    steps = _cut_after_failure(sorted(produced.values(), key=lambda step: step.start_us))
    error = next((step.error for step in steps if step.failed_hard), None)
    last_end = max((step.end_us for step in steps), default=start_us + LEAD_US)
    return PlannedRun(
        run_id=run_id,
        workflow_id=spec.workflow_id,
        user_id=spec.user_id,
        organization_id=spec.organization_id,
        start_us=start_us,
        end_us=last_end + TAIL_US,
        inputs=run_inputs,
        steps=tuple(steps),
        selected_output=spec.selected_output,
        error=error,
    )


def _start_of(
    spec: WorkflowSpec, node_id: str, produced: Mapping[str, PlannedStep], run_start_us: int
) -> int | None:
    """When the node starts, or None when no parent that ran leads to it."""
    ends: list[int] = []
    for parent in spec.parents[node_id]:
        if parent == START:
            ends.append(run_start_us + LEAD_US - GAP_US)
        elif parent in produced and produced[parent].routes_to(node_id):
            ends.append(produced[parent].end_us)
    return max(ends) + GAP_US if ends else None


def _plan_step(
    node: Node,
    rng: random.Random,
    *,
    run_id: str,
    begin_us: int,
    end_us: int,
    input_data: JsonDict,
    failure: Failure | None,
) -> PlannedStep:
    step_id = random_uuid(rng)
    inputs = node.step_inputs(run_id, input_data)
    outputs: JsonDict | None
    error: str | None = None
    if failure is None:
        outputs = node.step_outputs(rng, inputs, begin_us, end_us)
    else:
        outputs = node.soft_failure_outputs(rng, failure.message) if failure.soft else None
        if outputs is None:  # hard failure, or a kind that cannot fail softly
            error = failure.message
    return PlannedStep(
        step_id=step_id,
        node_id=node.node_id,
        start_us=begin_us,
        end_us=end_us,
        inputs=inputs,
        outputs=outputs,
        error=error,
        published=None if outputs is None else node.publish(outputs),
        route=None if outputs is None else node.route(outputs),
    )


def _cut_after_failure(steps: list[PlannedStep]) -> list[PlannedStep]:
    failed_ends = [step.end_us for step in steps if step.failed_hard]
    if not failed_ends:
        return steps
    cutoff = min(failed_ends)
    return [step for step in steps if step.start_us < cutoff]


def default_durations(
    spec: WorkflowSpec, overrides: Mapping[str, float] | None = None
) -> dict[str, int]:
    """Durations from node weights, with `overrides` (seconds per node id) taking precedence."""
    durations = {
        node.node_id: seconds_to_us(node.weight * DEFAULT_SECONDS_PER_WEIGHT) for node in spec.nodes
    }
    for node_id, seconds in (overrides or {}).items():
        if node_id not in durations:
            raise ValueError(f"workflow {spec.name!r} has no node {node_id!r}")
        durations[node_id] = seconds_to_us(seconds)
    return durations


def sample_durations(
    spec: WorkflowSpec, rng: random.Random, total: tuple[float, float]
) -> dict[str, int]:
    """Node durations such that the whole run takes about `total` (min, max) seconds."""
    target_us = seconds_to_us(rng.uniform(*total))
    weights = {node.node_id: node.weight * rng.uniform(0.6, 1.4) for node in spec.nodes}
    longest: dict[str, float] = {}
    steps_on_path: dict[str, int] = {}
    for node in spec.topological_order:
        parents = [p for p in spec.parents[node.node_id] if p != START]
        longest[node.node_id] = weights[node.node_id] + max(
            (longest[p] for p in parents), default=0
        )
        steps_on_path[node.node_id] = 1 + max((steps_on_path[p] for p in parents), default=0)
    critical = max(longest.values(), default=1.0)
    pauses_us = LEAD_US + TAIL_US + GAP_US * max(steps_on_path.values(), default=0)
    budget_us = max(target_us - pauses_us, target_us // 2)
    return {node_id: round(weight * budget_us / critical) for node_id, weight in weights.items()}


def choose_failure(
    spec: WorkflowSpec, rng: random.Random, *, rate: float, forced: bool = False
) -> str | None:
    """The node a generated run fails at, or None. Prefers nodes that declare a failure."""
    roll = rng.random()  # drawn even when forced, so later draws do not shift
    if not forced and roll >= rate:
        return None
    candidates = [node for node in spec.nodes if node.failure is not None] or list(spec.nodes)
    return rng.choice(candidates).node_id


def failure_at(
    spec: WorkflowSpec,
    node_id: str,
    *,
    soft: bool | None = None,
    message: str | None = None,
) -> tuple[str, Failure]:
    """The failure for `node_id`: the node's own, with `soft`/`message` overriding it."""
    if node_id not in spec.node_by_id:
        raise ValueError(f"workflow {spec.name!r} has no node {node_id!r}")
    node = spec.node_by_id[node_id]
    base = node.failure or node.default_failure()
    return node_id, Failure(
        message=base.message if message is None else message,
        soft=base.soft if soft is None else soft,
    )
