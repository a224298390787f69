"""The benchmark's scenarios, one module each; `SCENARIOS` in the order they run.

Each is `function(sizes, tmp) -> dict`: everything it measured, ready for JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench.scenarios.adaptive import scenario_adaptive
from tests.bench.scenarios.backfill import scenario_backfill
from tests.bench.scenarios.first_after_idle import scenario_first_after_idle
from tests.bench.scenarios.freshness import scenario_freshness
from tests.bench.scenarios.mapping import scenario_mapping
from tests.bench.scenarios.memory_idle import scenario_memory_idle
from tests.bench.scenarios.profiles import scenario_profiles
from tests.bench.scenarios.requests import scenario_requests
from tests.bench.sizes import Sizes

Scenario = Callable[[Sizes, Path], dict[str, Any]]

SCENARIOS: dict[str, Scenario] = {
    "requests": scenario_requests,
    "freshness": scenario_freshness,
    "adaptive": scenario_adaptive,
    "first_after_idle": scenario_first_after_idle,
    "backfill": scenario_backfill,
    "mapping": scenario_mapping,
    "memory_idle": scenario_memory_idle,
    "profiles": scenario_profiles,
}
