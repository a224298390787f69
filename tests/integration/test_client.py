"""The API client against the emulator serving the documented payloads, over sockets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from exporter.emulator import Emulator, fixture_scenario
from exporter.errors import ApiAuthError, ApiNotFoundError
from exporter.source.client import OrchestraClient

pytestmark = pytest.mark.integration

JOKE = "7c1e2f34-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
HI = "1234f567-bb12-1234-b7cd-f7a71a98cd24"


def test_every_documented_endpoint(shared_dir: Path) -> None:
    fixtures = shared_dir / "fixtures"

    async def scenario(base_url: str) -> None:
        async with OrchestraClient(base_url, "demo-key") as client:
            workflows = await client.list_workflows()
            assert [wf.workflow_id for wf in workflows] == [HI, JOKE]
            runs = await client.list_runs(JOKE)
            assert [run.id for run in runs] == [
                r["id"] for r in json.loads((fixtures / "runs-list.json").read_text())
            ]
            # Documented as a one-element array: unwrapped into one run.
            expected_run = json.loads((fixtures / "run.json").read_text())[0]
            run = await client.get_run(HI, expected_run["id"])
            assert run.id == expected_run["id"] and run.outputs == expected_run["outputs"]
            steps = await client.get_steps(JOKE, runs[0].id)
            assert [s.node_id for s in steps] == ["model", "slack_integration"]
            diagram = await client.get_diagram(JOKE)
            assert diagram == json.loads((fixtures / "diagram.json").read_text())["diagram"]
            with pytest.raises(ApiNotFoundError):
                await client.get_steps(JOKE, "no-such-run")
        async with OrchestraClient(base_url, "wrong-key") as client:
            with pytest.raises(ApiAuthError) as rejected:
                await client.list_workflows()
            assert "wrong-key" not in str(rejected.value)

    with Emulator(fixture_scenario(), api_key="demo-key") as emulator:
        asyncio.run(scenario(emulator.base_url))
