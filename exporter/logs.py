"""Logging to stderr, as text for terminals or one JSON object per line for machines.

A redaction filter replaces the API key wherever it might appear, as a last line of
defence: no code path is meant to log it, and this makes sure none does. Log text comes
partly from the API (step ids, error details), so both formats escape control and
format characters: a text record is one line (a traceback follows on indented lines),
and a JSON line holds no raw C1, DEL or bidi character.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Final

from exporter.textsafe import escape_control, escape_json_text

REDACTED: Final = "[REDACTED]"
_STANDARD_FIELDS: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message"}
# Libraries whose debug output carries raw request headers (httpcore's errors quote an
# illegal header value, hpack logs the headers it encodes): never below INFO.
_HEADER_LOGGERS: Final = ("httpcore", "hpack", "h2")


@dataclass
class Condition:
    """A persistent condition, logged when it starts and when it ends, not at every poll
    (a rejected key, an unusable state file, polls falling behind their tick)."""

    log: logging.Logger  # whose lines they are
    active: bool = False

    def update(
        self,
        active: bool,
        *,
        started: str,
        ended: str,
        level: int = logging.WARNING,
        ended_level: int = logging.WARNING,
    ) -> None:
        if active and not self.active:
            self.log.log(level, "%s", started)
        elif self.active and not active:
            self.log.log(ended_level, "%s", ended)
        self.active = active


def secret_forms(secret: str) -> set[str]:
    """The secret as it may show up in a log: raw, and escaped by repr() or JSON."""
    raw = secret.encode("utf-8", "surrogateescape")
    return {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], repr(raw)[2:-1]}


class SecretFilter(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 4:
            forms = set(self._secrets) | secret_forms(secret)
            # Longest first: an escaped form contains the raw text's pieces.
            self._secrets = sorted(forms, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        record.msg, record.args = self.redact(record.getMessage()), None
        if record.exc_info:
            # The formatted traceback is kept as text, so it can be redacted.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD_FIELDS and isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


class TextFormatter(logging.Formatter):
    """`time LEVEL message` on one line; a traceback on the lines below, indented.

    So every line that starts at column 0 is a record of ours: text from the API can
    neither break a record into two lines nor forge a new one.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        for block in _details(self, record):
            for line in block.split("\n"):
                text += "\n    " + escape_control(line)
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        details = _details(self, record)
        if details:
            document["exception"] = "\n".join(details)
        for key, value in vars(record).items():
            if key not in _STANDARD_FIELDS and not key.startswith("_"):
                document[key] = value
        return escape_json_text(json.dumps(document, default=str, ensure_ascii=False))


def _details(formatter: logging.Formatter, record: logging.LogRecord) -> list[str]:
    """The traceback and stack of a record, as text (the secret filter may have set it)."""
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    details = [record.exc_text] if record.exc_text else []
    if record.stack_info:
        details.append(formatter.formatStack(record.stack_info))
    return details


_secret_filter = SecretFilter([])


def redact_also(secret: str) -> None:
    """A secret learnt after start-up (a rotated key): redacted from now on."""
    _secret_filter.add(secret)


def configure_logging(level: str, fmt: str, secrets: list[str] | None = None) -> None:
    global _secret_filter
    _secret_filter = SecretFilter(secrets or [])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_secret_filter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter (per-request lines, exporter retry warnings) stays below our own
    # poll summaries unless the user asked for debug.
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for name in ("httpx", "grpc"):
        logging.getLogger(name).setLevel(quiet)
    # APScheduler warns at every tick a slow poll skips; the daemon counts those ticks and
    # says when polls fall behind and catch up (scheduler.Overruns) instead.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if level == "debug" else logging.ERROR)
    for name in _HEADER_LOGGERS:
        logging.getLogger(name).setLevel(max(quiet, logging.INFO))
    # The OTLP exporters warn on every retry; our poll summary already reports the
    # outcome of each export, once.
    exporter_level = logging.DEBUG if level == "debug" else logging.ERROR
    logging.getLogger("opentelemetry.exporter").setLevel(exporter_level)
