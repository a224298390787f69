"""Finding and running promtool: on PATH or installed by .ci/install-promtool."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCAL_PROMTOOL = REPO / ".ci" / "bin" / "promtool"


def find_promtool() -> Path | None:
    on_path = shutil.which("promtool")
    if on_path:
        return Path(on_path)
    if LOCAL_PROMTOOL.is_file() and os.access(LOCAL_PROMTOOL, os.X_OK):
        return LOCAL_PROMTOOL
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
