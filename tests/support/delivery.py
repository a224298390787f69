"""What must arrive, and what did: the emulator's finished runs against the receiver.

A span is identified by what it stands for: (trace id, step id) for a step, or
(trace id, "root") for a run's root span. The trace id is the run id without dashes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.support.otlp_receiver import ReceivedSpan
from tests.support.world import World

ROOT = "root"
Identity = tuple[str, str]  # (trace id, step id or ROOT)


def span_identity(span: ReceivedSpan) -> Identity:
    """(trace id, step id), or (trace id, "root"): what the span stands for."""
    if not span.parent_span_id:
        return (span.trace_id, ROOT)
    return (span.trace_id, str(span.attributes.get("orchestra.step.id")))


def identities(spans: Iterable[ReceivedSpan]) -> list[Identity]:
    """The identity of each span, copies included."""
    return [span_identity(span) for span in spans]


def expected_spans(world: World) -> dict[str, set[str]]:
    """trace id (run id without dashes) -> step ids, for every run the emulator shows ended."""
    return {
        run_id.replace("-", ""): {str(step["id"]) for step in steps}
        for run_id, steps in world.finished_runs().items()
    }


def expected_identities(world: World) -> set[Identity]:
    """Every span a correct exporter sends for the runs the emulator shows ended."""
    return {
        (trace_id, step_id)
        for trace_id, steps in expected_spans(world).items()
        for step_id in (*steps, ROOT)
    }


@dataclass
class Delivery:
    """What the receiver got, compared with what the emulator says must arrive."""

    expected_spans: int
    received_spans: int
    unique_spans: int
    duplicates: int
    missing: list[str] = field(default_factory=list)  # human-readable, empty when complete

    @property
    def complete(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        text = (
            f"{self.expected_spans} spans expected, {self.received_spans} received "
            f"({self.unique_spans} distinct, {self.duplicates} duplicates)"
        )
        if self.missing:
            text += f"; {len(self.missing)} problems, first: " + "; ".join(self.missing[:5])
        return text


def delivery(world: World) -> Delivery:
    """Every finished run: exactly one root in its trace and one span per step id.

    Unique spans are counted by (trace_id, span_id); copies of one span are duplicates.
    """
    expected = expected_spans(world)
    spans = world.receiver.spans()
    by_trace: dict[str, dict[tuple[str, str], Any]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, {})[span.key] = span
    missing: list[str] = []
    for trace_id, step_ids in expected.items():
        unique = list(by_trace.get(trace_id, {}).values())
        roots = [s for s in unique if not s.parent_span_id]
        got_steps = {s.attributes.get("orchestra.step.id") for s in unique if s.parent_span_id}
        if len(roots) != 1:
            missing.append(f"trace {trace_id}: {len(roots)} distinct root spans")
        for step_id in sorted(step_ids - got_steps):
            missing.append(f"trace {trace_id}: step {step_id} never arrived")
        extra = got_steps - step_ids
        if extra:
            missing.append(f"trace {trace_id}: unexpected step spans {sorted(map(str, extra))}")
        if len(unique) != 1 + len(step_ids):
            missing.append(
                f"trace {trace_id}: {len(unique)} distinct spans, not {1 + len(step_ids)}"
            )
    keys = [span.key for span in spans]
    return Delivery(
        expected_spans=sum(1 + len(steps) for steps in expected.values()),
        received_spans=len(keys),
        unique_spans=len(set(keys)),
        duplicates=len(keys) - len(set(keys)),
        missing=missing,
    )
