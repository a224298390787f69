"""Shared pytest fixtures; import them into tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.otlp_receiver import OtlpReceiver


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A started OTLP receiver (gRPC + HTTP on 127.0.0.1), stopped after the test."""
    with OtlpReceiver() as receiver:
        yield receiver
