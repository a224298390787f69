"""Shared pytest fixtures; tests/conftest.py imports them for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.otlp_receiver import OtlpReceiver
from tests.support.world import World, demo_world


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A started OTLP receiver (gRPC + HTTP on 127.0.0.1), stopped after the test."""
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """`demo_world(tmp_path)`: the demo workflows with history, a receiver, a ledger.

    A module that needs another history or seed overrides this fixture with its own
    `world` calling demo_world(tmp_path, history=..., seed=...)."""
    with demo_world(tmp_path) as made:
        yield made
