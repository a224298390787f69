"""Opt-in content (prompts, completions, tool arguments): JSON text, truncated.

Span attributes cannot hold objects, so content becomes JSON text. Each value is cut
to a configurable number of characters (default 2048, Tempo's default attribute limit)
and the cut is marked, so a reader knows the text is not whole.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

ELLIPSIS: Final = "…"


def truncate(text: str, max_length: int) -> str:
    if len(text) <= max_length:
        return text
    if max_length <= len(ELLIPSIS):
        return text[:max_length]
    return text[: max_length - len(ELLIPSIS)] + ELLIPSIS


def as_text(value: object) -> str:
    """Strings stay as they are; anything else becomes compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def input_messages(messages: object) -> list[dict[str, object]]:
    """OpenAI-style chat messages in the GenAI semantic conventions' message shape."""
    if not isinstance(messages, list):
        return []
    return [_message(m) for m in messages if isinstance(m, Mapping)]


def output_messages(outputs: Mapping[str, object]) -> list[dict[str, object]]:
    choices = outputs.get("choices")
    if not isinstance(choices, list):
        return []
    converted = []
    for choice in choices:
        if not isinstance(choice, Mapping):
            continue
        message = choice.get("message")
        entry = _message(message if isinstance(message, Mapping) else {})
        entry.setdefault("role", "assistant")
        if isinstance(choice.get("finish_reason"), str):
            entry["finish_reason"] = choice["finish_reason"]
        converted.append(entry)
    return converted


def _message(message: Mapping[str, object]) -> dict[str, object]:
    parts: list[dict[str, object]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    content = message.get("content")
    if isinstance(content, str):
        parts.append({"type": "text", "content": content})
    elif content is not None:
        parts.append({"type": "text", "content": as_text(content)})
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        parts.extend(_tool_call(call) for call in tool_calls if isinstance(call, Mapping))
    entry: dict[str, object] = {"parts": parts}
    if isinstance(message.get("role"), str):
        entry = {"role": message["role"], "parts": parts}
    return entry


def _tool_call(call: Mapping[str, object]) -> dict[str, object]:
    function = call.get("function")
    function = function if isinstance(function, Mapping) else {}
    return {
        "type": "tool_call",
        "id": call.get("id"),
        "name": function.get("name"),
        "arguments": function.get("arguments"),
    }
