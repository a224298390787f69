"""Workflow metrics people alert on, derived from spans the sink confirmed.

Tempo's span metrics skip spans that end long before they arrive, and this daemon exports
after the fact by design, so it publishes the alerting metrics itself. A step or run is
counted when its span leaves the spool (confirmed by the sink); the totals are written
to the ledger in the same transaction, so a restart neither loses nor double-counts them
(`/metrics` shows the persisted totals). Run and step ids never become labels; workflow
and node label values are capped (beyond the cap: `other`).

The completed/failed counters of every known workflow and node exist at 0 before their
first event (`MetricBook.seed`): alert rules on increase() see a first failure only in a
series that existed before it. The runs in flight per workflow (`RunsInFlight`) are what
the last listing of its run history showed; the age of the oldest is computed at scrape
time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from opentelemetry.trace import StatusCode
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from exporter.mapping import attributes as attr
from exporter.mapping.content import truncate
from exporter.mapping.ids import format_span_id, format_trace_id
from exporter.mapping.options import MappingOptions
from exporter.mapping.otlp import SpanSpec
from exporter.mapping.spans import MAX_NAME_LENGTH, WorkflowInfo
from exporter.mapping.steps import run_ended
from exporter.mapping.timeparse import lenient_timestamp_ns
from exporter.source.models import Run

OTHER: Final = "other"
DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Waits and overhead are often milliseconds, sometimes minutes (a queue backed up).
WAIT_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)  # fmt: skip
# The GenAI semantic conventions' advice for gen_ai.client.token.usage (14 bounds).
TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
# The GenAI semantic conventions' advice for gen_ai.client.operation.duration.
OPERATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

Kind = Literal["counter", "histogram"]


@dataclass(frozen=True)
class MetricDef:
    name: str  # Prometheus family name (no _total); the OTLP name is otlp_name
    otlp_name: str
    kind: Kind
    unit: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


STEP_LABELS: Final = ("workflow_id", "workflow", "node", "node_type", "outcome")
RUN_LABELS: Final = ("workflow_id", "workflow", "outcome")

STEPS = MetricDef(
    "orchestra_steps", "orchestra.steps", "counter", "{step}",
    "Workflow steps exported, by workflow, node, node type and outcome", STEP_LABELS,
)  # fmt: skip
RUNS = MetricDef(
    "orchestra_runs", "orchestra.runs", "counter", "{run}",
    "Workflow runs exported, by workflow and outcome", RUN_LABELS,
)  # fmt: skip
STEP_DURATION = MetricDef(
    "orchestra_step_duration_seconds", "orchestra.step.duration", "histogram", "s",
    "Duration of workflow steps", STEP_LABELS, DURATION_BUCKETS,
)  # fmt: skip
RUN_DURATION = MetricDef(
    "orchestra_run_duration_seconds", "orchestra.run.duration", "histogram", "s",
    "Duration of workflow runs", RUN_LABELS, DURATION_BUCKETS,
)  # fmt: skip
TOKEN_USAGE = MetricDef(
    "gen_ai_client_token_usage", "gen_ai.client.token.usage", "histogram", "{token}",
    "Tokens used by model steps (GenAI semantic conventions)",
    ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
     "gen_ai_response_model", "gen_ai_token_type"),
    TOKEN_BUCKETS,
)  # fmt: skip
OPERATION_DURATION = MetricDef(
    "gen_ai_client_operation_duration_seconds", "gen_ai.client.operation.duration",
    "histogram", "s", "Duration of model steps (GenAI semantic conventions)",
    ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
     "gen_ai_response_model", "error_type"),
    OPERATION_BUCKETS,
)  # fmt: skip

WORKFLOW_LABELS: Final = ("workflow_id", "workflow")
COST = MetricDef(
    "orchestra_cost", "orchestra.cost", "counter", "{currency}",
    "Cost of model steps from ORCHESTRA_PRICES, in the table's currency",
    ("workflow_id", "workflow", "model", "currency"),
)  # fmt: skip
STEP_WAIT = MetricDef(
    "orchestra_step_wait_seconds", "orchestra.step.wait", "histogram", "s",
    "Time a step waited after the step before it ended (or the run started)",
    WORKFLOW_LABELS, WAIT_BUCKETS,
)  # fmt: skip
RUN_OVERHEAD = MetricDef(
    "orchestra_run_overhead_seconds", "orchestra.run.overhead", "histogram", "s",
    "Time of a run during which no step was running (engine overhead)",
    WORKFLOW_LABELS, WAIT_BUCKETS,
)  # fmt: skip

DEFINITIONS: Final = (
    STEPS, RUNS, STEP_DURATION, RUN_DURATION, TOKEN_USAGE, OPERATION_DURATION, COST, STEP_WAIT,
    RUN_OVERHEAD,
)  # fmt: skip
BY_NAME: Final = {d.name: d for d in DEFINITIONS}

# How totals persisted by earlier versions were labelled and bucketed, so that a ledger
# written before the GenAI metrics gained gen_ai_provider_name (and response model) and
# the token buckets their 14 bounds keeps counting on the same series after an upgrade.
LEGACY_LABELS: Final = {
    TOKEN_USAGE.name: (
        "gen_ai_operation_name", "gen_ai_request_model", "gen_ai_response_model",
        "gen_ai_token_type",
    ),
    OPERATION_DURATION.name: ("gen_ai_operation_name", "gen_ai_request_model", "error_type"),
}  # fmt: skip
LEGACY_BUCKETS: Final = {TOKEN_USAGE.name: TOKEN_BUCKETS[:11]}


@dataclass(frozen=True)
class Sample:
    metric: MetricDef
    labels: tuple[str, ...]  # values in the order of metric.labels
    value: float  # what a counter adds (1 a step or run); the observation of a histogram
    trace_id: str  # 32 hex digits: the run's trace, for exemplars
    span_id: str  # 16 hex digits: the span that produced the sample


@dataclass(frozen=True)
class _Counted:
    """What a span counts as: a run or a step, its counter labels, and its facts."""

    metric: MetricDef  # RUNS or STEPS; the outcome is the last label of both
    labels: tuple[str, ...]
    failed: bool
    attributes: Mapping[str, object]

    @property
    def workflow(self) -> tuple[str, str]:
        return self.labels[0], self.labels[1]


def _counted(span: SpanSpec) -> _Counted | None:
    attributes = span.attributes or {}
    if span.context is None or attr.WORKFLOW_ID not in attributes:
        return None
    workflow_id = str(attributes[attr.WORKFLOW_ID])
    workflow = str(attributes.get(attr.WORKFLOW_NAME) or workflow_id)
    failed = span.status.status_code is StatusCode.ERROR
    if attr.STEP_ID not in attributes:  # the root (its parent may be a caller's span)
        outcome = _outcome(failed, attributes.get(attr.RUN_STATUS))
        return _Counted(RUNS, (workflow_id, workflow, outcome), failed, attributes)
    if attr.NODE_TYPE not in attributes:
        return None  # a wait span (ORCHESTRA_WAIT_SPANS): its step counts
    outcome = _outcome(failed, attributes.get(attr.STEP_STATUS))
    node = str(attributes.get(attr.NODE_ID, "")) or "unknown"
    node_type = str(attributes.get(attr.NODE_TYPE, ""))
    return _Counted(STEPS, (workflow_id, workflow, node, node_type, outcome), failed, attributes)


def samples_of(span: SpanSpec) -> list[Sample]:
    """What one confirmed span contributes to the workflow metrics. Pure."""
    counted = _counted(span)
    if counted is None or span.context is None:
        return []
    ids = (format_trace_id(span.context.trace_id), format_span_id(span.context.span_id))
    duration = max(0, (span.end_time or 0) - (span.start_time or 0)) / 1e9
    attributes = counted.attributes
    if counted.metric is RUNS:
        found = [
            Sample(RUNS, counted.labels, 1, *ids),
            Sample(RUN_DURATION, counted.labels, duration, *ids),
        ]
        overhead = _number(attributes.get(attr.RUN_OVERHEAD))
        if overhead is not None:
            found.append(Sample(RUN_OVERHEAD, counted.workflow, overhead, *ids))
        return found
    found = [
        Sample(STEPS, counted.labels, 1, *ids),
        Sample(STEP_DURATION, counted.labels, duration, *ids),
    ]
    waited = _number(attributes.get(attr.STEP_WAIT))
    if waited is not None:
        found.append(Sample(STEP_WAIT, counted.workflow, waited, *ids))
    cost = _number(attributes.get(attr.COST_TOTAL))
    if cost is not None:
        model = str(attributes.get(attr.GEN_AI_REQUEST_MODEL) or "unknown")
        currency = str(attributes.get(attr.COST_CURRENCY, ""))
        found.append(Sample(COST, (*counted.workflow, model, currency), cost, *ids))
    if attributes.get(attr.GEN_AI_OPERATION_NAME) == attr.OP_CHAT:
        found.extend(_genai_samples(attributes, duration, counted.failed, ids))
    return found


@dataclass(frozen=True)
class SpoolFacts:
    """What a spooled span adds on confirmation: its samples, and when it ended (lag)."""

    samples: list[Sample]
    end_ns: int | None = None


def encode_facts(samples: Sequence[Sample], end_ns: int | None) -> str:
    """A span's samples as the spool keeps them until confirmation: compact JSON."""
    document: dict[str, object] = {"e": end_ns}
    if samples:
        first = samples[0]
        rows = [[sample.metric.name, list(sample.labels), sample.value] for sample in samples]
        document.update({"t": first.trace_id, "s": first.span_id, "m": rows})
    return json.dumps(document, separators=(",", ":"))


def decode_facts(text: str | None) -> SpoolFacts:
    """What encode_facts wrote; rows of metrics this version lacks are left out."""
    if not text:
        return SpoolFacts([])
    document = json.loads(text)
    samples = [
        Sample(BY_NAME[name], tuple(labels), float(value), document["t"], document["s"])
        for name, labels, value in document.get("m", ())
        if name in BY_NAME and len(labels) == len(BY_NAME[name].labels)
    ]
    return SpoolFacts(samples, document.get("e"))


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _genai_samples(
    attributes: Mapping[str, object], duration: float, failed: bool, ids: tuple[str, str]
) -> Iterator[Sample]:
    operation = str(attributes.get(attr.GEN_AI_OPERATION_NAME))
    provider = str(attributes.get(attr.GEN_AI_PROVIDER_NAME, ""))
    request_model = str(attributes.get(attr.GEN_AI_REQUEST_MODEL, ""))
    response_model = str(attributes.get(attr.GEN_AI_RESPONSE_MODEL, ""))
    error_type = str(attributes.get(attr.ERROR_TYPE, "")) if failed else ""
    models = (provider, request_model, response_model)
    yield Sample(OPERATION_DURATION, (operation, *models, error_type), duration, *ids)
    for token_type, key in (
        ("input", attr.GEN_AI_USAGE_INPUT_TOKENS),
        ("output", attr.GEN_AI_USAGE_OUTPUT_TOKENS),
    ):
        count = attributes.get(key)
        if isinstance(count, int) and not isinstance(count, bool):
            labels = (operation, *models, token_type)
            yield Sample(TOKEN_USAGE, labels, float(count), *ids)


def _outcome(failed: bool, raw_status: object) -> str:
    if failed:
        return "failed"
    status = str(raw_status or "").strip().casefold()
    return status or "unknown"


# --- the totals ------------------------------------------------------------------------


@dataclass
class Series:
    count: float = 0.0
    total: float = 0.0  # sum of observations (histograms)
    buckets: list[int] = field(default_factory=list)  # per bucket, not cumulative
    exemplar: tuple[str, float, float] | None = None  # trace id, value, unix time

    def to_json(self) -> str:
        return json.dumps([self.count, self.total, self.buckets], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Series:
        count, total, buckets = json.loads(text)
        return cls(float(count), float(total), [int(b) for b in buckets])


SeriesKey = tuple[str, tuple[str, ...]]  # metric name, label values

# Outcomes whose counter series exist at 0 before their first event (see MetricBook.seed).
SEEDED_OUTCOMES: Final = ("completed", "failed")


class MetricBook:
    """Totals of every workflow metric series, as persisted in the ledger.

    Label values are capped: beyond `max_workflows` workflows (or `max_nodes` nodes of one
    workflow) events count under `other`. Slots go to workflows and nodes in the order they
    are first seen: persisted totals first (loaded at start), then discovery's zero series,
    then new events.
    """

    def __init__(self, max_workflows: int = 200, max_nodes: int = 100) -> None:
        self.max_workflows = max_workflows
        self.max_nodes = max_nodes
        self.series: dict[SeriesKey, Series] = {}
        self._workflows: set[str] = set()
        self._nodes: dict[str, set[str]] = {}

    def load(
        self, rows: Iterable[tuple[str, str, str]], label_defaults: Mapping[str, str] = {}
    ) -> None:
        """Totals from the ledger; those of older versions are upgraded (`label_defaults`:
        the values of labels they did not have)."""
        for metric, labels_json, value_json in rows:
            definition = BY_NAME.get(metric)
            if definition is None:
                continue
            labels = _upgraded_labels(definition, tuple(json.loads(labels_json)), label_defaults)
            if labels is None:
                continue
            series = _upgraded_buckets(definition, Series.from_json(value_json))
            self.series[(metric, labels)] = series
            self._remember(definition, labels)

    def apply(self, samples: Sequence[Sample], now: float) -> list[tuple[str, str, str]]:
        """Add samples; return the changed series as (metric, labels, value) rows."""
        changed: dict[SeriesKey, Series] = {}
        for sample in samples:
            labels = self._capped(sample.metric, sample.labels)
            key = (sample.metric.name, labels)
            series = self.series.setdefault(key, Series())
            _add(series, sample, now)
            changed[key] = series
        return [
            (name, json.dumps(list(labels)), s.to_json()) for (name, labels), s in changed.items()
        ]

    def seed(self, metric: MetricDef, labels: tuple[str, ...]) -> None:
        """Create the series `labels` + each of SEEDED_OUTCOMES at 0 where missing.

        increase() sees an event only in a series that existed before it. Existing series
        (persisted totals) are left as they are, and zero series are never written to the
        ledger (nothing changed). A workflow beyond the cap gets no zero series at all: a
        zero `other` series would only take node slots of `other` in discovery order, and
        its own events will count under `other` whenever they happen. A node beyond the
        cap of a workflow within it gets the zero series its events will count into
        (`node="other"`), which takes no named slot.
        """
        workflow_id = labels[metric.labels.index("workflow_id")]
        if workflow_id not in self._workflows and len(self._workflows) >= self.max_workflows:
            return
        for outcome in SEEDED_OUTCOMES:
            full = (*labels, outcome)
            if (metric.name, full) not in self.series:
                self.series.setdefault((metric.name, self._capped(metric, full)), Series())

    def seed_spans(self, spans: Iterable[SpanSpec]) -> None:
        """Zero series for the runs and steps of mapped spans (nodes discovery did not know)."""
        for span in spans:
            counted = _counted(span)
            if counted is not None:
                self.seed(counted.metric, counted.labels[:-1])

    def seed_workflow(self, info: WorkflowInfo, options: MappingOptions) -> None:
        """Zero series for a discovered workflow's runs and for every typed node of its graph.

        Nodes without a type in the graph are left out: their steps get the type inferred
        from the step record, which discovery cannot know.
        """
        workflow_id, workflow = workflow_labels(info, options)
        self.seed(RUNS, (workflow_id, workflow))
        for node_id, node_type in info.graph.node_types.items():
            node = truncate(node_id, MAX_NAME_LENGTH) or "unknown"
            node_type = truncate(node_type, options.content_max_length)
            self.seed(STEPS, (workflow_id, workflow, node, node_type))

    def capped_workflow(self, workflow_id: str, workflow: str) -> tuple[str, str]:
        """(workflow_id, workflow) as the workflow metrics show them: `other` beyond the cap."""
        if workflow_id not in self._workflows:
            if len(self._workflows) >= self.max_workflows:
                return OTHER, OTHER
            self._workflows.add(workflow_id)
        return workflow_id, workflow

    def _capped(self, metric: MetricDef, labels: tuple[str, ...]) -> tuple[str, ...]:
        names = metric.labels
        if "workflow_id" not in names:
            return labels
        values = dict(zip(names, labels, strict=True))
        values["workflow_id"], values["workflow"] = self.capped_workflow(
            values["workflow_id"], values["workflow"]
        )
        if "node" in values:
            nodes = self._nodes.setdefault(values["workflow_id"], set())
            if values["node"] not in nodes and len(nodes) >= self.max_nodes:
                values["node"] = OTHER
        capped = tuple(values[name] for name in names)
        self._remember(metric, capped)
        return capped

    def _remember(self, metric: MetricDef, labels: tuple[str, ...]) -> None:
        values = dict(zip(metric.labels, labels, strict=False))
        workflow_id = values.get("workflow_id")
        if workflow_id is None:
            return
        if workflow_id != OTHER:
            self._workflows.add(workflow_id)
        # The nodes of `other` are capped too: it gathers the nodes of many workflows.
        if "node" in values:
            self._nodes.setdefault(workflow_id, set()).add(values["node"])


def _upgraded_labels(
    definition: MetricDef, labels: tuple[str, ...], defaults: Mapping[str, str]
) -> tuple[str, ...] | None:
    if len(labels) == len(definition.labels):
        return labels
    legacy = LEGACY_LABELS.get(definition.name)
    if legacy is None or len(labels) != len(legacy):
        return None  # nothing we ever wrote: leave it
    values = dict(zip(legacy, labels, strict=True))
    return tuple(values.get(name, defaults.get(name, "")) for name in definition.labels)


def _upgraded_buckets(definition: MetricDef, series: Series) -> Series:
    legacy = LEGACY_BUCKETS.get(definition.name)
    if legacy is None or len(series.buckets) != len(legacy) + 1:
        return series
    # Old bounds are a prefix of the new ones; what was above the old top stays at +Inf.
    added = [0] * (len(definition.buckets) - len(legacy))
    series.buckets = [*series.buckets[:-1], *added, series.buckets[-1]]
    return series


def workflow_labels(info: WorkflowInfo, options: MappingOptions) -> tuple[str, str]:
    """(workflow_id, workflow) label values, as the spans of that workflow will carry them."""
    workflow_id = truncate(info.workflow_id, MAX_NAME_LENGTH)
    if info.name:
        return workflow_id, truncate(info.name, options.content_max_length)
    return workflow_id, workflow_id


# --- runs in flight --------------------------------------------------------------------


@dataclass(frozen=True)
class _WorkflowInFlight:
    labels: tuple[str, str]  # (workflow_id, workflow), capped
    starts: Mapping[str, float]  # run id -> start time (Unix seconds)


class RunsInFlight:
    """The runs of each workflow that were in flight when its run history was last listed.

    Written by the poll cycle, read at scrape time from another thread. A workflow whose
    listing failed keeps what the previous poll saw: its runs are not known to have ended.
    A run without a readable start time counts from when this process first saw it.
    """

    def __init__(self, book: MetricBook, clock: Callable[[], float] = time.time) -> None:
        self._book = book
        self._clock = clock
        self._lock = threading.Lock()
        self._workflows: dict[str, _WorkflowInFlight] = {}

    def observe(self, info: WorkflowInfo, runs: Iterable[Run], options: MappingOptions) -> int:
        """What one successful listing of the workflow's runs showed; returns how many
        of them are in flight."""
        now = self._clock()
        labels = self._book.capped_workflow(*workflow_labels(info, options))
        with self._lock:
            previous = self._workflows.get(info.workflow_id)
            known = previous.starts if previous is not None else {}
            starts = {
                run.id: _start_seconds(run, known.get(run.id, now))
                for run in runs
                if not run_ended(run)
            }
            self._workflows[info.workflow_id] = _WorkflowInFlight(labels, starts)
        return len(starts)

    def retain(self, workflow_ids: Collection[str]) -> None:
        """Forget workflows this process no longer polls (deleted, or another shard's)."""
        with self._lock:
            for workflow_id in set(self._workflows) - set(workflow_ids):
                del self._workflows[workflow_id]

    def by_labels(self) -> dict[tuple[str, str], tuple[int, float | None]]:
        """(workflow_id, workflow) -> (runs in flight, start of the oldest one or None)."""
        found: dict[tuple[str, str], tuple[int, float | None]] = {}
        with self._lock:
            workflows = list(self._workflows.values())
        for workflow in workflows:  # several workflows share the labels `other`
            count, oldest = found.get(workflow.labels, (0, None))
            first = min(workflow.starts.values(), default=None)
            if oldest is None or (first is not None and first < oldest):
                oldest = first
            found[workflow.labels] = (count + len(workflow.starts), oldest)
        return found

    def now(self) -> float:
        return self._clock()


def _start_seconds(run: Run, fallback: float) -> float:
    start = lenient_timestamp_ns(run.start_time)
    return fallback if start is None else start / 1e9


class InFlightCollector(Collector):
    """Runs in flight per workflow and the age of the oldest, computed at scrape time."""

    def __init__(self, in_flight: RunsInFlight) -> None:
        self._in_flight = in_flight

    def collect(self) -> Iterator[Metric]:
        labels = list(WORKFLOW_LABELS)
        count = GaugeMetricFamily(
            "orchestra_runs_in_flight",
            "Runs started and not finished, per workflow, as of its last poll",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "orchestra_run_in_flight_oldest_age_seconds",
            "Seconds since the start of the oldest run in flight, per workflow (0: none)",
            labels=labels,
        )
        now = self._in_flight.now()
        for key, (runs, oldest) in sorted(self._in_flight.by_labels().items()):
            count.add_metric(key, runs)
            age.add_metric(key, 0.0 if oldest is None else max(0.0, now - oldest))
        yield count
        yield age


def _add(series: Series, sample: Sample, now: float) -> None:
    metric = sample.metric
    # A counter adds its sample (1 a step or run, an amount of money); a histogram counts.
    series.count += sample.value if metric.kind == "counter" else 1
    if metric.kind == "histogram":
        if len(series.buckets) != len(metric.buckets) + 1:
            series.buckets = [0] * (len(metric.buckets) + 1)
        series.total += sample.value
        index = next(
            (i for i, bound in enumerate(metric.buckets) if sample.value <= bound),
            len(metric.buckets),
        )
        series.buckets[index] += 1
    series.exemplar = (sample.trace_id, sample.value, now)


class BookCollector(Collector):
    """Exposes a MetricBook for Prometheus; exemplars carry the run's trace id."""

    def __init__(self, book: MetricBook) -> None:
        self._book = book

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | HistogramMetricFamily] = {}
        for definition in DEFINITIONS:
            if definition.kind == "counter":
                families[definition.name] = CounterMetricFamily(
                    definition.name, definition.help, labels=definition.labels
                )
            else:
                families[definition.name] = HistogramMetricFamily(
                    definition.name, definition.help, labels=definition.labels
                )
        for (name, labels), series in sorted(self._book.series.items()):
            definition = BY_NAME[name]
            family = families[name]
            if isinstance(family, CounterMetricFamily):
                family.add_metric(
                    labels, series.count, exemplar=_counter_exemplar(labels, series, definition)
                )
            else:
                family.add_metric(labels, _cumulative(definition, series), series.total)
        yield from families.values()


def _counter_exemplar(
    labels: tuple[str, ...], series: Series, definition: MetricDef
) -> Exemplar | None:
    # Exemplars where they lead somewhere useful: to a failed run's trace.
    values = dict(zip(definition.labels, labels, strict=True))
    if series.exemplar is None or values.get("outcome") != "failed":
        return None
    trace_id, value, at = series.exemplar
    return Exemplar({"trace_id": trace_id}, value, at)


def _cumulative(
    definition: MetricDef, series: Series
) -> list[tuple[str, float] | tuple[str, float, Exemplar]]:
    buckets = series.buckets or [0] * (len(definition.buckets) + 1)
    bounds = [*(str(float(b)) for b in definition.buckets), "+Inf"]
    exemplar_index = None
    if series.exemplar is not None:
        value = series.exemplar[1]
        exemplar_index = next(
            (i for i, bound in enumerate(definition.buckets) if value <= bound),
            len(definition.buckets),
        )
    result: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
    running = 0
    for index, (bound, count) in enumerate(zip(bounds, buckets, strict=True)):
        running += count
        if index == exemplar_index and series.exemplar is not None:
            trace_id, value, at = series.exemplar
            result.append((bound, running, Exemplar({"trace_id": trace_id}, value, at)))
        else:
            result.append((bound, running))
    return result
