"""Run + steps (+ workflow graph) -> OpenTelemetry spans. Pure: no I/O, no clock.

The shape is the trace contract of docs/design.md ("Trace shape"): one trace per run, a root
span covering its steps, one child span per step, deterministic ids, and times taken
from the records (never from ``elapsed_time``, which is truncated to whole seconds).
Spans are `SpanSpec`s (mapping/otlp.py), each encoded once as the OTLP Span it is sent as.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Final

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from exporter.mapping import attributes as attr
from exporter.mapping.analysis import RunAnalysis, analyse
from exporter.mapping.content import truncate
from exporter.mapping.cost import Cost
from exporter.mapping.failure import Failure, run_failure
from exporter.mapping.genai import Attributes, openinference_mirror
from exporter.mapping.graph import EMPTY_GRAPH, WorkflowGraph
from exporter.mapping.ids import (
    root_span_id,
    span_context,
    step_span_id,
    trace_id_for_run,
    wait_span_id,
)
from exporter.mapping.logs import exception_events_on_spans, failure_log
from exporter.mapping.nodes import NodeKind, as_mapping, generic_content, node_kind
from exporter.mapping.options import MappingOptions
from exporter.mapping.otlp import EventSpec, LinkSpec, SpanSpec
from exporter.mapping.status import run_is_terminal, step_is_terminal
from exporter.mapping.steps import (
    Problem,
    StepIndex,
    StepView,
    run_times,
    upstream_steps,
    view_step,
)
from exporter.mapping.traceparent import CallerContext, caller_context
from exporter.source.models import Run, Step

# Bounds on what one span may carry, whatever the records hold (attribute text is bounded
# by MappingOptions.content_max_length). A step consuming hundreds of upstream outputs
# links to the first MAX_LINKS of them.
MAX_LINKS = 64
MAX_LIST_ITEMS = 32
MAX_NAME_LENGTH = 256
_ID_ATTRIBUTES = frozenset({attr.WORKFLOW_ID, attr.RUN_ID, attr.STEP_ID, attr.NODE_ID})
RUN_CONTENT = generic_content(attr.RUN_INPUT, attr.RUN_OUTPUT)
# ORCHESTRA_WAIT_SPANS: gaps shorter than this are scheduling noise, not worth a span.
WAIT_SPAN_MIN_NS: Final = 100_000_000
_NS: Final = 1_000_000_000


@dataclass(frozen=True)
class WorkflowInfo:
    workflow_id: str
    name: str | None = None
    graph: WorkflowGraph = EMPTY_GRAPH

    @property
    def display_name(self) -> str:
        return self.name or self.workflow_id


@dataclass(frozen=True)
class RunSpans:
    trace_id: int
    run_terminal: bool
    steps: Mapping[str, SpanSpec]  # step id -> span, terminal steps not already exported
    root: SpanSpec | None  # present only once the run is terminal
    steps_in_flight: int
    problems: tuple[Problem, ...] = ()
    # step id -> the INTERNAL `wait` span before it (ORCHESTRA_WAIT_SPANS), new steps only
    waits: Mapping[str, SpanSpec] = field(default_factory=dict)
    # the model of each newly mapped model step that has no price in the price table
    unpriced_models: tuple[str, ...] = ()
    # an ERROR log record for each newly mapped failed step, and for a failed run
    logs: tuple[LogRecord, ...] = ()

    def all_spans(self) -> list[SpanSpec]:
        spans = [*self.steps.values(), *self.waits.values()]
        if self.root is not None:
            spans.append(self.root)
        return spans


@dataclass(frozen=True)
class _Run:
    """What every span of one run is built from."""

    workflow: WorkflowInfo
    run: Run
    trace_id: int
    caller: CallerContext
    options: MappingOptions
    index: StepIndex
    facts: RunAnalysis
    root: SpanContext  # the root span's context: the parent of every step and wait span


def map_run(
    workflow: WorkflowInfo,
    run: Run,
    steps: Sequence[Step],
    options: MappingOptions,
    *,
    already_exported: AbstractSet[str] = frozenset(),
) -> RunSpans:
    """Spans for every terminal step not yet exported, and the root once the run ended."""
    problems: list[Problem] = []
    caller = caller_context(run.inputs, options.traceparent_input)
    if caller.problem is not None:
        problems.append(Problem(f"run {run.id}", caller.problem, False, "traceparent"))
    trace_id = trace_id_for_run(run.id)
    if caller.context is not None and options.traceparent_mode == "parent":
        trace_id = caller.context.trace_id  # the run moves into its caller's trace
    run_start, run_end = run_times(run, problems)
    terminal = run_is_terminal(run.status, has_end_time=run_end is not None)
    views, in_flight = _terminal_views(steps, workflow, terminal, run_end or run_start, problems)
    index = StepIndex.of(views)
    facts = analyse(views, index, workflow.graph, run_start, options.prices, terminal=terminal)
    root_context = span_context(trace_id, root_span_id(run.id))
    context = _Run(workflow, run, trace_id, caller, options, index, facts, root_context)
    new = [view for view in views if view.step.id not in already_exported]
    step_spans = {view.step.id: _step_span(view, context) for view in new}
    waits = {view.step.id: span for view in new if (span := _wait_span(view, context))}
    unpriced = tuple(facts.unpriced[v.step.id] for v in new if v.step.id in facts.unpriced)
    problems += [
        Problem(f"model {model}", "no price in ORCHESTRA_PRICES: its steps carry no cost", False)
        for model in dict.fromkeys(unpriced)
    ]
    failed = [(step_spans[v.step.id], v.failure) for v in new if v.failure is not None]
    root = None
    if terminal:
        run_failure = _root_failure(run, views)
        root = _root_span(views, (run_start, run_end), run_failure, context, problems)
        if root is not None and run_failure is not None:
            failed.append((root, run_failure))
    logs: tuple[LogRecord, ...] = ()
    if options.failure_logs:
        signal, limit = options.exception_signal, options.content_max_length
        logs = tuple(failure_log(span, failure, signal, limit) for span, failure in failed)
    return RunSpans(
        trace_id, terminal, step_spans, root, in_flight, tuple(problems), waits, unpriced, logs
    )


def _terminal_views(
    steps: Sequence[Step],
    workflow: WorkflowInfo,
    run_terminal: bool,
    anchor: int | None,
    problems: list[Problem],
) -> tuple[list[StepView], int]:
    """The steps that ended (all of them once the run did), and how many are in flight."""
    views: list[StepView] = []
    in_flight = 0
    seen: set[str] = set()
    for step in steps:
        if step.id in seen:
            problems.append(Problem(f"step {step.id}", "duplicate step id", skipped=True))
            continue
        seen.add(step.id)
        if not step_is_terminal(step.status, run_terminal=run_terminal):
            in_flight += 1
            continue
        view = view_step(step, workflow.graph, anchor, problems)
        if view is not None:
            views.append(view)
    return views, in_flight


# --- steps -----------------------------------------------------------------------------


def _step_span(view: StepView, context: _Run) -> SpanSpec:
    step, options = view.step, context.options
    attributes = _common_attributes(context.workflow, context.run)
    attributes[attr.STEP_ID] = step.id
    if view.node_id:
        attributes[attr.NODE_ID] = view.node_id
    attributes[attr.NODE_TYPE] = view.node_type
    if step.status is not None:
        attributes[attr.STEP_STATUS] = step.status
    kind = node_kind(view.node_type, as_mapping(step.inputs))
    attributes.update(_timing_attributes(view, context))
    attributes.update(_semantic_attributes(view, kind, context))
    if view.failure is not None:
        attributes[attr.ERROR_TYPE] = view.failure.error_type
    name = kind.semconv_name(attributes) if options.span_names == "semconv" else None
    events = (*_queue_events(view, context), *_exception_events(view.failure, view.end_ns, options))
    return SpanSpec(
        name=truncate(name or view.node_id or "step", MAX_NAME_LENGTH),
        context=span_context(context.trace_id, step_span_id(step.id)),
        parent=context.root,
        attributes=_bounded(attributes, options.content_max_length),
        events=events,
        links=_upstream_links(view, context),
        kind=kind.span_kind,
        status=_status(view.failure, options),
        start_time=view.start_ns,
        end_time=view.end_ns,
    )


def _timing_attributes(view: StepView, context: _Run) -> Attributes:
    found: Attributes = {}
    waited = context.facts.waits.get(view.step.id)
    if waited is not None:
        found[attr.STEP_WAIT] = waited / _NS
    if view.step.id in context.facts.critical_path:
        found[attr.STEP_CRITICAL_PATH] = True
    return found


def _semantic_attributes(view: StepView, kind: NodeKind, context: _Run) -> Attributes:
    options = context.options
    found = kind.attributes(as_mapping(view.step.inputs), as_mapping(view.step.outputs), options)
    cost = context.facts.costs.get(view.step.id)
    if cost is not None and options.prices is not None:
        found.update(_cost_attributes(cost, options.prices.currency))
    content: Attributes = {}
    if options.capture_content:
        content = kind.content(view.step.inputs, view.step.outputs, options)
    mirrored = openinference_mirror(found, content, root=False) if options.openinference else {}
    found.update(content)
    found.update(mirrored)
    return found


def _cost_attributes(cost: Cost, currency: str) -> Attributes:
    return {
        attr.COST_TOTAL: cost.total,
        attr.COST_INPUT: cost.input,
        attr.COST_OUTPUT: cost.output,
        attr.COST_CURRENCY: currency,
    }


def _queue_events(view: StepView, context: _Run) -> tuple[EventSpec, ...]:
    runnable = context.facts.queued_at.get(view.step.id)
    return () if runnable is None else (EventSpec(attr.QUEUE_EVENT, runnable, {}),)


def _wait_span(view: StepView, context: _Run) -> SpanSpec | None:
    """The gap before a step as a span of its own, for backends that show only spans."""
    waited = context.facts.waits.get(view.step.id, 0)
    if not context.options.wait_spans or waited < WAIT_SPAN_MIN_NS:
        return None
    attributes = _common_attributes(context.workflow, context.run)
    attributes[attr.STEP_ID] = view.step.id
    if view.node_id:
        attributes[attr.NODE_ID] = view.node_id
    attributes[attr.STEP_WAIT] = waited / _NS
    return SpanSpec(
        name=attr.WAIT_SPAN_NAME,
        context=span_context(context.trace_id, wait_span_id(view.step.id)),
        parent=context.root,
        attributes=_bounded(attributes, context.options.content_max_length),
        kind=SpanKind.INTERNAL,
        start_time=view.start_ns - waited,
        end_time=view.start_ns,
    )


def _upstream_links(view: StepView, context: _Run) -> tuple[LinkSpec, ...]:
    upstream = upstream_steps(view, context.index, context.workflow.graph)[:MAX_LINKS]
    return tuple(
        LinkSpec(
            span_context(context.trace_id, step_span_id(parent.step.id)),
            {attr.NODE_ID: truncate(parent.node_id, MAX_NAME_LENGTH)},
        )
        for parent in upstream
    )


# --- root ------------------------------------------------------------------------------


def _root_span(
    views: Sequence[StepView],
    run_window: tuple[int | None, int | None],
    failure: Failure | None,
    context: _Run,
    problems: list[Problem],
) -> SpanSpec | None:
    workflow, run, options, caller = context.workflow, context.run, context.options, context.caller
    starts = [t for t in (run_window[0], *(v.start_ns for v in views)) if t is not None]
    ends = [t for t in (run_window[1], *(v.end_ns for v in views)) if t is not None]
    if not starts and not ends:
        problems.append(Problem(f"run {run.id}", "no usable start or end time", skipped=True))
        return None
    start = min(starts) if starts else min(ends)
    end = max(max(ends) if ends else start, start)
    attributes = _common_attributes(workflow, run)
    attributes[attr.GEN_AI_OPERATION_NAME] = attr.OP_INVOKE_WORKFLOW
    if workflow.name:
        attributes[attr.GEN_AI_WORKFLOW_NAME] = workflow.name
    if run.status is not None:
        attributes[attr.RUN_STATUS] = run.status
    attributes.update(_run_time_attributes(views, end - start, context))
    run_cost = context.facts.run_cost
    if run_cost is not None and options.prices is not None:
        attributes.update(_cost_attributes(run_cost, options.prices.currency))
    if failure is not None:
        attributes[attr.ERROR_TYPE] = failure.error_type
    content: Attributes = {}
    if options.capture_content:
        content = RUN_CONTENT(run.inputs, run.outputs, options)
        attributes.update(content)
    if options.openinference:
        attributes.update(openinference_mirror(attributes, content, root=True))
    name = workflow.display_name
    if options.span_names == "semconv":
        name = f"{attr.OP_INVOKE_WORKFLOW} {name}"
    parent = caller.context if options.traceparent_mode == "parent" else None
    links = () if caller.context is None or parent is not None else (LinkSpec(caller.context, {}),)
    return SpanSpec(
        name=truncate(name, MAX_NAME_LENGTH),
        context=context.root,
        parent=parent,
        attributes=_bounded(attributes, options.content_max_length),
        events=_exception_events(failure, end, options),
        links=links,
        kind=SpanKind.INTERNAL,
        status=_status(failure, options),
        start_time=start,
        end_time=end,
    )


def _run_time_attributes(views: Sequence[StepView], duration_ns: int, context: _Run) -> Attributes:
    """The engine overhead (time no step was running) and the critical path's nodes."""
    if not views:
        return {}
    by_id = {view.step.id: view for view in views}
    path = [by_id[key].node_id or key for key in context.facts.critical_path]
    found: Attributes = {attr.RUN_OVERHEAD: max(0, duration_ns - context.facts.busy_ns) / _NS}
    if path:
        found[attr.RUN_CRITICAL_PATH] = path
    return found


def _root_failure(run: Run, views: Sequence[StepView]) -> Failure | None:
    own = run_failure(run.status, run.error)
    if own is not None:
        return own
    # In start order, so the description does not depend on how the API sorted the steps.
    failed = sorted(
        (v for v in views if v.failure is not None), key=lambda v: (v.start_ns, v.step.id)
    )
    if not failed:
        return None
    nodes = ", ".join(dict.fromkeys(v.node_id or v.step.id for v in failed))
    first = failed[0].failure
    assert first is not None
    noun = "step" if len(failed) == 1 else "steps"
    return Failure(f"{len(failed)} {noun} failed: {nodes}", first.error_type)


# --- shared pieces ---------------------------------------------------------------------


def _common_attributes(workflow: WorkflowInfo, run: Run) -> Attributes:
    attributes: Attributes = {attr.WORKFLOW_ID: workflow.workflow_id}
    if workflow.name:
        attributes[attr.WORKFLOW_NAME] = workflow.name
    attributes[attr.RUN_ID] = run.id
    return attributes


def _exception_events(
    failure: Failure | None, at_ns: int, options: MappingOptions
) -> tuple[EventSpec, ...]:
    if failure is None or not failure.is_exception:
        return ()
    if not exception_events_on_spans(options.exception_signal):
        return ()  # OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN=logs: on the failure's log instead
    attributes: Attributes = {attr.EXCEPTION_MESSAGE: failure.message}
    if failure.exception_type is not None:
        attributes[attr.EXCEPTION_TYPE] = failure.exception_type
    if failure.stacktrace:
        attributes[attr.EXCEPTION_STACKTRACE] = failure.stacktrace
    bounded = _bounded(attributes, options.content_max_length)
    return (EventSpec(attr.EXCEPTION_EVENT, at_ns, bounded),)


def _status(failure: Failure | None, options: MappingOptions) -> Status:
    if failure is None:
        return Status(StatusCode.UNSET)
    return Status(StatusCode.ERROR, truncate(failure.message, options.content_max_length))


def _bounded(attributes: Attributes, max_length: int) -> Attributes:
    """Every text value cut to `max_length`, every list to MAX_LIST_ITEMS.

    Backends drop or cut oversized attributes on their own terms (Tempo: 2 KiB by
    default); cutting here keeps export requests small and the cut visible ("…").
    """
    bounded: Attributes = {}
    for name, value in attributes.items():
        if isinstance(value, str):
            # Ids are kept whole up to MAX_NAME_LENGTH: a cut id finds nothing.
            limit = MAX_NAME_LENGTH if name in _ID_ATTRIBUTES else max_length
            bounded[name] = truncate(value, limit)
        elif isinstance(value, list):
            bounded[name] = [truncate(item, max_length) for item in value[:MAX_LIST_ITEMS]]
        else:
            bounded[name] = value
    return bounded
