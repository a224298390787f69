"""The settings of the GenAI conventions work: provider, span names, the capture alias,
the traceparent input and mode (docs/design.md, "Settings")."""

from __future__ import annotations

import pytest

from exporter.app import mapping_options
from exporter.config import load_settings
from exporter.errors import ConfigError

KEY = {"ORCHESTRA_API_KEY": "k-123456"}


def test_defaults() -> None:
    options = mapping_options(load_settings(environ=KEY))
    assert options.genai_provider == "arcee"
    assert options.span_names == "node"
    assert (options.traceparent_input, options.traceparent_mode) == ("traceparent", "link")
    assert options.capture_content is False
    assert options.scope.schema_url == "https://opentelemetry.io/schemas/1.41.1"


def test_every_setting_reaches_the_mapping() -> None:
    options = mapping_options(
        load_settings(
            environ={
                **KEY,
                "ORCHESTRA_GENAI_PROVIDER": "openai",
                "ORCHESTRA_SPAN_NAMES": "SemConv",
                "ORCHESTRA_TRACEPARENT_INPUT": "caller",
                "ORCHESTRA_TRACEPARENT_MODE": "parent",
            }
        )
    )
    assert options.genai_provider == "openai"
    assert options.span_names == "semconv"
    assert (options.traceparent_input, options.traceparent_mode) == ("caller", "parent")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}, True),
        ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "false"}, False),
        # ORCHESTRA_CAPTURE_CONTENT wins over the alias, both ways.
        (
            {
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
                "ORCHESTRA_CAPTURE_CONTENT": "false",
            },
            False,
        ),
        (
            {
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "false",
                "ORCHESTRA_CAPTURE_CONTENT": "true",
            },
            True,
        ),
    ],
)
def test_capture_alias(environ: dict[str, str], expected: bool) -> None:
    assert load_settings(environ={**KEY, **environ}).capture_content is expected


def test_bad_values_are_named_with_every_other_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            environ={
                **KEY,
                "ORCHESTRA_SPAN_NAMES": "otel",
                "ORCHESTRA_TRACEPARENT_MODE": "child",
                "ORCHESTRA_GENAI_PROVIDER": "",
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "maybe",
            }
        )
    text = "\n".join(caught.value.problems)
    assert "ORCHESTRA_SPAN_NAMES" in text and "ORCHESTRA_TRACEPARENT_MODE" in text
    assert "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT" in text
    assert len(caught.value.problems) == 3  # an empty provider is unset: the default holds
