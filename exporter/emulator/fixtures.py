"""The documented payloads as a scenario: `python -m exporter.emulator --scenario fixtures`.

Serves the fixture files (a copy of the project's shared/fixtures, packaged in
exporter/emulator/data) exactly as they are, whatever the clock says.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from exporter.emulator.scenario import Scenario
from exporter.emulator.store import Clock

# Ids that the documented fixtures use (docs/orchestra-api.md; payloads in tests/shared/fixtures).
FIXTURE_HI_WORKFLOW_ID = "1234f567-bb12-1234-b7cd-f7a71a98cd24"
FIXTURE_JOKE_WORKFLOW_ID = "7c1e2f34-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
FIXTURE_STEPS_RUN_ID = "5b69669f-975a-49af-a33a-61ff9ae5a20f"


def packaged_fixtures() -> Traversable:
    """The copy of shared/fixtures shipped inside the package."""
    return resources.files("exporter.emulator") / "data"


def fixture_scenario(
    shared_dir: Path | Traversable | None = None, *, clock: Clock = time.time, seed: int = 0
) -> Scenario:
    """Serve the documented fixtures exactly as they are (static records).

    `shared_dir` is the folder holding the fixture files or its parent (`shared/`);
    default: the copy packaged in `exporter/emulator/data`.
    """
    folder = _fixture_folder(shared_dir)

    def load(name: str) -> Any:
        return json.loads((folder / name).read_text(encoding="utf-8"))

    diagram = load("diagram.json")["diagram"]
    scenario = Scenario(clock=clock, seed=seed)
    for record in load("workflows.json"):
        is_joke = record["workflow_id"] == FIXTURE_JOKE_WORKFLOW_ID
        scenario.add_static_workflow(record, diagram=diagram if is_joke else None)
    steps = load("steps-model-slack.json")
    for record in load("runs-list.json"):
        run_steps = steps if record["id"] == FIXTURE_STEPS_RUN_ID else ()
        scenario.add_static_run(FIXTURE_JOKE_WORKFLOW_ID, record, run_steps)
    for record in load("run.json"):  # documented as a one-element array
        scenario.add_static_run(FIXTURE_HI_WORKFLOW_ID, record)
    return scenario


def _fixture_folder(shared_dir: Path | Traversable | None) -> Path | Traversable:
    if shared_dir is None:
        return packaged_fixtures()
    nested = shared_dir / "fixtures"
    return nested if nested.is_dir() else shared_dir
