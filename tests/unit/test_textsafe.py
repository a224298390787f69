"""exporter/textsafe.py and the log formatters: API text cannot steer a terminal or a log.

Issue 11, finding 4: a step id holding a newline forged a log line, an error detail
holding `ESC[2K\\r` rewrote the terminal line, and `check` printed ESC, CR and NUL.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.logs import (
    REDACTED,
    JsonFormatter,
    SecretFilter,
    TextFormatter,
    configure_logging,
    redact_also,
)
from exporter.textsafe import escape_control, escape_json_text, is_unsafe

HOSTILE = {
    "newline": "a\n2026-01-01T00:00:00 INFO    forged",
    "carriage return": "ok\rFAKE",
    "erase line": "\x1b[2K\rall good",
    "nul": "name\x00tail",
    "tab": "a\tb",
    "del": "a\x7fb",
    "c1 next line": "a\x85b",
    "c1 csi": "a\x9b2Kb",
    "bidi override": "abc\u202edcba",
    "bidi isolate": "x\u2066y\u2069",
    "zero width space": "a\u200bb",
    "byte order mark": "\ufeffbom",
    "line separator": "a\u2028b",
    "paragraph separator": "a\u2029b",
    "tag character": "a\U000e0001b",
    "lone surrogate": "a\ud800b",
}


def unsafe_in(text: str) -> list[str]:
    return [f"U+{ord(c):04X}" for c in text if is_unsafe(c)]


@pytest.mark.parametrize("name", HOSTILE)
def test_every_control_and_format_character_is_escaped(name: str) -> None:
    escaped = escape_control(HOSTILE[name])
    assert unsafe_in(escaped) == [], escaped
    assert "\n" not in escaped and "\r" not in escaped and "\x1b" not in escaped
    assert escaped != HOSTILE[name]


def test_escapes_are_readable() -> None:
    assert escape_control("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert escape_control("\x1b[2K") == "\\x1b[2K"
    assert escape_control("\x00\x85\x9b") == "\\x00\\x85\\x9b"
    assert escape_control("\u202e") == "\\u202e"
    assert escape_control("\U000e0001") == "\\U000e0001"


@pytest.mark.parametrize(
    "text", ["plain", "naïve café", "日本語のワークフロー", "🙂 emoji", "no\u00a0break", ""]
)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert escape_control(text) == text
    assert escape_json_text(json.dumps(text, ensure_ascii=False)) == json.dumps(
        text, ensure_ascii=False
    )


@given(st.text())
def test_escaped_text_never_holds_an_unsafe_character(text: str) -> None:
    escaped = escape_control(text)
    assert unsafe_in(escaped) == []
    if not any(is_unsafe(c) for c in text):
        assert escaped == text


@given(st.dictionaries(st.text(), st.text() | st.integers()))
def test_json_escaping_keeps_the_value_and_drops_raw_controls(document: dict[str, object]) -> None:
    escaped = escape_json_text(json.dumps(document, ensure_ascii=False))
    assert unsafe_in(escaped) == []
    assert json.loads(escaped) == document


def test_the_categories_are_the_ones_asked_for() -> None:
    for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]:
        assert is_unsafe(chr(code)), hex(code)
    for char in "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069":
        assert unicodedata.category(char) == "Cf" and is_unsafe(char)
    assert not any(is_unsafe(c) for c in "aZ09 -_/é日🙂\u00a0")


# --------------------------------------------------------------------------- log lines


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(
        "orchestra-otel", logging.WARNING, __file__, 1, message, args, exc_info
    )


def raised(message: str) -> BaseException:
    try:
        raise ValueError(message)
    except ValueError as exc:
        return exc


@pytest.mark.parametrize("name", HOSTILE)
def test_a_text_record_is_one_line_whatever_the_api_said(name: str) -> None:
    text = TextFormatter().format(record("step %s: failed", HOSTILE[name]))
    assert "\n" not in text
    assert unsafe_in(text) == []


def test_a_traceback_follows_on_indented_lines_that_cannot_forge_a_record() -> None:
    hostile = HOSTILE["newline"] + HOSTILE["erase line"]
    text = TextFormatter().format(record("poll error: %s", hostile, exc=raised(hostile)))
    first, *rest = text.split("\n")
    assert first.endswith("poll error: a\\n2026-01-01T00:00:00 INFO    forged\\x1b[2K\\rall good")
    assert rest and rest[0] == "    Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in rest), rest
    # The exception's own line break stays a line break, but inside the indented block.
    assert "    ValueError: a" in rest
    assert "    2026-01-01T00:00:00 INFO    forged\\x1b[2K\\rall good" in rest
    assert unsafe_in(text.replace("\n", "")) == []


@pytest.mark.parametrize("name", HOSTILE)
def test_a_json_record_escapes_c1_and_bidi_too(name: str) -> None:
    hostile = HOSTILE[name]
    line = JsonFormatter().format(record("step %s", hostile, exc=raised(hostile)))
    assert "\n" not in line
    assert unsafe_in(line) == []
    document = json.loads(line)
    assert document["message"] == f"step {hostile}"
    assert hostile in document["exception"]


# --------------------------------------------------------------------------- redaction

KEY = "sk-SECRET-0123456789abcdef\n# rotated"


def test_the_key_is_redacted_in_its_repr_and_json_forms() -> None:
    redactor = SecretFilter([KEY])
    header = repr(b"Bearer " + KEY.encode())
    for message in (
        f"Illegal header value {header}",
        f"headers={[('Authorization', 'Bearer ' + KEY)]!r}",
        json.dumps({"authorization": KEY}),
        f"raw {KEY}",
    ):
        item = record("%s", message)
        redactor.filter(item)
        assert "0123456789abcdef" not in item.getMessage(), item.getMessage()
        assert REDACTED in item.getMessage()


def test_the_key_is_redacted_from_tracebacks_and_extras() -> None:
    redactor = SecretFilter([KEY])
    try:
        try:
            raise ValueError(repr(KEY))
        except ValueError as inner:
            raise RuntimeError("while sending") from inner
    except RuntimeError as exc:
        item = record("request failed", exc=exc)
    item.detail = f"key={KEY}"
    redactor.filter(item)
    for formatter in (TextFormatter(), JsonFormatter()):
        out = formatter.format(item)
        assert "0123456789abcdef" not in out, out
        assert "ValueError" in out and "RuntimeError" in out


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers: put pytest's and the levels back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("httpx", "httpcore", "hpack", "h2", "apscheduler", "grpc", "opentelemetry.exporter")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("restore_logging")
def test_a_key_learnt_later_is_redacted_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "text", ["sk-first-key-1111"])
    redact_also("sk-rotated-key-2222")
    logging.getLogger("t").warning("keys %s %s", "sk-first-key-1111", "sk-rotated-key-2222")
    err = capsys.readouterr().err
    assert "1111" not in err and "2222" not in err and err.count(REDACTED) == 2


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("level", ["debug", "info"])
def test_header_loggers_stay_above_debug(level: str) -> None:
    configure_logging(level, "text", [])
    for name in ("httpcore", "hpack", "h2"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.INFO, name
    expected = logging.DEBUG if level == "debug" else logging.WARNING
    assert logging.getLogger("httpx").getEffectiveLevel() == expected
