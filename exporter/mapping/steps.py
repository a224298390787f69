"""One step record, parsed once: times, node type, failure; and the run's steps by node.

Shared by the span builders and the run analysis. Pure: no I/O, no clock.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.errors import MappingError
from exporter.mapping.failure import Failure, step_failure
from exporter.mapping.graph import WorkflowGraph
from exporter.mapping.nodes import as_mapping, infer_node_type
from exporter.mapping.status import run_is_terminal
from exporter.mapping.timeparse import lenient_timestamp_ns, parse_optional_timestamp_ns
from exporter.source.models import Run, Step


@dataclass(frozen=True)
class Problem:
    """Something in a record we could not use. `skipped`: no span came of it.

    `counted`: the kind it is counted as although nothing was skipped (a skip is counted
    as its record's kind).
    """

    record: str
    reason: str
    skipped: bool
    counted: str | None = None


@dataclass(frozen=True)
class StepView:
    """A step with its parsed times and classification, shared by several builders."""

    step: Step
    node_id: str
    start_ns: int
    end_ns: int
    node_type: str
    failure: Failure | None


# --- times -----------------------------------------------------------------------------


def run_times(run: Run, problems: list[Problem]) -> tuple[int | None, int | None]:
    return (
        optional_time(run.start_time, f"run {run.id}", "start_time", problems),
        optional_time(run.end_time, f"run {run.id}", "end_time", problems),
    )


def run_ended(run: Run) -> bool:
    """Whether the run is over, as map_run judges it (an unreadable end time is none)."""
    return run_is_terminal(run.status, has_end_time=lenient_timestamp_ns(run.end_time) is not None)


def optional_time(value: object, record: str, name: str, problems: list[Problem]) -> int | None:
    try:
        return parse_optional_timestamp_ns(value)
    except MappingError as exc:
        problems.append(Problem(record, f"{name}: {exc}", skipped=False))
        return None


def step_window(step: Step, anchor: int | None, problems: list[Problem]) -> tuple[int, int] | None:
    record = f"step {step.id}"
    start = optional_time(step.start_time, record, "start_time", problems)
    end = optional_time(step.end_time, record, "end_time", problems)
    start = start if start is not None else end if end is not None else anchor
    if start is None:
        problems.append(Problem(record, "no usable start or end time", skipped=True))
        return None
    # End before start (clock skew) becomes a zero-length span, never a negative one.
    end = start if end is None or end < start else end
    return start, end


# --- steps -----------------------------------------------------------------------------


def view_step(
    step: Step, graph: WorkflowGraph, anchor: int | None, problems: list[Problem]
) -> StepView | None:
    window = step_window(step, anchor, problems)
    if window is None:
        return None
    node_id = step.node_id or ""
    inputs, outputs = as_mapping(step.inputs), as_mapping(step.outputs)
    node_type = graph.node_types.get(node_id) or infer_node_type(inputs, outputs)
    subject = inputs.get("app_name") if isinstance(inputs.get("app_name"), str) else None
    failure = step_failure(
        step.status, step.error, step.outputs, subject=str(subject or node_id or "step")
    )
    return StepView(step, node_id, window[0], window[1], node_type, failure)


@dataclass(frozen=True)
class StepIndex:
    """Steps by node, in start order: links are found by bisection, not by scanning."""

    by_node: Mapping[str, list[StepView]]
    starts: Mapping[str, list[int]]

    @classmethod
    def of(cls, views: Sequence[StepView]) -> StepIndex:
        by_node: dict[str, list[StepView]] = {}
        for view in views:
            if view.node_id:
                by_node.setdefault(view.node_id, []).append(view)
        for group in by_node.values():
            group.sort(key=lambda v: (v.start_ns, v.step.id))
        return cls(by_node, {node: [v.start_ns for v in group] for node, group in by_node.items()})

    def latest_of(self, node_id: str, before_ns: int) -> StepView | None:
        """The most recent step of `node_id` that started no later than `before_ns`.

        A node that ran several times (loops) feeds the step that follows its latest run.
        """
        position = bisect_right(self.starts.get(node_id, []), before_ns)
        return self.by_node[node_id][position - 1] if position else None


def upstream_nodes(view: StepView, index: StepIndex, graph: WorkflowGraph) -> tuple[str, ...]:
    if graph.knows(view.node_id):
        return graph.upstream.get(view.node_id, ())
    # No graph: input_data keys that name another step's node are its inputs' sources.
    input_data = as_mapping(as_mapping(view.step.inputs).get("input_data"))
    return tuple(key for key in input_data if key in index.by_node and key != view.node_id)


def upstream_steps(view: StepView, index: StepIndex, graph: WorkflowGraph) -> list[StepView]:
    """The step of each upstream node that fed this one: its latest run before it started."""
    found = (index.latest_of(node, view.start_ns) for node in upstream_nodes(view, index, graph))
    return [step for step in found if step is not None]
