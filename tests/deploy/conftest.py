"""Fixtures for promtool and amtool: they skip without the tool, except in CI (env CI set),
where they fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.promtool import find_tool, in_ci


def require_tool(name: str) -> Path:
    path = find_tool(name)
    if path is None:
        reason = f"{name} is not on PATH nor in .ci/bin (install it with .ci/install-prometheus)"
        if in_ci():
            pytest.fail(f"{reason}; CI must have it", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def promtool() -> Path:
    return require_tool("promtool")


@pytest.fixture(scope="session")
def amtool() -> Path:
    return require_tool("amtool")
