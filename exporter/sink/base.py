"""What every span sink offers: export a batch and say plainly whether it arrived."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from opentelemetry.sdk.trace import ReadableSpan


class SpanSink(Protocol):
    name: str

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        """Deliver the spans; True only when the receiving end confirmed them."""
        ...

    def shutdown(self) -> None: ...


class TeeSink:
    """A primary sink whose confirmation counts, plus observers shown what it delivered."""

    def __init__(self, primary: SpanSink, *observers: SpanSink) -> None:
        self.primary = primary
        self.observers = observers
        self.name = primary.name

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        delivered = self.primary.export(spans)
        if delivered:
            for observer in self.observers:
                observer.export(spans)
        return delivered

    def shutdown(self) -> None:
        self.primary.shutdown()
        for observer in self.observers:
            observer.shutdown()
