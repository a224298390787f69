"""The repo's copy of the shared payloads must stay identical to the source of truth."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COPY = REPO / "tests" / "shared"
ORIGINAL = REPO.parent / "shared"
PACKAGED = REPO / "exporter" / "emulator" / "data"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for sub in ("fixtures", "seed")
        for path in sorted((root / sub).glob("*"))
        if path.is_file()
    }


@pytest.mark.skipif(not (ORIGINAL / "fixtures").is_dir(), reason="no ../shared beside the repo")
def test_copy_matches_shared() -> None:
    assert _files(COPY) == _files(ORIGINAL)


def test_emulator_serves_the_same_fixtures() -> None:
    for path in sorted((COPY / "fixtures").glob("*.json")):
        assert (PACKAGED / path.name).read_bytes() == path.read_bytes(), path.name
