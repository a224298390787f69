"""exporter/schedule.py: each workflow's next poll, from what its last poll saw.

Rules (docs/design.md, "Poll schedule"): a new workflow is due at once; a run in flight:
every min interval; a run seen in the last active window: every interval; idle: the wait
doubles after each quiet poll, from twice the interval up to the max interval (max =
interval: no back-off); a failed listing is asked again after the interval (the min
interval while in flight), its state kept. Polls happen on ticks of min(interval, min
interval); a workflow due before the middle of the next tick is polled at this one.
Pure: every time below is a number the test picks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.schedule import PollSchedule, ScheduleSettings

WF = "wf-1"
T0 = 1_000_000.0
INTERVAL = 30.0
MIN = 5.0
MAX = 300.0
WINDOW = 120.0
SETTINGS = ScheduleSettings(
    interval_s=INTERVAL, min_interval_s=MIN, max_interval_s=MAX, active_window_s=WINDOW
)


def _waits(schedule: PollSchedule, now: float) -> list[float]:
    return list(schedule.due_in(now))


def _quiet_waits(schedule: PollSchedule, start: float, polls: int) -> list[float]:
    """Poll WF each time it is due, seeing nothing; the wait set by each poll."""
    now, waits = start, []
    for _ in range(polls):
        schedule.polled(WF, now, in_flight=False, new_runs=False)
        (wait,) = _waits(schedule, now)
        waits.append(wait)
        now += wait
    return waits


def test_a_new_workflow_is_due_at_once_and_counts_as_idle() -> None:
    schedule = PollSchedule(SETTINGS)
    assert schedule.due([WF, "wf-2"], T0) == [WF, "wf-2"]
    assert schedule.due_in(T0) == [0.0, 0.0]
    assert schedule.states() == {"in_flight": 0, "active": 0, "idle": 2}


def test_the_tick_is_the_shorter_of_the_interval_and_the_min_interval() -> None:
    assert SETTINGS.tick_s == MIN
    assert ScheduleSettings(interval_s=30.0, min_interval_s=30.0).tick_s == 30.0


def test_a_workflow_with_a_run_in_flight_is_polled_every_min_interval() -> None:
    schedule = PollSchedule(SETTINGS)
    now = T0
    for _ in range(5):
        schedule.polled(WF, now, in_flight=True, new_runs=True)
        assert _waits(schedule, now) == [MIN]
        assert schedule.due([WF], now + MIN - SETTINGS.tick_s) == []
        now += MIN
        assert schedule.due([WF], now) == [WF]
    assert schedule.states()["in_flight"] == 1


def test_a_workflow_stays_active_for_the_window_after_its_last_run_then_backs_off() -> None:
    schedule = PollSchedule(SETTINGS)
    schedule.polled(WF, T0, in_flight=False, new_runs=True)  # a run that just ended
    now, waits = T0, []
    while now - T0 <= WINDOW:
        waits.append(_waits(schedule, now)[0])
        assert schedule.states()["active"] == 1
        now += INTERVAL
        schedule.polled(WF, now, in_flight=False, new_runs=False)
    # Polled every interval through the window, idle from the first poll after it: the
    # back-off starts at twice the interval.
    assert waits == [INTERVAL] * 5
    assert schedule.states() == {"in_flight": 0, "active": 0, "idle": 1}
    assert _waits(schedule, now) == [2 * INTERVAL]


def test_idle_waits_double_from_twice_the_interval_up_to_the_max() -> None:
    schedule = PollSchedule(SETTINGS)
    assert _quiet_waits(schedule, T0, 7) == [60.0, 120.0, 240.0, 300.0, 300.0, 300.0, 300.0]


def test_a_long_idle_spell_never_waits_past_the_max() -> None:
    schedule = PollSchedule(SETTINGS)
    assert max(_quiet_waits(schedule, T0, 200)) == MAX


def test_max_equal_to_the_interval_turns_the_back_off_off() -> None:
    fixed = ScheduleSettings(interval_s=INTERVAL, min_interval_s=INTERVAL, max_interval_s=INTERVAL)
    schedule = PollSchedule(fixed)
    assert _quiet_waits(schedule, T0, 10) == [INTERVAL] * 10
    assert "back-off off" in schedule.settings.describe()


def test_a_new_run_ends_the_back_off_and_it_starts_again_from_twice_the_interval() -> None:
    schedule = PollSchedule(SETTINGS)
    _quiet_waits(schedule, T0, 6)  # at the cap
    now = T0 + 10_000.0
    schedule.polled(WF, now, in_flight=False, new_runs=True)
    assert _waits(schedule, now) == [INTERVAL]
    assert schedule.states()["active"] == 1
    after_window = now + WINDOW + 1.0
    assert _quiet_waits(schedule, after_window, 3) == [60.0, 120.0, 240.0]


def test_a_run_seen_in_flight_keeps_the_workflow_active_after_it_ends() -> None:
    schedule = PollSchedule(SETTINGS)
    schedule.polled(WF, T0, in_flight=True, new_runs=True)
    schedule.polled(WF, T0 + MIN, in_flight=False, new_runs=False)  # ended, already seen
    assert schedule.states()["active"] == 1
    assert _waits(schedule, T0 + MIN) == [INTERVAL]


def test_a_failed_listing_is_asked_again_after_the_interval_with_its_state_kept() -> None:
    schedule = PollSchedule(SETTINGS)
    waits = _quiet_waits(schedule, T0, 5)  # idle, at the cap
    now = T0 + sum(waits)
    schedule.failed(WF, now)
    assert _waits(schedule, now) == [INTERVAL]
    assert schedule.states()["idle"] == 1
    # The back-off was not reset by the failure: the next quiet poll waits the max again.
    assert _quiet_waits(schedule, now + INTERVAL, 1) == [MAX]


def test_a_failed_listing_of_a_workflow_in_flight_is_asked_again_after_the_min() -> None:
    schedule = PollSchedule(SETTINGS)
    schedule.polled(WF, T0, in_flight=True, new_runs=True)
    schedule.failed(WF, T0 + MIN)
    assert _waits(schedule, T0 + MIN) == [MIN]
    assert schedule.states()["in_flight"] == 1


def test_a_new_workflow_whose_first_listing_failed_is_asked_again_after_the_interval() -> None:
    schedule = PollSchedule(SETTINGS)
    assert schedule.due([WF], T0) == [WF]
    schedule.failed(WF, T0)
    assert schedule.due([WF], T0 + INTERVAL - SETTINGS.tick_s) == []
    assert schedule.due([WF], T0 + INTERVAL) == [WF]


def test_failing_counts_the_workflows_whose_last_listing_failed() -> None:
    schedule = PollSchedule(SETTINGS)
    assert schedule.due(["a", "b", "c"], T0) == ["a", "b", "c"]
    assert schedule.failing() == 0, "never listed is not failing"
    schedule.failed("a", T0)
    schedule.failed("b", T0)
    schedule.polled("c", T0, in_flight=False, new_runs=False)
    assert schedule.failing() == 2
    schedule.polled("a", T0 + INTERVAL, in_flight=False, new_runs=False)
    assert schedule.failing() == 1
    schedule.due(["a", "c"], T0 + INTERVAL)  # b is gone, and its failure with it
    assert schedule.failing() == 0


def test_due_forgets_workflows_no_longer_owned() -> None:
    schedule = PollSchedule(SETTINGS)
    for wid in ("a", "b", "c"):
        schedule.polled(wid, T0, in_flight=wid == "a", new_runs=True)
    assert sum(schedule.states().values()) == 3
    assert schedule.due(["b"], T0 + 1.0) == []
    assert schedule.states() == {"in_flight": 0, "active": 1, "idle": 0}
    assert len(schedule.due_in(T0)) == 1
    # Owned again later (a shard moved back): a new workflow, due at once.
    assert schedule.due(["a", "b"], T0 + 1.0) == ["a"]


def test_due_in_is_sorted_and_zero_for_what_is_overdue() -> None:
    schedule = PollSchedule(SETTINGS)
    schedule.polled("in-flight", T0, in_flight=True, new_runs=True)
    schedule.polled("active", T0, in_flight=False, new_runs=True)
    schedule.polled("idle", T0, in_flight=False, new_runs=False)
    assert schedule.due_in(T0) == [MIN, INTERVAL, 2 * INTERVAL]
    assert schedule.due_in(T0 + 40.0) == [0.0, 0.0, 20.0]
    assert schedule.states() == {"in_flight": 1, "active": 1, "idle": 1}


def test_a_listing_answered_after_its_tick_is_due_again_at_the_next_tick() -> None:
    """The daemon ticks every interval; each next-poll time counts from when the history
    was answered, later than the tick. An active workflow is still polled every tick."""
    fixed = ScheduleSettings(interval_s=1.0, min_interval_s=1.0, max_interval_s=8.0)
    schedule = PollSchedule(fixed)
    listed_at = []
    for tick in range(10):
        now = T0 + tick * fixed.tick_s
        if schedule.due([WF], now):
            listed_at.append(tick)
            schedule.polled(WF, now + 0.08, in_flight=False, new_runs=True)  # 80 ms later
    assert listed_at == list(range(10))


def test_describe_says_each_pace() -> None:
    assert SETTINGS.describe() == (
        "every 5s while a run is in flight, every 30s for 120s after a run was seen, "
        "idle workflows back off from 30s, doubling, to 300s"
    )
    fixed = ScheduleSettings(interval_s=10.0, min_interval_s=10.0, max_interval_s=10.0)
    assert fixed.describe() == (
        "every 10s while a run is in flight, every 10s for 300s after a run was seen, "
        "every 10s when idle (back-off off)"
    )


# --- properties ------------------------------------------------------------------------


@st.composite
def schedule_settings(draw: st.DrawFn) -> ScheduleSettings:
    """Valid settings (min <= interval <= max), as config.py allows them."""
    interval = draw(st.floats(0.5, 600.0))
    return ScheduleSettings(
        interval_s=interval,
        min_interval_s=interval * draw(st.floats(0.05, 1.0)),
        max_interval_s=interval * draw(st.floats(1.0, 64.0)),
        active_window_s=draw(st.floats(0.0, 3600.0)),
    )


@dataclass(frozen=True)
class Event:
    after: float  # seconds after the previous event
    outcome: str  # "polled" or "failed"
    in_flight: bool
    new_runs: bool


events = st.lists(
    st.builds(
        Event,
        after=st.floats(0.0, 5000.0),
        outcome=st.sampled_from(["polled", "failed"]),
        in_flight=st.booleans(),
        new_runs=st.booleans(),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(schedule_settings(), events)
def test_no_workflow_ever_waits_longer_than_the_max_or_the_min_while_in_flight(
    config: ScheduleSettings, history: list[Event]
) -> None:
    schedule = PollSchedule(config)
    now, in_flight = T0, False
    for event in history:
        now += event.after
        if event.outcome == "polled":
            schedule.polled(WF, now, in_flight=event.in_flight, new_runs=event.new_runs)
            in_flight = event.in_flight
        else:
            schedule.failed(WF, now)
        bound = config.min_interval_s if in_flight else config.max_interval_s
        (wait,) = schedule.due_in(now)
        assert 0 < wait <= bound + 1e-6
        assert schedule.due([WF], now + bound) == [WF]
        assert (schedule.states()["in_flight"] == 1) is in_flight


@settings(max_examples=300, deadline=None)
@given(
    config=schedule_settings(),
    quiet_ticks=st.integers(0, 400),
    start_fraction=st.floats(0.0, 1.0, exclude_max=True),
    latency_fraction=st.floats(0.0, 0.5, exclude_max=True),
)
def test_the_first_run_after_a_quiet_spell_is_seen_within_the_max_plus_one_interval(
    config: ScheduleSettings, quiet_ticks: int, start_fraction: float, latency_fraction: float
) -> None:
    """The daemon's loop: a tick every tick_s, each due workflow listed `latency` after its
    tick (under half a tick: more is an overrun). After a quiet spell of any length a run
    starts at any moment; the listing that first shows it comes within max + interval."""
    schedule = PollSchedule(config)
    tick = config.tick_s
    latency = latency_fraction * tick
    starts_at = T0 + (quiet_ticks + start_fraction) * tick
    seen_at = None
    number = 0
    while seen_at is None:
        now = T0 + number * tick
        number += 1
        if not schedule.due([WF], now):
            continue
        listed = now + latency
        ran = listed >= starts_at
        schedule.polled(WF, listed, in_flight=False, new_runs=ran)
        if ran:
            seen_at = listed
    assert seen_at - starts_at <= config.max_interval_s + config.interval_s


@settings(max_examples=200, deadline=None)
@given(
    config=schedule_settings(),
    latency_fraction=st.floats(0.0, 0.5, exclude_max=True),
    in_flight=st.booleans(),
)
def test_on_the_daemon_ticks_a_busy_workflow_keeps_its_pace(
    config: ScheduleSettings, latency_fraction: float, in_flight: bool
) -> None:
    """In flight: listed at every tick (the tick is the min interval). Active: at least
    once per interval plus one tick (the ticks need not divide the interval)."""
    schedule = PollSchedule(config)
    tick = config.tick_s
    listed: list[float] = []
    for number in range(50):
        now = T0 + number * tick
        if schedule.due([WF], now):
            listed.append(now)
            schedule.polled(WF, now + latency_fraction * tick, in_flight=in_flight, new_runs=True)
    gaps = [later - earlier for earlier, later in itertools.pairwise(listed)]
    pace = config.min_interval_s if in_flight else config.interval_s
    assert gaps and max(gaps) < pace + tick
    if in_flight:
        assert len(listed) == 50
