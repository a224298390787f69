"""An emulator of the Arcee Orchestra workflow API, for the demo, tests and benchmarks.

`Emulator(scenario).start()` serves a `Scenario` over real HTTP; `demo_scenario()` gives
realistic workflows whose runs keep coming, `fixture_scenario()` the documented payloads.
"""

from __future__ import annotations

from exporter.emulator.faults import FaultPlan, FaultRule
from exporter.emulator.graph import (
    CodeNode,
    Failure,
    IntegrationNode,
    ModelNode,
    WorkflowSpec,
)
from exporter.emulator.scenario import ManualClock, Scenario, demo_scenario, fixture_scenario
from exporter.emulator.server import Emulator

__all__ = [
    "CodeNode",
    "Emulator",
    "Failure",
    "FaultPlan",
    "FaultRule",
    "IntegrationNode",
    "ManualClock",
    "ModelNode",
    "Scenario",
    "WorkflowSpec",
    "demo_scenario",
    "fixture_scenario",
]
