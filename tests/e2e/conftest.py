"""The end-to-end tests' fixtures (their measured figures are printed by tests/conftest.py)."""

from __future__ import annotations

from tests.deploy.conftest import promtool  # noqa: F401  (a pytest fixture)
