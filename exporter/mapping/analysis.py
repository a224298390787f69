"""What a run's steps say together: waits, queue moments, cost, the critical path. Pure.

Computed once per mapping from every terminal step of the run (not only those exported
now), so a step's facts do not depend on which poll exported it (docs/design.md, "Where
the time went" and "Cost").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from exporter.mapping import attributes as attr
from exporter.mapping.cost import Cost, PriceTable, step_cost
from exporter.mapping.genai import usage_counts
from exporter.mapping.graph import WorkflowGraph
from exporter.mapping.nodes import as_mapping
from exporter.mapping.steps import StepIndex, StepView, upstream_steps
from exporter.mapping.timing import Interval, busy_ns, critical_path, waits


@dataclass(frozen=True)
class RunAnalysis:
    origin: int | None  # the run's start: its record's, else its first step's
    waits: Mapping[str, int] = field(default_factory=dict)  # step id -> ns waited
    queued_at: Mapping[str, int] = field(default_factory=dict)  # step id -> runnable at
    costs: Mapping[str, Cost] = field(default_factory=dict)  # priced model steps
    unpriced: Mapping[str, str] = field(default_factory=dict)  # step id -> model
    critical_path: tuple[str, ...] = ()  # step ids, first first; only for ended runs
    busy_ns: int = 0  # the union of the steps' intervals

    @property
    def run_cost(self) -> Cost | None:
        if not self.costs:
            return None
        total = Cost(0.0, 0.0)
        for cost in self.costs.values():
            total += cost
        return total


def analyse(
    views: Sequence[StepView],
    index: StepIndex,
    graph: WorkflowGraph,
    run_start: int | None,
    prices: PriceTable | None,
    *,
    terminal: bool,
) -> RunAnalysis:
    starts = [v.start_ns for v in views]
    origin = min([run_start, *starts]) if run_start is not None else min(starts, default=None)
    if origin is None:
        return RunAnalysis(None)
    intervals = {v.step.id: Interval(v.step.id, v.start_ns, v.end_ns) for v in views}
    by_id = {v.step.id: v for v in views}

    def predecessors(interval: Interval) -> list[Interval]:
        upstream = upstream_steps(by_id[interval.key], index, graph)
        return [intervals[step.step.id] for step in upstream]

    costs, unpriced = _costs(views, prices, origin)
    path = critical_path(list(intervals.values()), predecessors) if terminal else []
    return RunAnalysis(
        origin=origin,
        waits=waits(list(intervals.values()), origin),
        queued_at=_queue_moments(views, index, graph, origin),
        costs=costs,
        unpriced=unpriced,
        critical_path=tuple(path),
        busy_ns=busy_ns(list(intervals.values())),
    )


def _queue_moments(
    views: Sequence[StepView], index: StepIndex, graph: WorkflowGraph, origin: int
) -> dict[str, int]:
    """When each step became runnable: its upstream steps' latest end (graph known only)."""
    found = {}
    for view in views:
        if not graph.knows(view.node_id):
            continue
        parents = graph.upstream.get(view.node_id, ())
        ends = [
            step.end_ns
            for step in (index.latest_of(node, view.start_ns) for node in parents)
            if step is not None
        ]
        if parents and not ends:
            continue  # its upstream steps are not in the record: cannot tell
        found[view.step.id] = min(max(ends, default=origin), view.start_ns)
    return found


def _costs(
    views: Sequence[StepView], prices: PriceTable | None, at_ns: int
) -> tuple[dict[str, Cost], dict[str, str]]:
    costs: dict[str, Cost] = {}
    unpriced: dict[str, str] = {}
    if prices is None:
        return costs, unpriced
    for view in views:
        if view.node_type != attr.NODE_TYPE_MODEL:
            continue
        inputs, outputs = as_mapping(view.step.inputs), as_mapping(view.step.outputs)
        counts = usage_counts(outputs)
        if counts is None:
            continue  # no token counts: nothing to price
        models = _model_names(inputs, outputs)
        price = next(
            (p for p in (prices.price_at(m, at_ns) for m in models) if p is not None), None
        )
        if price is None:
            unpriced[view.step.id] = models[0] if models else "unknown"
            continue
        costs[view.step.id] = step_cost(price, *counts)
    return costs, unpriced


def _model_names(inputs: Mapping[str, object], outputs: Mapping[str, object]) -> list[str]:
    """The requested model, then the model that answered: the first one priced counts."""
    names = [inputs.get("model"), outputs.get("model")]
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n))
