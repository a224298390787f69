"""The promtool fixture: skips without promtool, except in CI (env CI set), where it fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.promtool import find_promtool, in_ci


@pytest.fixture(scope="session")
def promtool() -> Path:
    path = find_promtool()
    if path is None:
        reason = "promtool is not on PATH nor in .ci/bin (install it with .ci/install-promtool)"
        if in_ci():
            pytest.fail(f"{reason}; CI must have it", pytrace=False)
        pytest.skip(reason)
    return path
