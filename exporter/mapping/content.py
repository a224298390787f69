"""Opt-in content (prompts, completions, tool arguments) as JSON text that stays valid.

Span attributes cannot hold objects, so content becomes JSON text, at most
`max_chars` characters of it (ORCHESTRA_CONTENT_MAX_LENGTH; Tempo keeps 2048 by default).
The document is never cut: its strings are (each cut marked with "…"), fairly, longest
first, and only when the structure alone does not fit are whole parts or messages left
out. So every captured value parses, and message lists stay valid against the GenAI
conventions' schemas (docs/design.md, "Content capture").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

ELLIPSIS: Final = "…"
# What a missing finish reason is written as: the output schema requires one.
UNKNOWN_FINISH_REASON: Final = "unknown"
# The message schema's structural fields: never cut, or the message would not validate.
MESSAGE_FIELDS: Final = frozenset({"role", "type", "id", "name", "finish_reason", "mime_type"})
_FIT_ROUNDS: Final = 8


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
    return _dumps(value)


def fitted_text(value: object, max_chars: int) -> str:
    """A string cut to `max_chars`; anything else as JSON of at most `max_chars` that parses.

    What cannot fit even with every string emptied becomes the JSON string of its cut
    serialisation: still JSON, still at most `max_chars`.
    """
    if isinstance(value, str):
        return truncate(value, max_chars)
    fitted = fit_json(value, max_chars)
    if fitted is not None:
        return fitted
    return _dumps(_cut_to_cost(_dumps(value), max(max_chars - 2, 0)))


def fitted_messages(messages: list[dict[str, Any]], max_chars: int) -> str:
    """A GenAI message list as JSON of at most `max_chars`, valid against its schema.

    When even empty texts do not fit, trailing parts, then trailing messages, are left
    out; the floor is `[]`, an empty list, which is valid too.
    """
    kept = [dict(message, parts=list(message.get("parts", []))) for message in messages]
    while True:
        fitted = fit_json(kept, max_chars, keep=MESSAGE_FIELDS)
        if fitted is not None:
            return fitted
        if not kept:
            return "[]"
        if kept[-1]["parts"]:
            kept[-1]["parts"].pop()
        else:
            kept.pop()


def fit_json(value: object, max_chars: int, *, keep: frozenset[str] = frozenset()) -> str | None:
    """JSON of `value` with its strings cut so the text fits, or None if it cannot fit.

    Strings held under a key in `keep` are never cut.
    """
    text = _dumps(value)
    if len(text) <= max_chars:
        return text
    strings = _strings(value, keep)
    skeleton = _dumps(_map_strings(value, lambda _: "", keep))
    budget = max_chars - len(skeleton)
    if budget < 0:
        return None
    costs = [_cost(s) for s in strings]
    for _ in range(_FIT_ROUNDS):
        text = _dumps(_map_strings(value, _cutter(_fair_cap(costs, budget)), keep))
        if len(text) <= max_chars:
            return text
        budget -= len(text) - max_chars
        if budget < 0:
            break
    return None


def input_messages(messages: object) -> list[dict[str, Any]]:
    """OpenAI-style chat messages in the GenAI conventions' input message shape."""
    if not isinstance(messages, list):
        return []
    return [_message(m, default_role="user") for m in messages if isinstance(m, Mapping)]


def output_messages(outputs: Mapping[str, object]) -> list[dict[str, Any]]:
    choices = outputs.get("choices")
    if not isinstance(choices, list):
        return []
    converted = []
    for choice in choices:
        if not isinstance(choice, Mapping):
            continue
        message = choice.get("message")
        entry = _message(message if isinstance(message, Mapping) else {}, "assistant")
        reason = choice.get("finish_reason")
        entry["finish_reason"] = reason if isinstance(reason, str) else UNKNOWN_FINISH_REASON
        converted.append(entry)
    return converted


def _message(message: Mapping[str, object], default_role: str) -> dict[str, Any]:
    role = message.get("role")
    role = role if isinstance(role, str) and role else default_role
    if role == "tool":
        # A tool's reply to the model: the conventions' tool_call_response part.
        reply = {
            "type": "tool_call_response",
            "id": _text_or_none(message.get("tool_call_id")),
            "response": message.get("content"),
        }
        return {"role": role, "parts": [reply]}
    parts: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    content = message.get("content")
    if content is not None:
        parts.append({"type": "text", "content": as_text(content)})
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        parts.extend(_tool_call(call) for call in tool_calls if isinstance(call, Mapping))
    return {"role": role, "parts": parts}


def _tool_call(call: Mapping[str, object]) -> dict[str, Any]:
    function = call.get("function")
    function = function if isinstance(function, Mapping) else {}
    return {
        "type": "tool_call",
        "id": _text_or_none(call.get("id")),
        "name": _text_or_none(function.get("name")) or "",
        "arguments": function.get("arguments"),
    }


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


# --- fitting ---------------------------------------------------------------------------


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _strings(value: object, keep: frozenset[str]) -> list[str]:
    found: list[str] = []

    def collect(text: str) -> str:
        found.append(text)
        return text

    _map_strings(value, collect, keep)
    return found


def _map_strings(value: object, change: Callable[[str], Any], keep: frozenset[str]) -> Any:
    """The same structure with every string value passed through `change`, except dict
    keys and the values of keys in `keep`."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, Mapping):
        return {
            str(key): item
            if key in keep and isinstance(item, str)
            else _map_strings(item, change, keep)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_map_strings(item, change, keep) for item in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return change(str(value))


def _cost(text: str) -> int:
    """Characters a string adds to the JSON text, quotes left out."""
    return len(_dumps(text)) - 2


def _fair_cap(costs: list[int], budget: int) -> int:
    """The largest cap c with sum(min(cost, c)) <= budget: short strings stay whole."""
    remaining, left = budget, len(costs)
    for cost in sorted(costs):
        share = remaining // left if left else remaining
        if cost > share:
            return share
        remaining -= cost
        left -= 1
    return max(costs, default=0)


def _cutter(cap: int) -> Callable[[str], str]:
    return lambda text: _cut_to_cost(text, cap)


def _cut_to_cost(text: str, cap: int) -> str:
    if _cost(text) <= cap:
        return text
    keep = min(len(text), cap)
    while keep > 0:
        cut = truncate(text, keep)
        if _cost(cut) <= cap:
            return cut
        keep -= max(1, (_cost(cut) - cap) // 2)
    return ""
