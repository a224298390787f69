"""An emulator of the Arcee Orchestra workflow API, for the demo, tests and benchmarks.

`Emulator(scenario).start()` serves a `Scenario` over real HTTP; `demo_scenario()` gives
realistic workflows whose runs keep coming, `fixture_scenario()` the documented payloads.
`python -m exporter.emulator` serves one alone; fault rules (faults.py), added over HTTP
at `/_emulator/faults`, rehearse an API that fails or turns hostile.

    server.py     Emulator: lifecycle, request counting, one request's way through
    api.py        the workflow API proper: routes, the bearer key, answers
    control.py    the `/_emulator/` endpoints: faults, runs, api key, clock, stats
    answers.py    how an answer goes out under a fault (whole, truncated, reset, streamed)
    transport.py  the HTTP/1.1 server and handler that put it on the wire
    messages.py   Request, Response, HttpError and JSON helpers shared by the above
    faults.py     fault rules and the plan that applies them; hostile.py their bodies
    stats.py      what arrived, per endpoint and status, and the recent requests
    scenario.py   Scenario: workflows and runs at the clock's time (store.py holds
                  them, builders.py generates histories and schedules, runs.py plans
                  and renders one run, graph.py the workflows and their nodes)
    demo.py       the demo's workflows and demo_scenario(); fixtures.py the fixtures'
"""

from __future__ import annotations

from exporter.emulator.demo import demo_scenario
from exporter.emulator.faults import FaultPlan, FaultRule
from exporter.emulator.fixtures import fixture_scenario
from exporter.emulator.graph import (
    CodeNode,
    Failure,
    IntegrationNode,
    ModelNode,
    WorkflowSpec,
)
from exporter.emulator.scenario import Scenario
from exporter.emulator.server import Emulator

__all__ = [
    "CodeNode",
    "Emulator",
    "Failure",
    "FaultPlan",
    "FaultRule",
    "IntegrationNode",
    "ModelNode",
    "Scenario",
    "WorkflowSpec",
    "demo_scenario",
    "fixture_scenario",
]
