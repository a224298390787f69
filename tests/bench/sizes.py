"""The sizes of every scenario (`--set NAME=VALUE` changes one), and the scaled schedule.

The adaptive-polling scenarios would take hours at the daemon's real intervals (30 s
base, 300 s back-off cap). They run on a scaled clock instead: every duration of the
schedule divided by `scale`, so a 1 s interval stands for 30 s, a 10 s cap for 300 s,
and 60 s of wall time for 30 minutes. Request counts and latencies in intervals carry
over; latencies in seconds are given at the scaled clock.
"""

from __future__ import annotations

from dataclasses import dataclass

# The daemon's defaults (docs/design.md, "Adaptive polling"), in seconds.
REAL_INTERVAL_S = 30.0
REAL_MAX_INTERVAL_S = 300.0
REAL_ACTIVE_WINDOW_S = 300.0
REAL_DISCOVERY_INTERVAL_S = 300.0
REAL_METRIC_EXPORT_INTERVAL_S = 60.0  # OTEL_METRIC_EXPORT_INTERVAL's default


@dataclass(frozen=True)
class Sizes:
    # API requests, steady state
    req_workflows: int = 20
    req_history: int = 100
    req_new_per_interval: int = 5
    req_intervals: int = 10
    req_interval_s: float = 30.0
    # freshness (real clock)
    fresh_seconds: float = 40.0
    fresh_poll_s: float = 2.0
    fresh_workflows: int = 4
    # the scaled clock of the adaptive scenarios: `scaled_interval_s` stands for 30 s
    scaled_interval_s: float = 1.0
    # ORCHESTRA_POLL_INTERVAL_MIN on the scaled clock; 0: unset (the interval, its default)
    scaled_min_s: float = 0.0
    # adaptive polling, mixed fleet: `ad_active` of `ad_workflows` run regularly
    ad_workflows: int = 200
    ad_active: int = 20
    ad_intervals: int = 60  # measured: 60 intervals of 30 s = 30 minutes
    ad_warmup_intervals: int = 20  # before: idle workflows reach the back-off cap
    ad_run_every_intervals: float = 3.0  # an active workflow starts a run this often
    ad_run_duration_intervals: tuple[float, float] = (0.3, 2.5)
    ad_idle_history: int = 0  # old runs (before the lookback) each idle workflow lists
    ad_naive: bool = True  # replay the scenario for the naive baseline's request count
    # first run after idle: one run each, at a random moment after a quiet spell
    fai_workflows: int = 40
    fai_quiet_intervals: float = 30.0  # the back-off reaches its cap after 14 intervals
    fai_run_duration_intervals: tuple[float, float] = (0.2, 1.0)
    # backfill
    bf_steps: int = 50_000
    bf_width: int = 23  # fan-out width: width + 2 = 25 steps per run
    bf_workflows: int = 4
    bf_demo_runs: int = 200  # second backfill: demo workflows, ~2.7 steps per run
    # mapping cost
    map_steps: int = 10_000
    map_repeats: int = 3
    # memory and idle cost (idle CPU on the scaled clock: `idle_ticks` intervals measured)
    idle_workflows: int = 50
    idle_history: int = 100
    idle_warm_ticks: int = 20  # the back-off reaches its cap after 14
    idle_ticks: int = 30  # a multiple of the cap (10) and of discovery (10)
    idle_polls_naive_history: int = 1
    bg_seconds: float = 10.0
    mem_workflows: int = 100  # x mem_history runs of history = runs tracked
    mem_history: int = 100
    # profiles
    prof_steps: int = 5_000


QUICK = Sizes(
    req_workflows=4,
    req_history=20,
    req_intervals=1,
    fresh_seconds=5.0,
    fresh_workflows=3,
    ad_workflows=40,
    ad_active=4,
    ad_intervals=20,
    ad_warmup_intervals=15,
    fai_workflows=8,
    fai_quiet_intervals=18.0,
    bf_steps=1_500,
    bf_workflows=2,
    bf_demo_runs=0,  # skipped
    map_steps=1_500,
    map_repeats=1,
    idle_workflows=10,
    idle_history=20,
    idle_warm_ticks=15,
    idle_ticks=10,
    idle_polls_naive_history=1,
    bg_seconds=3.0,
    mem_workflows=10,
    mem_history=30,
    prof_steps=300,
)


@dataclass(frozen=True)
class ScaledSchedule:
    """The daemon's schedule with every duration divided by `scale`.

    `adaptive=False` sets ORCHESTRA_POLL_INTERVAL_MAX to the interval: the documented way
    to turn the back-off off (a fixed interval).
    """

    interval_s: float = 1.0
    min_s: float = 0.0  # 0: unset
    adaptive: bool = True

    @classmethod
    def of(cls, sizes: Sizes, *, adaptive: bool = True) -> ScaledSchedule:
        return cls(sizes.scaled_interval_s, sizes.scaled_min_s, adaptive)

    @property
    def scale(self) -> float:
        """How many real seconds one second of this clock stands for."""
        return REAL_INTERVAL_S / self.interval_s

    @property
    def max_s(self) -> float:
        return REAL_MAX_INTERVAL_S / self.scale if self.adaptive else self.interval_s

    @property
    def in_flight_s(self) -> float:
        """How often a workflow with a run in flight is polled."""
        return min(self.min_s or self.interval_s, self.interval_s)

    @property
    def tick_s(self) -> float:
        return self.in_flight_s

    @property
    def active_window_s(self) -> float:
        return REAL_ACTIVE_WINDOW_S / self.scale

    @property
    def discovery_s(self) -> float:
        return REAL_DISCOVERY_INTERVAL_S / self.scale

    def env(self) -> dict[str, str]:
        """The daemon's variables; the metrics push (OTEL_METRIC_EXPORT_INTERVAL) is
        scaled too, as part of what the schedule drives."""
        push_s = REAL_METRIC_EXPORT_INTERVAL_S / self.scale
        env = {
            "ORCHESTRA_POLL_INTERVAL": f"{self.interval_s:g}",
            "ORCHESTRA_POLL_INTERVAL_MAX": f"{self.max_s:g}",
            "ORCHESTRA_POLL_ACTIVE_WINDOW": f"{self.active_window_s:g}",
            "ORCHESTRA_DISCOVERY_INTERVAL": f"{self.discovery_s:g}",
            "OTEL_METRIC_EXPORT_INTERVAL": f"{push_s * 1000:.0f}",
        }
        if self.min_s:
            env["ORCHESTRA_POLL_INTERVAL_MIN"] = f"{self.min_s:g}"
        return env

    def describe(self) -> dict[str, float | bool]:
        return {
            "scale": self.scale,
            "interval_s": self.interval_s,
            "in_flight_interval_s": self.in_flight_s,
            "max_interval_s": self.max_s,
            "active_window_s": self.active_window_s,
            "discovery_interval_s": self.discovery_s,
            "adaptive": self.adaptive,
        }
