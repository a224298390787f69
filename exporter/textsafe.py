"""Untrusted text (API records, error bodies) made safe for terminals and log lines.

Workflow names, step ids and error details come from the API. Printed raw, a newline in
a step id forges a log line, `ESC[2K\\r` rewrites the terminal line, and a bidi override
(U+202E) makes text read backwards. Every place where such text meets a terminal or a
text log goes through `escape_control`, which shows control and format characters
(Unicode Cc and Cf, C1 and DEL included) and line/paragraph separators (Zl, Zp) as
visible escapes and leaves every other character as it is.
"""

from __future__ import annotations

import unicodedata
from typing import Final

# Cs: a lone surrogate (JSON may carry one) cannot even be encoded to UTF-8.
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_SHORT_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def escape_control(text: str) -> str:
    """`text` with every control, format and line-separator character as an escape."""
    # Fast path: isprintable() is False for every unsafe character (and a few harmless
    # ones, such as a no-break space, which the slow path keeps).
    if text.isprintable():
        return text
    return "".join(_escape(char) if is_unsafe(char) else char for char in text)


def escape_json_text(document: str) -> str:
    """A JSON text with C1, DEL, bidi and other unsafe characters as \\u escapes.

    `json.dumps(..., ensure_ascii=False)` escapes C0 only; the rest would reach a
    terminal that shows the log raw. Escaping keeps the JSON valid and the value intact.
    """
    if document.isprintable():
        return document
    return "".join(_json_escape(char) if is_unsafe(char) else char for char in document)


def _escape(char: str) -> str:
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    # Outside the BMP JSON needs a UTF-16 surrogate pair.
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
