"""Drive the real `orchestra-otel` command against the emulator and a real OTLP receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from exporter.emulator import Emulator, ManualClock, Scenario
from exporter.emulator.demo import demo_workflows
from tests.support.otlp_receiver import OtlpReceiver

API_KEY = "test-key-9f3a7c"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class World:
    """One emulated Orchestra, one receiver, one state file: what a user's machine has."""

    scenario: Scenario
    clock: ManualClock
    emulator: Emulator
    receiver: OtlpReceiver
    state_path: Path

    def env(self, protocol: str = "grpc", **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRA_", "OTEL_"))}
        env.update(
            {
                "ORCHESTRA_BASE_URL": self.emulator.base_url,
                "ORCHESTRA_API_KEY": API_KEY,
                "ORCHESTRA_STATE_PATH": str(self.state_path),
                "ORCHESTRA_HTTP_ADDR": "off",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
                "PYTHONPATH": str(REPO),
            }
        )
        env.update(self.receiver.env(protocol))
        env.update(extra)
        return env

    def cli(
        self, *args: str, protocol: str = "grpc", timeout: float = 90, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "exporter", *args],
            env=self.env(protocol, **extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def daemon(self, *args: str, protocol: str = "grpc", **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", *args],
            env=self.env(protocol, **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finished_runs(self) -> dict[str, list[dict[str, object]]]:
        """run id -> its steps, for every run the emulator shows as ended."""
        found: dict[str, list[dict[str, object]]] = {}
        for workflow_id in self.scenario.workflow_ids():
            for run in self.scenario.runs(workflow_id) or []:
                if run["end_time"] is not None:
                    run_id = str(run["id"])
                    found[run_id] = list(self.scenario.steps(workflow_id, run_id) or [])
        return found

    def expected_span_count(self) -> int:
        return sum(1 + len(steps) for steps in self.finished_runs().values())

    def requests(self) -> dict[str, int]:
        by_kind: dict[str, int] = self.emulator.stats()["by_kind"]
        return dict(by_kind)


def make_world(tmp_path: Path, *, history: int = 3) -> Iterator[World]:
    clock = ManualClock(time.time())
    scenario = Scenario(demo_workflows(clock()), clock=clock, seed=7)
    for index, workflow_id in enumerate(scenario.workflow_ids()):
        scenario.add_history(
            workflow_id, history, every=30.0, duration=(1.0, 5.0), fail_runs=(index % history,)
        )
    emulator = Emulator(scenario, api_key=API_KEY)
    emulator.start()
    receiver = OtlpReceiver()
    receiver.start()
    try:
        yield World(scenario, clock, emulator, receiver, tmp_path / "ledger.db")
    finally:
        receiver.stop()
        emulator.stop()


def stop_daemon(process: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s: {message}")
