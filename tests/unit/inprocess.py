"""In-process parts for the tests of the stateful core: no subprocess, no sleeping.

The poll cycle runs in the test's own event loop against the real emulator (a real HTTP
server in a thread) whose runs move only when a `ManualClock` is advanced; spans go to a
`RecordingSink` that keeps them, and refuses them while told to. `DeliveryRig` is the
spool's delivery alone, on a ledger the test fills.

A `Rig` poller lists every owned workflow at every `poll()` (`EVERY_POLL`: the adaptive
schedule with every interval 0), so a test of the poll cycle decides when polls happen by
calling `poll()`; a test of the schedule passes `schedule=ScheduleSettings(...)` instead.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from exporter.delivery import Delivery, DeliverySettings
from exporter.emulator import Emulator, Scenario
from exporter.emulator.demo import demo_workflows
from exporter.emulator.graph import parse_time_us
from exporter.mapping.ids import trace_id_for_run
from exporter.mapping.spans import MappingOptions
from exporter.poller import Poller, PollSettings
from exporter.problems import ProblemReporter
from exporter.results import PollResult
from exporter.schedule import ScheduleSettings
from exporter.source.client import OrchestraClient
from exporter.source.retry import RetryPolicy
from exporter.state import Capture, Ledger
from exporter.telemetry import Telemetry
from tests.support.clock import ManualClock
from tests.support.sinks import RecordingSink

T = TypeVar("T")
API_KEY = "in-process-key"
START = 1_750_000_000.0  # where every ManualClock of these tests starts
# One attempt per request: a fault rule answers at once instead of after retries.
NO_RETRY = RetryPolicy(max_attempts=1)
# Every workflow is due at every poll: no back-off, no waiting for an interval.
EVERY_POLL = ScheduleSettings(
    interval_s=0.0, min_interval_s=0.0, max_interval_s=0.0, active_window_s=0.0
)


def trace_ids_of(run_ids: Sequence[str] | dict[str, int]) -> set[int]:
    return {trace_id_for_run(run_id) for run_id in run_ids}


def demo_scenario_at(clock: ManualClock, *, seed: int = 7) -> Scenario:
    """The demo's four workflows, with no runs yet: each test adds the runs it needs."""
    return Scenario(demo_workflows(clock()), clock=clock, seed=seed)


def finished_runs(
    scenario: Scenario, workflow_id: str, *, ended_after: float | None = None
) -> dict[str, int]:
    """Run id -> span count (steps + root) of the runs the API shows finished now."""
    found = {}
    for record in scenario.runs(workflow_id) or []:
        end = record["end_time"]
        if end is None or (ended_after is not None and parse_time_us(end) < ended_after * 1e6):
            continue
        steps = scenario.steps(workflow_id, record["id"]) or []
        found[record["id"]] = len(steps) + 1
    return found


@dataclass
class Rig:
    """The emulator serving a scenario, a ledger file, a recording sink and the clocks.

    The scenario's ManualClock is also the poller's wall clock, so the poller and the API
    agree on "now"; `monotonic` is the export backoff's clock. `run(body)` serves the
    scenario and runs `body` in a fresh event loop; `poller()` opens a poller in it.
    """

    scenario: Scenario
    ledger_path: Path
    emulator_options: dict[str, Any] = field(default_factory=dict)
    sink: RecordingSink = field(default_factory=RecordingSink)
    monotonic: ManualClock = field(default_factory=lambda: ManualClock(0.0))
    telemetry: Telemetry = field(default_factory=Telemetry)

    def __post_init__(self) -> None:
        assert isinstance(self.scenario.clock, ManualClock)
        self.clock: ManualClock = self.scenario.clock
        self.emulator = Emulator(self.scenario, api_key=API_KEY, **self.emulator_options)

    def run(self, body: Callable[[Rig], Awaitable[T]]) -> T:
        with self.emulator:
            return asyncio.run(body(self))

    def requests(self) -> Counter[str]:
        """Requests the emulator answered so far, by endpoint kind."""
        return Counter(self.emulator.stats()["by_kind"])

    @asynccontextmanager
    async def poller(
        self, client_class: type[OrchestraClient] = OrchestraClient, **settings: Any
    ) -> AsyncIterator[Poller]:
        """A poller of its own client and ledger, closed on exit (settings: PollSettings;
        the schedule is EVERY_POLL unless `schedule` says otherwise)."""
        settings.setdefault("schedule", EVERY_POLL)
        client = client_class(self.emulator.base_url, API_KEY, retry=NO_RETRY)
        ledger = Ledger(self.ledger_path)
        poller = Poller(
            client,
            ledger,
            self.sink,
            MappingOptions(),
            PollSettings(**settings),
            telemetry=self.telemetry,
            clock=self.clock,
            monotonic=self.monotonic,
        )
        client.on_rejected = poller.reporter.rejected
        try:
            yield poller
        finally:
            poller.close()
            ledger.close()
            await client.aclose()


class DeliveryRig:
    """A ledger's Delivery to a recording sink, on a wall clock and a backoff clock the
    test moves, with the ledger's metric totals loaded; `flush` is one delivery pass as a
    poll makes it."""

    def __init__(
        self,
        ledger: Ledger,
        settings: DeliverySettings | None = None,
        sink: RecordingSink | None = None,
        options: MappingOptions | None = None,
    ) -> None:
        options = options or MappingOptions()
        self.ledger = ledger
        self.sink = sink or RecordingSink()
        self.telemetry = Telemetry()
        # The persisted totals, as the poller loads them: confirmations add to them.
        self.telemetry.book.load(
            ledger.metric_series(), {"gen_ai_provider_name": options.genai_provider}
        )
        self.reporter = ProblemReporter(self.telemetry)
        self.clock = ManualClock(START)
        self.monotonic = ManualClock(1_000.0)
        self.delivery = Delivery(
            ledger,
            self.sink,
            options,
            self.telemetry,
            self.reporter,
            settings or DeliverySettings(),
            clock=self.clock,
            monotonic=self.monotonic,
        )

    def flush(self, *, force: bool = False) -> PollResult:
        result = PollResult()
        asyncio.run(self.delivery.flush(result, force=force))
        return result

    def capture(self, *captures: Capture) -> None:
        self.delivery.capture(captures, PollResult())

    def counted(self, metric: str) -> float:
        """Events counted in a workflow metric, over all its series."""
        return sum(s.count for (name, _), s in self.telemetry.book.series.items() if name == metric)

    def close(self) -> None:
        self.delivery.close()
