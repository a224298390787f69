"""Shared fixtures: a real OTLP receiver, the emulator, paths to the shared payloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fixtures import otlp_receiver, world  # noqa: F401  (pytest fixtures)

REPO = Path(__file__).resolve().parent.parent


def _shared_dir() -> Path:
    """A copy of the project's shared payloads, kept in the repo so tests run anywhere.

    tests/unit/test_shared_copy.py checks the copy against ../shared when that exists.
    """
    return REPO / "tests" / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _shared_dir()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/testdata from the current mapping (review the diff!)",
    )
