"""exporter/mapping/failure.py: docs/design.md, "Errors" and "Statuses"."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.mapping.failure import (
    FALLBACK_ERROR_TYPE,
    SUCCESSFUL_FALSE,
    Failure,
    describe_error,
    run_failure,
    step_failure,
)

FAILING = ["failed", "error", "timeout"]
NOT_FAILING = ["completed", "cancelled", "canceled", "skipped", "running", None, "mystery"]
TRACEBACK = 'Traceback (most recent call last):\n  File "main.py", line 3\nValueError: boom'


def test_constants() -> None:
    assert SUCCESSFUL_FALSE == "successful_false"
    assert FALLBACK_ERROR_TYPE == "_OTHER"


# --- status alone -------------------------------------------------------------------


@pytest.mark.parametrize("status", NOT_FAILING)
def test_no_error_no_failure(status: str | None) -> None:
    assert step_failure(status, None, None, subject="model") is None
    assert run_failure(status, None) is None


@pytest.mark.parametrize("status", FAILING)
@pytest.mark.parametrize("spelling", [str.lower, str.upper, lambda s: f" {s.title()} "])
def test_failing_status_error_type_is_raw_status_lowercased(
    status: str, spelling: Callable[[str], str]
) -> None:
    raw = spelling(status)
    step = step_failure(raw, None, None, subject="model")
    run = run_failure(raw, None)
    assert step is not None and run is not None
    assert step.error_type == status
    assert run.error_type == status
    assert status in step.message.lower()
    assert status in run.message.lower()


@pytest.mark.parametrize("status", ["cancelled", "canceled", "skipped"])
def test_cancelled_and_skipped_are_not_failures(status: str) -> None:
    assert step_failure(status, None, {"result": {"successful": True}}, subject="x") is None
    assert run_failure(status, None) is None


# --- the error field ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "message", "error_type"),
    [
        ("boom", "boom", FALLBACK_ERROR_TYPE),
        ("  boom \n", "boom", FALLBACK_ERROR_TYPE),
        ("RateLimitError: x", "RateLimitError: x", "RateLimitError"),
        ("openai.APITimeoutError: slow", "openai.APITimeoutError: slow", "openai.APITimeoutError"),
        ("ValueError : bad", "ValueError : bad", "ValueError"),
        ("error: lowercase is not a type", "error: lowercase is not a type", FALLBACK_ERROR_TYPE),
        ({"message": "quota exceeded", "type": "QuotaError"}, "quota exceeded", "QuotaError"),
        ({"message": "not found", "code": "E404"}, "not found", "E404"),
        ({"detail": "bad input", "code": 422}, "bad input", "422"),
        ({"msg": "m"}, "m", FALLBACK_ERROR_TYPE),
        ({"code": "E1"}, '{"code": "E1"}', "E1"),
    ],
)
def test_completed_step_with_error(error: object, message: str, error_type: str) -> None:
    assert step_failure("completed", error, None, subject="model") == Failure(message, error_type)
    assert run_failure("completed", error) == Failure(message, error_type)


@pytest.mark.parametrize("status", FAILING)
def test_own_error_type_wins_over_status(status: str) -> None:
    failure = step_failure(status, "RateLimitError: x", None, subject="model")
    assert failure == Failure("RateLimitError: x", "RateLimitError")
    failure = step_failure(status, "plain words", None, subject="model")
    assert failure == Failure("plain words", status)


@pytest.mark.parametrize("status", ["cancelled", "skipped"])
def test_non_empty_error_fails_even_a_cancelled_step(status: str) -> None:
    assert step_failure(status, "boom", None, subject="x") == Failure("boom", FALLBACK_ERROR_TYPE)


@pytest.mark.parametrize("error", [None, "", "   ", {}, [], False])
def test_empty_error_is_no_failure(error: object) -> None:
    assert describe_error(error) is None
    assert step_failure("completed", error, None, subject="model") is None
    assert run_failure("completed", error) is None


def test_describe_error_keeps_message_and_type() -> None:
    described = describe_error({"message": " m ", "type": " T "})
    assert described is not None
    assert (described.message, described.own_type) == ("m", "T")
    described = describe_error("plain")
    assert described is not None
    assert (described.message, described.own_type) == ("plain", None)


def test_describe_error_of_a_list_is_json() -> None:
    described = describe_error(["a", 1])
    assert described is not None
    assert described.message == '["a", 1]'
    assert described.own_type is None


# --- outputs that report a failure ---------------------------------------------------


@pytest.mark.parametrize("flag", ["successful", "successfull"])
def test_integration_output_with_error(flag: str) -> None:
    outputs = {"result": {flag: False, "error": "channel_not_found", "data": None}}
    failure = step_failure("completed", None, outputs, subject="slack")
    assert failure == Failure("channel_not_found", SUCCESSFUL_FALSE)


def test_integration_output_typed_error_keeps_its_type() -> None:
    outputs = {"result": {"successful": False, "error": "SlackApiError: channel_not_found"}}
    failure = step_failure("completed", None, outputs, subject="slack")
    assert failure == Failure("SlackApiError: channel_not_found", "SlackApiError")


@pytest.mark.parametrize(
    "outputs",
    [
        {"result": {"successful": False}},
        {"result": {"successfull": False, "error": None}},
        {"result": {"successful": False, "error": ""}},
        {"successful": False},
    ],
)
def test_bare_successful_false_names_the_subject(outputs: object) -> None:
    failure = step_failure("completed", None, outputs, subject="slack")
    assert failure is not None
    assert failure.error_type == SUCCESSFUL_FALSE
    assert "slack" in failure.message
    assert "successful" in failure.message


def test_code_output_traceback_in_data_error() -> None:
    outputs = {"successful": False, "data": {"error": TRACEBACK, "sandbox_id": "sb-1"}}
    failure = step_failure("completed", None, outputs, subject="code")
    assert failure is not None
    # The traceback's last line is the message and names the type; the whole traceback
    # is kept as the stack trace.
    assert failure.message == "ValueError: boom"
    assert failure.error_type == "ValueError"
    assert failure.stacktrace == TRACEBACK


@pytest.mark.parametrize(
    "outputs",
    [
        {"result": {"successful": True, "error": None, "data": {"ok": True}}},
        {"result": {"successfull": True, "successful": True}},
        {"successful": True, "data": {"sandbox_id": "sb-1", "stdout": "hi"}},
        {"successful": True, "data": {"error": "ignored: the step succeeded"}},
        {"successful": "false"},  # not a boolean: not a report
        "successful: false",  # outputs as a plain string
        ["successful", False],
        None,
    ],
)
def test_successful_outputs_are_not_failures(outputs: object) -> None:
    assert step_failure("completed", None, outputs, subject="x") is None


def test_successful_spelling_wins_over_the_older_one() -> None:
    outputs = {"result": {"successful": True, "successfull": False}}
    assert step_failure("completed", None, outputs, subject="x") is None


def test_step_error_wins_over_output_error() -> None:
    outputs = {"result": {"successful": False, "error": "from output"}}
    failure = step_failure("completed", "TimeoutError: from step", outputs, subject="x")
    assert failure == Failure("TimeoutError: from step", "TimeoutError")


def test_failed_status_with_output_error_uses_status_as_type() -> None:
    outputs = {"result": {"successful": False, "error": "from output"}}
    assert step_failure("failed", None, outputs, subject="x") == Failure("from output", "failed")


def test_completed_with_non_empty_error_and_no_type_is_other() -> None:
    failure = step_failure("completed", "something went wrong", None, subject="x")
    assert failure == Failure("something went wrong", "_OTHER")


def test_documented_fixture_steps_do_not_fail(shared_dir: Path) -> None:
    steps = json.loads((shared_dir / "fixtures" / "steps-model-slack.json").read_text())
    assert steps
    for step in steps:
        subject = step["node_id"]
        assert step_failure(step["status"], step["error"], step["outputs"], subject=subject) is None
