"""GenAI semantic-convention attributes of model and integration steps.

Token counts come from ``outputs.usage``: the step's own ``tokens`` field is documented
as always 0. Request parameters come from the step's inputs, which hold the node's
configuration with its templates already filled in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from exporter.mapping import attributes as attr
from exporter.mapping.content import fitted_messages, fitted_text, input_messages, output_messages

AttributeValue = str | bool | int | float | list[str]
Attributes = dict[str, AttributeValue]

_FLOAT_PARAMS: Final = (
    ("temperature", attr.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", attr.GEN_AI_REQUEST_TOP_P),
    ("top_k", attr.GEN_AI_REQUEST_TOP_K),
)


def model_attributes(
    inputs: Mapping[str, object], outputs: Mapping[str, object], provider: str
) -> Attributes:
    found: Attributes = {attr.GEN_AI_OPERATION_NAME: attr.OP_CHAT}
    _put_text(found, attr.GEN_AI_PROVIDER_NAME, provider)
    _put_text(found, attr.GEN_AI_REQUEST_MODEL, inputs.get("model"))
    for key, name in _FLOAT_PARAMS:
        number = _number(inputs.get(key))
        if number is not None:
            found[name] = float(number)
    max_tokens = _number(inputs.get("max_tokens"))
    if max_tokens is not None and float(max_tokens).is_integer():
        found[attr.GEN_AI_REQUEST_MAX_TOKENS] = int(max_tokens)
    if inputs.get("stream") is True:
        # Conditionally required only when streaming: unset means not streaming.
        found[attr.GEN_AI_REQUEST_STREAM] = True
    _put_text(found, attr.GEN_AI_RESPONSE_MODEL, outputs.get("model"))
    _put_text(found, attr.GEN_AI_RESPONSE_ID, outputs.get("id"))
    reasons = _finish_reasons(outputs.get("choices"))
    if reasons:
        found[attr.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
    found.update(_usage(outputs.get("usage")))
    return found


def model_content(
    inputs: Mapping[str, object], outputs: Mapping[str, object], max_chars: int
) -> Attributes:
    found: Attributes = {}
    messages = input_messages(inputs.get("messages"))
    if messages:
        found[attr.GEN_AI_INPUT_MESSAGES] = fitted_messages(messages, max_chars)
    replies = output_messages(outputs)
    if replies:
        found[attr.GEN_AI_OUTPUT_MESSAGES] = fitted_messages(replies, max_chars)
    return found


def integration_attributes(inputs: Mapping[str, object]) -> Attributes:
    found: Attributes = {
        attr.GEN_AI_OPERATION_NAME: attr.OP_EXECUTE_TOOL,
        attr.GEN_AI_TOOL_TYPE: "extension",
    }
    _put_text(found, attr.GEN_AI_TOOL_NAME, inputs.get("action"))
    _put_text(found, attr.INTEGRATION_APP, inputs.get("app_name"))
    return found


def integration_content(
    inputs: Mapping[str, object], outputs: object, max_chars: int
) -> Attributes:
    found: Attributes = {}
    if "input_mapping" in inputs:
        found[attr.GEN_AI_TOOL_CALL_ARGUMENTS] = fitted_text(inputs["input_mapping"], max_chars)
    if outputs is not None:
        result = outputs.get("result", outputs) if isinstance(outputs, Mapping) else outputs
        found[attr.GEN_AI_TOOL_CALL_RESULT] = fitted_text(result, max_chars)
    return found


_INPUT_SOURCES: Final = (
    attr.GEN_AI_INPUT_MESSAGES,
    attr.GEN_AI_TOOL_CALL_ARGUMENTS,
    attr.STEP_INPUT,
    attr.RUN_INPUT,
)
_OUTPUT_SOURCES: Final = (
    attr.GEN_AI_OUTPUT_MESSAGES,
    attr.GEN_AI_TOOL_CALL_RESULT,
    attr.STEP_OUTPUT,
    attr.RUN_OUTPUT,
)


def openinference_mirror(semantic: Attributes, content: Attributes, *, root: bool) -> Attributes:
    """The same facts under OpenInference names, so Phoenix shows LLM and tool spans."""
    operation = semantic.get(attr.GEN_AI_OPERATION_NAME)
    kind = {attr.OP_CHAT: attr.OI_KIND_LLM, attr.OP_EXECUTE_TOOL: attr.OI_KIND_TOOL}.get(
        str(operation), attr.OI_KIND_CHAIN
    )
    mirrored: Attributes = {attr.OI_SPAN_KIND: attr.OI_KIND_CHAIN if root else kind}
    for source, target in (
        (attr.GEN_AI_REQUEST_MODEL, attr.OI_LLM_MODEL_NAME),
        (attr.GEN_AI_PROVIDER_NAME, attr.OI_LLM_PROVIDER),
        (attr.GEN_AI_USAGE_INPUT_TOKENS, attr.OI_LLM_TOKENS_PROMPT),
        (attr.GEN_AI_USAGE_OUTPUT_TOKENS, attr.OI_LLM_TOKENS_COMPLETION),
        (attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, attr.OI_LLM_TOKENS_CACHE_READ),
        (attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, attr.OI_LLM_TOKENS_REASONING),
        (attr.COST_INPUT, attr.OI_LLM_COST_PROMPT),
        (attr.COST_OUTPUT, attr.OI_LLM_COST_COMPLETION),
        (attr.COST_TOTAL, attr.OI_LLM_COST_TOTAL),
        (attr.GEN_AI_TOOL_NAME, attr.OI_TOOL_NAME),
    ):
        if source in semantic:
            mirrored[target] = semantic[source]
    tokens = [
        semantic.get(attr.GEN_AI_USAGE_INPUT_TOKENS),
        semantic.get(attr.GEN_AI_USAGE_OUTPUT_TOKENS),
    ]
    if all(isinstance(t, int) for t in tokens):
        mirrored[attr.OI_LLM_TOKENS_TOTAL] = sum(t for t in tokens if isinstance(t, int))
    for sources, target, mime_target in (
        (_INPUT_SOURCES, attr.OI_INPUT_VALUE, attr.OI_INPUT_MIME_TYPE),
        (_OUTPUT_SOURCES, attr.OI_OUTPUT_VALUE, attr.OI_OUTPUT_MIME_TYPE),
    ):
        value = next((content[name] for name in sources if name in content), None)
        if isinstance(value, str):
            mirrored[target] = value
            # Content is JSON text unless the record held plain text (a run's output).
            is_json = value[:1] in ("{", "[")
            mirrored[mime_target] = "application/json" if is_json else "text/plain"
    return mirrored


def usage_counts(outputs: Mapping[str, object]) -> tuple[int, int, int] | None:
    """(input, output, cached input) tokens of a model step, or None without both counts."""
    usage = _usage(outputs.get("usage"))
    tokens_in = usage.get(attr.GEN_AI_USAGE_INPUT_TOKENS)
    tokens_out = usage.get(attr.GEN_AI_USAGE_OUTPUT_TOKENS)
    cached = usage.get(attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, 0)
    if isinstance(tokens_in, int) and isinstance(tokens_out, int) and isinstance(cached, int):
        return tokens_in, tokens_out, cached
    return None


# Where OpenAI-style usage reports each count: (attribute, (detail object or None, key)...).
_USAGE_FIELDS: Final = (
    (attr.GEN_AI_USAGE_INPUT_TOKENS, ((None, "prompt_tokens"), (None, "input_tokens"))),
    (attr.GEN_AI_USAGE_OUTPUT_TOKENS, ((None, "completion_tokens"), (None, "output_tokens"))),
    (
        attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
        (("prompt_tokens_details", "cached_tokens"), ("input_tokens_details", "cached_tokens")),
    ),
    (
        attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
        (
            ("completion_tokens_details", "reasoning_tokens"),
            ("output_tokens_details", "reasoning_tokens"),
        ),
    ),
)


def _usage(usage: object) -> Attributes:
    if not isinstance(usage, Mapping):
        return {}
    found: Attributes = {}
    for name, places in _USAGE_FIELDS:
        for detail, key in places:
            holder = usage.get(detail) if detail else usage
            count = _number(holder.get(key)) if isinstance(holder, Mapping) else None
            if count is not None and float(count).is_integer():
                found[name] = int(count)
                break
    return found


def _finish_reasons(choices: object) -> list[str]:
    if not isinstance(choices, list):
        return []
    return [
        choice["finish_reason"]
        for choice in choices
        if isinstance(choice, Mapping) and isinstance(choice.get("finish_reason"), str)
    ]


def _number(value: object) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and (value != value or abs(value) == float("inf")):
        return None  # NaN and infinity say nothing
    if abs(value) >= 2**63:
        return None  # OTLP integers are signed 64-bit
    return value


def _put_text(found: Attributes, name: str, value: object) -> None:
    if isinstance(value, str) and value:
        found[name] = value
