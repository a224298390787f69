"""What a model step cost, from its tokens and the user's price table. Pure.

Prices are per 1 M tokens, in one currency, each with the moment it took effect, so a
price change does not rewrite history: a run is priced at the prices in effect when it
started (docs/design.md, "Cost"). Tokens come from the step's `outputs.usage`; the step's
`tokens` field is documented as always 0.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

PER_TOKENS: Final = 1_000_000


@dataclass(frozen=True)
class Price:
    since_ns: int
    input: float  # per 1 M input tokens
    output: float  # per 1 M output tokens
    cached_input: float | None = None  # per 1 M input tokens read from a cache


@dataclass(frozen=True)
class PriceTable:
    currency: str
    models: Mapping[str, tuple[Price, ...]]  # each sorted by since_ns
    _starts: dict[str, list[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts = {model: [p.since_ns for p in prices] for model, prices in self.models.items()}
        object.__setattr__(self, "_starts", starts)

    def price_at(self, model: str, at_ns: int) -> Price | None:
        """The model's price in effect at `at_ns`, or None (unknown model, or too early)."""
        starts = self._starts.get(model)
        if not starts:
            return None
        position = bisect_right(starts, at_ns)
        return self.models[model][position - 1] if position else None


@dataclass(frozen=True)
class Cost:
    input: float
    output: float

    @property
    def total(self) -> float:
        return self.input + self.output

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.input + other.input, self.output + other.output)


NO_COST: Final = Cost(0.0, 0.0)


def step_cost(price: Price, input_tokens: int, output_tokens: int, cached_tokens: int) -> Cost:
    """Cached input tokens are part of the input tokens; they cost the cached price."""
    cached = min(max(cached_tokens, 0), input_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    input_cost = ((input_tokens - cached) * price.input + cached * cached_price) / PER_TOKENS
    return Cost(input_cost, output_tokens * price.output / PER_TOKENS)
