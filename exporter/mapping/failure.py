"""Whether a step or run failed, and how to describe it (docs/design.md, "Errors").

A step fails when its status says so, when it carries a non-empty ``error``, or when
its output reports ``successful: false`` (code and integration nodes report failures
there while the step itself says ``completed``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from exporter.mapping.status import status_row

SUCCESSFUL_FALSE: Final = "successful_false"
FALLBACK_ERROR_TYPE: Final = "_OTHER"  # the semantic conventions' value for "unknown"

# An exception class name, as Python and most runtimes spell them.
_EXCEPTION_NAME = r"[A-Za-z_][\w.]*(?:Error|Exception|Timeout|Failure|Exit)"
# "RateLimitError: upstream returned 429" -> "RateLimitError"
_TYPED_MESSAGE = re.compile(rf"^({_EXCEPTION_NAME})\s*:")
_TRACEBACK_HEAD: Final = "Traceback (most recent call last)"
_MESSAGE_KEYS: Final = ("message", "msg", "detail", "error", "description")
_TYPE_KEYS: Final = ("type", "code", "error_type", "name", "kind")


@dataclass(frozen=True)
class Failure:
    message: str
    error_type: str
    stacktrace: str | None = None

    @property
    def exception_type(self) -> str | None:
        """The exception's type name, when the error names one."""
        return self.error_type if re.fullmatch(_EXCEPTION_NAME, self.error_type) else None

    @property
    def is_exception(self) -> bool:
        """An `exception` event is for exceptions only (semantic conventions): an error
        code such as `channel_not_found`, or a status such as `failed`, is `error.type`
        on the span and nothing more."""
        return self.exception_type is not None or self.stacktrace is not None


@dataclass(frozen=True)
class _ErrorText:
    message: str
    own_type: str | None
    stacktrace: str | None = None


def step_failure(
    status: str | None, error: object, outputs: object, *, subject: str
) -> Failure | None:
    """The failure of one step, or None when it succeeded (or was merely skipped).

    `subject` names the step in messages we have to write ourselves ("slack", "model").
    """
    own = describe_error(error)
    reported = _output_failure(outputs)
    flagged_false = reported is not None and reported[0]
    output_error = reported[1] if reported is not None else None
    failed_status = status_row(status).failed
    if not (failed_status or own or flagged_false or output_error):
        return None
    detail = own or output_error
    if detail is not None:
        message = detail.message
    elif flagged_false:
        message = f"{subject} reported successful: false"
    else:
        message = f"step {(status or '').strip()}"
    error_type = _error_type(detail, status, failed_status, flagged_false)
    return Failure(message, error_type, detail.stacktrace if detail else None)


def run_failure(status: str | None, error: object) -> Failure | None:
    own = describe_error(error)
    failed_status = status_row(status).failed
    if not (failed_status or own):
        return None
    message = own.message if own else f"run {(status or '').strip()}"
    error_type = _error_type(own, status, failed_status, False)
    return Failure(message, error_type, own.stacktrace if own else None)


def describe_error(error: object) -> _ErrorText | None:
    """Message and own type of an `error` field: null, a string, or an object."""
    if error is None or error is False:
        return None
    if isinstance(error, str):
        return _error_text(error)
    if isinstance(error, Mapping):
        if not error:
            return None
        message = _first_text(error, _MESSAGE_KEYS) or _compact_json(error)
        return _ErrorText(message, _first_text(error, _TYPE_KEYS))
    if isinstance(error, list) and not error:
        return None
    return _ErrorText(_compact_json(error), None)


def _error_text(text: str) -> _ErrorText | None:
    text = text.strip()
    if not text:
        return None
    if text.startswith(_TRACEBACK_HEAD):
        # A Python traceback (code nodes): its last line says what happened.
        last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), text)
        typed = _TYPED_MESSAGE.match(last)
        return _ErrorText(last, typed.group(1) if typed else None, stacktrace=text)
    typed = _TYPED_MESSAGE.match(text)
    return _ErrorText(text, typed.group(1) if typed else None)


def _output_failure(outputs: object) -> tuple[bool, _ErrorText | None] | None:
    """(said successful: false, its error) from the outputs, or None when they say nothing.

    Integration steps nest their report in ``outputs.result``; code steps report at the
    top level and put the Python error in ``data.error``.
    """
    if not isinstance(outputs, Mapping):
        return None
    for report in (outputs.get("result"), outputs):
        if not isinstance(report, Mapping):
            continue
        flag = _success_flag(report)
        error = describe_error(report.get("error"))
        if flag is False and error is None:
            data = report.get("data")
            if isinstance(data, Mapping):
                error = describe_error(data.get("error"))
        if flag is True:
            return None  # the report says it succeeded; an error text there is a warning
        if flag is not None or error is not None:
            return (flag is False, error)
    return None


def _success_flag(report: Mapping[str, object]) -> bool | None:
    # Orchestra writes both spellings; the misspelt one is the older.
    for key in ("successful", "successfull"):
        value = report.get(key)
        if isinstance(value, bool):
            return value
    return None


def _error_type(
    detail: _ErrorText | None, status: str | None, failed_status: bool, flagged_false: bool
) -> str:
    if detail is not None and detail.own_type:
        return detail.own_type
    if failed_status and status:
        return status.strip().casefold()
    if flagged_false:
        return SUCCESSFUL_FALSE
    return FALLBACK_ERROR_TYPE


def _first_text(mapping: Mapping[str, object], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return None


def _compact_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
