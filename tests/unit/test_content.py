"""exporter/mapping/content.py: captured content stays valid JSON at any limit."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.mapping.content import (
    ELLIPSIS,
    fit_json,
    fitted_messages,
    fitted_text,
    input_messages,
    output_messages,
)

FLOOR = 16  # ORCHESTRA_CONTENT_MAX_LENGTH's minimum

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=200),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"content": st.text(max_size=500)},
        optional={
            "role": st.sampled_from(["system", "user", "assistant", "tool", ""]),
            "tool_call_id": st.text(max_size=10),
            "reasoning_content": st.text(max_size=100),
        },
    ),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, limit=st.integers(FLOOR, 600))
def test_fitted_json_parses_and_fits(value: Any, limit: int) -> None:
    text = fitted_text(value, limit)
    assert len(text) <= limit
    if not isinstance(value, str):  # text stays text; anything else is JSON
        json.loads(text)  # never a cut document


@settings(max_examples=300, deadline=None)
@given(raw=messages, limit=st.integers(FLOOR, 600))
def test_fitted_messages_keep_the_message_shape(raw: list[dict[str, Any]], limit: int) -> None:
    text = fitted_messages(input_messages(raw), limit)
    assert len(text) <= limit
    document = json.loads(text)
    assert isinstance(document, list)
    for message in document:
        assert isinstance(message["role"], str) and message["role"]
        assert isinstance(message["parts"], list)
        for part in message["parts"]:
            assert part["type"] in ("text", "reasoning", "tool_call_response")
            if part["type"] == "tool_call_response":
                assert "response" in part


def test_short_strings_stay_whole_and_long_ones_are_cut_and_marked() -> None:
    value = {"short": "ok", "long": "x" * 1000}
    text = fit_json(value, 100)
    assert text is not None and len(text) <= 100
    document = json.loads(text)
    assert document["short"] == "ok"
    assert document["long"].endswith(ELLIPSIS) and set(document["long"][:-1]) == {"x"}


def test_fair_shares_between_long_strings() -> None:
    text = fit_json(["a" * 500, "b" * 500], 202)
    assert text is not None
    first, second = json.loads(text)
    assert abs(len(first) - len(second)) <= 1


def test_messages_that_cannot_fit_lose_trailing_parts_then_messages() -> None:
    raw = [{"role": "user", "content": "hello " * 50}, {"role": "user", "content": "again"}]
    text = fitted_messages(input_messages(raw), 60)
    document = json.loads(text)
    assert len(text) <= 60
    assert len(document) <= 1
    assert fitted_messages(input_messages(raw), 16) == "[]"


def test_a_tool_reply_is_a_tool_call_response_part() -> None:
    raw = [{"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'}]
    assert input_messages(raw) == [
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "call_1", "response": '{"temp": 21}'}],
        }
    ]


def test_roles_and_finish_reasons_are_always_set() -> None:
    assert input_messages([{"content": "hi"}])[0]["role"] == "user"
    replies = output_messages({"choices": [{"message": {"content": "yo"}}]})
    assert replies == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "yo"}],
            "finish_reason": "unknown",
        }
    ]


def test_plain_text_is_cut_at_the_end() -> None:
    assert fitted_text("abcdefghijklmnopqrstuvwxyz", 16) == "abcdefghijklmno" + ELLIPSIS
