"""Where a run's time went: waiting between steps, engine overhead, the critical path. Pure.

Times are integer nanoseconds from the step records (docs/design.md, "Where the time
went"). A step's wait is the time since the step before it ended (the latest end at or
before its start), or since the run started for the first step. The engine overhead is
the run's duration minus the union of its steps' intervals. The critical path is the chain
of steps, walked back from the step that ended last, each time to the predecessor that
ended last: the steps worth making faster.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    key: str  # the step id
    start: int
    end: int


def waits(intervals: Sequence[Interval], run_start: int) -> dict[str, int]:
    """Nanoseconds each step waited before it started (never negative)."""
    ends = sorted((interval.end, interval.key) for interval in intervals)
    found = {}
    for interval in intervals:
        position = bisect_right(ends, (interval.start, "\U0010ffff")) - 1
        if position >= 0 and ends[position][1] == interval.key:
            position -= 1  # a zero-length step is not its own predecessor
        previous = ends[position][0] if position >= 0 else run_start
        found[interval.key] = max(0, interval.start - max(previous, run_start))
    return found


def busy_ns(intervals: Sequence[Interval]) -> int:
    """The length of the union of the intervals."""
    total, reach = 0, None
    for interval in sorted(intervals, key=lambda i: (i.start, i.end)):
        if reach is None or interval.start > reach:
            total += interval.end - interval.start
            reach = interval.end
        elif interval.end > reach:
            total += interval.end - reach
            reach = interval.end
    return total


def critical_path(
    intervals: Sequence[Interval],
    predecessors: Callable[[Interval], Sequence[Interval]],
) -> list[str]:
    """Keys of the critical path, first step first.

    `predecessors` gives a step's upstream steps (graph edges, or links); a step with no
    known upstream falls back to the step that ended last before it started.
    """
    if not intervals:
        return []
    by_end = sorted(intervals, key=lambda i: (i.end, i.start, i.key))
    ends = [interval.end for interval in by_end]
    current: Interval | None = by_end[-1]
    path: list[str] = []
    seen: set[str] = set()
    while current is not None:
        path.append(current.key)
        seen.add(current.key)
        upstream = [i for i in predecessors(current) if i.key not in seen]
        if upstream:
            current = max(upstream, key=lambda i: (i.end, i.start, i.key))
        else:
            current = _ended_last_before(by_end, ends, current.start, seen)
    path.reverse()
    return path


def _ended_last_before(
    by_end: Sequence[Interval], ends: Sequence[int], moment: int, seen: set[str]
) -> Interval | None:
    position = bisect_right(ends, moment) - 1
    while position >= 0 and by_end[position].key in seen:
        position -= 1
    return by_end[position] if position >= 0 else None
