"""Logging to stderr, as text for terminals or one JSON object per line for machines.

A redaction filter replaces the API key wherever it might appear, as a last line of
defence: no code path is meant to log it, and this makes sure none does.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Final

REDACTED: Final = "[REDACTED]"
_STANDARD_FIELDS: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message"}


class SecretFilter(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        for secret in self._secrets:
            message = message.replace(secret, REDACTED)
        record.msg, record.args = message, None
        return True


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
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD_FIELDS and not key.startswith("_"):
                document[key] = value
        return json.dumps(document, default=str, ensure_ascii=False)


def configure_logging(level: str, fmt: str, secrets: list[str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S")
        )
    handler.addFilter(SecretFilter(secrets or []))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter (per-request lines, exporter retry warnings) stays below our own
    # poll summaries unless the user asked for debug.
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for name in ("httpx", "httpcore", "apscheduler", "grpc"):
        logging.getLogger(name).setLevel(quiet)
    # The OTLP exporters warn on every retry; our poll summary already reports the
    # outcome of each export, once.
    exporter_level = logging.DEBUG if level == "debug" else logging.ERROR
    logging.getLogger("opentelemetry.exporter").setLevel(exporter_level)
