"""The world a test runs the real daemon in: an emulated Orchestra, a real OTLP receiver
and a private state file, all torn down afterwards.

    with demo_world(tmp_path) as world:            # the four demo workflows, some history
        result = world.cli("once")                 # a command to completion
        with world.daemon(ORCHESTRA_POLL_INTERVAL="0.5") as daemon:   # `run`: a Daemon
            world.receiver.wait_for_spans(world.expected_span_count())

    with open_world(scenario, tmp_path) as world:  # any scenario (static runs, schedules...)

The `world` fixture (tests/support/fixtures.py) is `demo_world(tmp_path)`. Everything
listens on ports the OS picked and keeps its files under the test's tmp_path, so tests
run side by side.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.config import Settings
from exporter.emulator import Emulator, Scenario
from exporter.emulator.demo import demo_workflows
from tests.support.clock import ManualClock
from tests.support.daemon import REPO, Daemon, orchestra_otel, run_command
from tests.support.otlp_receiver import OtlpReceiver

API_KEY = "test-key-9f3a7c"

__all__ = [
    "API_KEY",
    "REPO",
    "World",
    "daemon_env",
    "demo_scenario",
    "demo_world",
    "open_world",
    "user_env",
]


def user_env(**settings: str) -> dict[str, str]:
    """A user's environment with none of our variables set (this checkout importable),
    plus `settings`: what `orchestra-otel demo` starts from, needing no API of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRA_", "OTEL_"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(settings)
    return env


def daemon_env(
    base_url: str, state_path: Path, *, api_key: str = API_KEY, **settings: str
) -> dict[str, str]:
    """user_env() with orchestra-otel pointed at the API at `base_url` and its ledger at
    `state_path`, /metrics off, then `settings`.

    Idle workflows back off to at most 2 s (ORCHESTRA_POLL_INTERVAL_MAX; the poll interval
    when that is longer, as the daemon refuses a cap below it): tests that add runs to a
    quiet emulator see them within their waits. The adaptive schedule's own tests set it
    themselves."""
    defaults = {
        "ORCHESTRA_BASE_URL": base_url,
        "ORCHESTRA_API_KEY": api_key,
        "ORCHESTRA_STATE_PATH": str(state_path),
        "ORCHESTRA_HTTP_ADDR": "off",
        "ORCHESTRA_POLL_INTERVAL_MAX": _idle_cap(settings.get("ORCHESTRA_POLL_INTERVAL")),
    }
    return user_env(**{**defaults, **settings})


def _idle_cap(interval: str | None) -> str:
    try:
        seconds = float(interval or Settings.model_fields["poll_interval"].default)
    except ValueError:
        return "2"  # the daemon reports the unreadable interval itself
    return f"{max(2.0, seconds):g}"


@dataclass
class World:
    """One emulated Orchestra, one receiver, one state file: what a user's machine has."""

    scenario: Scenario
    clock: ManualClock
    emulator: Emulator
    receiver: OtlpReceiver
    state_path: Path

    def env(self, protocol: str = "grpc", **extra: str) -> dict[str, str]:
        """The daemon's environment: this world's API, ledger and receiver, plus `extra`."""
        settings = {"OTEL_EXPORTER_OTLP_TIMEOUT": "3", **self.receiver.env(protocol), **extra}
        return daemon_env(self.emulator.base_url, self.state_path, **settings)

    def cli(
        self, *args: str, protocol: str = "grpc", timeout: float = 90, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """`orchestra-otel ARGS` run to completion against this world."""
        return run_command(orchestra_otel(*args), self.env(protocol, **extra), timeout=timeout)

    def daemon(
        self, *args: str, protocol: str = "grpc", drop: Iterable[str] = (), **extra: str
    ) -> Daemon:
        """`orchestra-otel run ARGS` started against this world (not waited for).

        Polls every 0.5 s and serves /metrics on a port the OS picks unless `extra` says
        otherwise; `drop` removes variables from its environment.
        """
        settings = {"ORCHESTRA_POLL_INTERVAL": "0.5", "ORCHESTRA_HTTP_ADDR": "127.0.0.1:0"}
        env = self.env(protocol, **{**settings, **extra})
        for name in drop:
            env.pop(name, None)
        return Daemon(orchestra_otel("run", *args), env)

    # --- what the emulator says must arrive ---------------------------------------------

    def finished_runs(self) -> dict[str, list[dict[str, Any]]]:
        """run id -> its steps, for every run the emulator shows as ended."""
        found: dict[str, list[dict[str, Any]]] = {}
        for workflow_id in self.scenario.workflow_ids():
            for run in self.scenario.runs(workflow_id) or []:
                if run["end_time"] is not None:
                    run_id = str(run["id"])
                    found[run_id] = list(self.scenario.steps(workflow_id, run_id) or [])
        return found

    def expected_span_count(self) -> int:
        return sum(1 + len(steps) for steps in self.finished_runs().values())

    def requests(self) -> dict[str, int]:
        """API requests the emulator answered so far, by kind (list_runs, steps, ...)."""
        by_kind: dict[str, int] = self.emulator.stats()["by_kind"]
        return dict(by_kind)

    def add_finished_runs(self, per_workflow: int = 1) -> list[str]:
        """Runs that are already over when they first become visible (ended `now`).

        Advances the clock first so that every batch sits after the previous one.
        """
        self.clock.advance(30.0 * per_workflow)
        run_ids: list[str] = []
        for workflow_id in self.scenario.workflow_ids():
            run_ids += self.scenario.add_history(
                workflow_id, per_workflow, every=10.0, duration=(1.0, 5.0), failure_rate=0.2
            )
        return run_ids


def demo_scenario(clock: Callable[[], float], *, history: int = 3, seed: int = 7) -> Scenario:
    """The four demo workflows, each with `history` finished runs 30 s apart, one failing."""
    scenario = Scenario(demo_workflows(clock()), clock=clock, seed=seed)
    for index, workflow_id in enumerate(scenario.workflow_ids()):
        scenario.add_history(
            workflow_id, history, every=30.0, duration=(1.0, 5.0), fail_runs=(index % history,)
        )
    return scenario


@contextlib.contextmanager
def open_world(
    scenario: Scenario,
    tmp_path: Path,
    *,
    clock: ManualClock | None = None,
    receiver: OtlpReceiver | None = None,
    **emulator_options: Any,
) -> Iterator[World]:
    """Serve `scenario` (emulator options: history_limit, recent_limit, ...) and start
    `receiver` (a fresh OtlpReceiver by default); the ledger is tmp_path/ledger.db.

    `clock` is the scenario's manual clock, when it has one (a scenario on the real
    clock gets a ManualClock nobody moves)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    emulator = Emulator(scenario, api_key=API_KEY, **emulator_options)
    receiver = receiver or OtlpReceiver()
    with emulator, receiver:
        yield World(scenario, clock or ManualClock(), emulator, receiver, tmp_path / "ledger.db")


@contextlib.contextmanager
def demo_world(
    tmp_path: Path, *, history: int = 3, seed: int = 7, recent_limit: int = 100_000
) -> Iterator[World]:
    """`demo_scenario` on a manual clock set to now, served with a long request log (so a
    test can check every request the daemon made)."""
    clock = ManualClock(time.time())
    scenario = demo_scenario(clock, history=history, seed=seed)
    with open_world(scenario, tmp_path, clock=clock, recent_limit=recent_limit) as world:
        yield world
