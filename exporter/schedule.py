"""When each workflow is polled next: often while it is busy, rarely while it is idle.

A fixed interval costs one history request per workflow per interval, whether the
workflow runs every minute or once a month. Instead each workflow has its own next-poll
time (docs/design.md, "Adaptive polling"):

* a run in flight: every ORCHESTRA_POLL_INTERVAL_MIN (its steps show up step by step);
* a run seen in the last ORCHESTRA_POLL_ACTIVE_WINDOW: every ORCHESTRA_POLL_INTERVAL;
* idle: the interval doubles after each quiet poll, up to ORCHESTRA_POLL_INTERVAL_MAX, so
  the first run after a quiet spell is seen within that maximum (plus one interval).

ORCHESTRA_POLL_INTERVAL_MAX = ORCHESTRA_POLL_INTERVAL turns the back-off off. Pure: the
caller passes the time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

State = Literal["in_flight", "active", "idle"]
STATES: Final[tuple[State, ...]] = ("in_flight", "active", "idle")


@dataclass(frozen=True)
class ScheduleSettings:
    interval_s: float = 30.0
    min_interval_s: float = 30.0  # while a run is in flight
    max_interval_s: float = 300.0  # the idle back-off's cap
    active_window_s: float = 300.0  # how long after a run a workflow stays active

    @property
    def tick_s(self) -> float:
        """How often the daemon wakes up to poll what is due."""
        return min(self.interval_s, self.min_interval_s)

    def describe(self) -> str:
        """The schedule in words, for `check` and the start-up line."""
        if self.max_interval_s <= self.interval_s:
            idle = f"every {self.interval_s:g}s when idle (back-off off)"
        else:
            idle = (
                f"idle workflows back off from {self.interval_s:g}s, doubling, "
                f"to {self.max_interval_s:g}s"
            )
        return (
            f"every {self.min_interval_s:g}s while a run is in flight, every "
            f"{self.interval_s:g}s for {self.active_window_s:g}s after a run was "
            f"seen, {idle}"
        )


@dataclass
class _Workflow:
    due_at: float = 0.0  # a new workflow is due at once
    state: State = "idle"
    quiet_polls: int = 0
    last_active: float | None = None
    failing: bool = False  # its last listing failed


class PollSchedule:
    """Each owned workflow's next-poll time, from what its last poll saw.

    Invariants: a workflow never waits longer than max_interval_s between polls, nor
    longer than min_interval_s while it has a run in flight; a workflow whose poll failed
    is asked again after the base interval (the min interval while in flight). Owned by
    the Poller; read by the metrics (`check` describes its settings).
    """

    def __init__(self, settings: ScheduleSettings) -> None:
        self.settings = settings
        self._workflows: dict[str, _Workflow] = {}

    def due(self, workflow_ids: Iterable[str], now: float) -> list[str]:
        """The workflows to poll now; workflows no longer owned are forgotten.

        Polls happen on ticks, and a next-poll time counts from when the listing was
        answered, a little after its tick: a workflow due before the middle of the next
        tick is polled at this one, the nearest, or every interval would become two.
        """
        ids = list(workflow_ids)
        for gone in set(self._workflows) - set(ids):
            del self._workflows[gone]
        horizon = now + self.settings.tick_s / 2
        return [
            wid for wid in ids if self._workflows.setdefault(wid, _Workflow()).due_at <= horizon
        ]

    def polled(self, workflow_id: str, now: float, *, in_flight: bool, new_runs: bool) -> None:
        """What one successful listing of the workflow's history showed."""
        entry = self._workflows.setdefault(workflow_id, _Workflow())
        entry.failing = False
        settings = self.settings
        if in_flight or new_runs:
            entry.last_active = now
        since_active = now - entry.last_active if entry.last_active is not None else None
        if in_flight:
            entry.state, entry.quiet_polls, wait = "in_flight", 0, settings.min_interval_s
        elif since_active is not None and since_active <= settings.active_window_s:
            entry.state, entry.quiet_polls, wait = "active", 0, settings.interval_s
        else:
            entry.state = "idle"
            entry.quiet_polls += 1
            backoff = settings.interval_s * 2 ** min(entry.quiet_polls, 30)
            wait = max(settings.interval_s, min(settings.max_interval_s, backoff))
        entry.due_at = now + wait

    def failed(self, workflow_id: str, now: float) -> None:
        """The listing failed: ask again after the base interval (the min interval while a
        run was in flight: a failure says nothing of it having ended), the state unchanged."""
        entry = self._workflows.setdefault(workflow_id, _Workflow())
        entry.failing = True
        settings = self.settings
        retry = settings.min_interval_s if entry.state == "in_flight" else settings.interval_s
        entry.due_at = now + retry

    def due_in(self, now: float) -> Sequence[float]:
        """Seconds until each workflow's next poll (0 when due), sorted."""
        return sorted(max(0.0, entry.due_at - now) for entry in self._workflows.values())

    def failing(self) -> int:
        """Owned workflows whose last listing failed: a poll that lists only the others,
        or none, does not show the API answering every request."""
        return sum(entry.failing for entry in self._workflows.values())

    def states(self) -> dict[State, int]:
        counts = dict.fromkeys(STATES, 0)
        for entry in self._workflows.values():
            counts[entry.state] += 1
        return counts
