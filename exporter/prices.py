"""ORCHESTRA_PRICES: the user's price table, read and validated like the rest of the config.

```yaml
currency: USD               # one currency per table (ISO 4217 code)
note: what these prices are and when they were taken   # optional, free text
models:
  virtuoso-large:           # as gen_ai.request.model names it
    - since: 2025-01-01     # a date (UTC midnight) or a timestamp
      input: 0.75           # per 1 M input tokens
      output: 2.50          # per 1 M output tokens
      cached_input: 0.10    # optional: per 1 M input tokens read from a cache
```

Every problem is reported at once, naming the key (`prices.yaml: models.m.0.input: ...`).
Nothing here is a built-in price: without the file, no cost is computed.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from exporter.mapping.cost import Price, PriceTable

_NS = 1_000_000_000


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime | date
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)

    @field_validator("input", "output", "cached_input")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    def since_ns(self) -> int:
        moment = self.since
        if not isinstance(moment, datetime):
            moment = datetime(moment.year, moment.month, moment.day, tzinfo=timezone.utc)
        elif moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return int(moment.timestamp()) * _NS + moment.microsecond * 1000


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: str = Field(pattern=r"^[A-Z]{3}$")
    note: str | None = None
    models: dict[str, list[_Entry]] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _each_model(cls, models: dict[str, list[_Entry]]) -> dict[str, list[_Entry]]:
        for name, entries in models.items():
            if not entries:
                raise ValueError(f"{name}: needs at least one price")
            starts = [entry.since_ns() for entry in entries]
            if len(set(starts)) != len(starts):
                raise ValueError(f"{name}: two prices take effect at the same moment")
        return models


def load_price_table(path: Path, problems: list[str], label: str) -> PriceTable | None:
    """The table in `path`, or None with one line per problem added to `problems`."""
    document = _read(path, problems, label)
    if document is None:
        return None
    try:
        parsed = _PriceFile.model_validate(document)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in error["loc"]) or "document"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{label}: {path}: {where}: {message}")
        return None
    models = {
        name: tuple(
            sorted(
                (Price(e.since_ns(), e.input, e.output, e.cached_input) for e in entries),
                key=lambda price: price.since_ns,
            )
        )
        for name, entries in parsed.models.items()
    }
    return PriceTable(parsed.currency, models)


def _read(path: Path, problems: list[str], label: str) -> Any:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problems.append(f"{label}: cannot read the price file {path} ({exc.strerror or exc})")
        return None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problems.append(f"{label}: {path} is not valid YAML{where}")
        return None
    if not isinstance(document, dict):
        problems.append(f"{label}: {path} must be a mapping with currency and models")
        return None
    return document
