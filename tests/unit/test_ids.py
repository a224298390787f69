"""exporter/mapping/ids.py: trace and span ids of docs/design.md ("Ids")."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.mapping.ids import (
    format_span_id,
    format_trace_id,
    root_span_id,
    step_span_id,
    trace_id_for_run,
)

RUN_ID = "5b69669f-975a-49af-a33a-61ff9ae5a20f"  # fixtures/runs-list.json
STEP_IDS = ["b2acc986-af06-418a-bf71-c730d5ghaf0b", "ad6edfea-bf1c-4639-9d9f-b53c9ad60bgg"]
NIL_UUID = "00000000-0000-0000-0000-000000000000"


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@pytest.mark.parametrize(
    "run_id",
    [
        RUN_ID,
        "a40d4d53-7e5e-432b-8f23-8afdc53eefa3",
        "3F0C2B9E-8D4A-4E61-9C57-2A1B0D7E6F48",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "00000000-0000-0000-0000-000000000001",
    ],
)
def test_uuid_run_id_is_the_trace_id(run_id: str) -> None:
    trace_id = trace_id_for_run(run_id)
    assert trace_id == uuid.UUID(run_id).int
    # What a user pastes into Jaeger: the run id without dashes.
    assert format_trace_id(trace_id) == run_id.replace("-", "").lower()


def test_pinned_trace_id_of_fixture_run() -> None:
    assert format_trace_id(trace_id_for_run(RUN_ID)) == "5b69669f975a49afa33a61ff9ae5a20f"


@pytest.mark.parametrize(
    "run_id", ["run-42", "42", "", "b2acc986-af06-418a-bf71-c730d5ghaf0b", "ünïcode ✓"]
)
def test_non_uuid_run_id_hashes(run_id: str) -> None:
    expected = int.from_bytes(_sha(run_id.encode("utf-8"))[:16], "big")
    assert trace_id_for_run(run_id) == expected
    assert format_trace_id(trace_id_for_run(run_id)) == _sha(run_id.encode())[:16].hex()


def test_nil_uuid_falls_back_to_hashing() -> None:
    trace_id = trace_id_for_run(NIL_UUID)
    assert trace_id != 0
    assert trace_id == int.from_bytes(_sha(NIL_UUID.encode())[:16], "big")


def test_span_ids_are_pinned_to_their_derivation() -> None:
    # Computed here independently, so a change of prefix or byte order is caught:
    # a changed derivation changes every span id ever exported (duplicates in backends).
    step_id = STEP_IDS[0]
    expected_step = int.from_bytes(_sha(b"orchestra-otel/step/" + step_id.encode())[:8], "big")
    expected_root = int.from_bytes(_sha(b"orchestra-otel/run/" + RUN_ID.encode())[:8], "big")
    assert step_span_id(step_id) == expected_step
    assert root_span_id(RUN_ID) == expected_root
    assert (
        format_span_id(step_span_id(step_id))
        == _sha(b"orchestra-otel/step/" + step_id.encode())[:8].hex()
    )


def test_span_ids_are_stable() -> None:
    assert step_span_id(STEP_IDS[0]) == step_span_id(STEP_IDS[0])
    assert root_span_id(RUN_ID) == root_span_id(str(RUN_ID))


def test_different_steps_get_different_ids() -> None:
    inputs = [*STEP_IDS, RUN_ID, "a", "b", "A", "a "]
    assert len({step_span_id(step) for step in inputs}) == len(inputs)
    assert len({root_span_id(run) for run in inputs}) == len(inputs)


@pytest.mark.parametrize("text", [RUN_ID, *STEP_IDS, "x", ""])
def test_root_and_step_never_collide_for_the_same_string(text: str) -> None:
    assert root_span_id(text) != step_span_id(text)


@pytest.mark.parametrize("step_id", STEP_IDS)
def test_non_hex_step_ids_work(step_id: str) -> None:
    with pytest.raises(ValueError):
        uuid.UUID(step_id)  # the premise: not a valid UUID
    span_id = step_span_id(step_id)
    assert 0 < span_id < 2**64
    assert len(format_span_id(span_id)) == 16


def test_formatting_pads_with_zeros() -> None:
    assert format_trace_id(1) == "0" * 31 + "1"
    assert format_span_id(255) == "0" * 14 + "ff"


@given(st.text())
def test_ids_in_range_and_deterministic_for_any_text(text: str) -> None:
    trace_id = trace_id_for_run(text)
    assert 0 < trace_id < 2**128
    assert trace_id == trace_id_for_run(text)
    assert len(format_trace_id(trace_id)) == 32
    for span_id in (root_span_id(text), step_span_id(text)):
        assert 0 < span_id < 2**64
        assert len(format_span_id(span_id)) == 16
    assert root_span_id(text) == root_span_id(text)
    assert step_span_id(text) == step_span_id(text)


@given(st.uuids())
def test_any_uuid_is_its_own_trace_id(value: uuid.UUID) -> None:
    expected = value.int or int.from_bytes(_sha(str(value).encode())[:16], "big")
    assert trace_id_for_run(str(value)) == expected
    if value.int:
        assert format_trace_id(trace_id_for_run(str(value))) == value.hex


def test_ids_of_lone_surrogate_from_json() -> None:
    # Regression: a lone surrogate (a valid JSON escape) raised UnicodeEncodeError.
    import json

    step_id = json.loads('"step-\\ud800"')
    assert 0 < step_span_id(step_id) < 2**64
    assert 0 < root_span_id(step_id) < 2**64
    assert 0 < trace_id_for_run(step_id) < 2**128
    assert step_span_id(step_id) == step_span_id(step_id)
    assert step_span_id(step_id) != step_span_id("step-")
