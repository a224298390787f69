"""Three replicas with ORCHESTRA_SHARD 0/3, 1/3, 2/3 split the workflows between them."""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

import pytest

from exporter.discovery import owns_workflow
from exporter.emulator import Scenario
from exporter.emulator.demo import demo_workflows
from tests.support.clock import ManualClock
from tests.support.world import open_world

pytestmark = pytest.mark.integration

WORKFLOWS = 12


def test_three_shards_export_every_run_exactly_once(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    scenario = Scenario(clock=clock, seed=3)
    templates = demo_workflows(clock())
    for index in range(WORKFLOWS):
        spec = dataclasses.replace(
            templates[index % len(templates)],
            workflow_id=str(uuid.UUID(int=0x5AD0 << 64 | index)),
            name=f"workflow-{index:02d}",
        )
        scenario.add_workflow(spec)
        scenario.add_history(spec.workflow_id, 2, every=30.0, duration=(1.0, 4.0))
    owners = {
        wid: [i for i in range(3) if owns_workflow(wid, (i, 3))] for wid in scenario.workflow_ids()
    }
    assert all(len(shards) == 1 for shards in owners.values())
    assert {shards[0] for shards in owners.values()} == {0, 1, 2}, "a shard owns nothing"
    with open_world(scenario, tmp_path, clock=clock) as world:
        emulator, receiver = world.emulator, world.receiver
        for shard in range(3):
            emulator.reset_stats()
            result = world.cli(
                "once",
                ORCHESTRA_SHARD=f"{shard}/3",
                ORCHESTRA_STATE_PATH=str(tmp_path / f"shard-{shard}.db"),
            )
            assert result.returncode == 0, result.stderr
            called = {
                entry["path"].split("/workflows/")[1].split("/")[0]
                for entry in emulator.stats()["recent"]
                if "/workflows/" in entry["path"]
            }
            mine = {wid for wid, shards in owners.items() if shards == [shard]}
            assert called == mine, f"shard {shard} called the API for other workflows"
        receiver.wait_for_spans(world.expected_span_count(), timeout=10)
        assert receiver.duplicate_count() == 0
        assert set(receiver.traces()) == {r.replace("-", "") for r in world.finished_runs()}
