"""Finding and running the Prometheus tools: on PATH or installed by .ci/install-prometheus."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCAL_BIN = REPO / ".ci" / "bin"


def find_tool(name: str) -> Path | None:
    """`name` on PATH, else in .ci/bin (prometheus, promtool, alertmanager, amtool)."""
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    local = LOCAL_BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return local
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def run_promtool(
    promtool: Path, *args: str | Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
