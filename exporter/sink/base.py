"""What every sink offers: send one framed OTLP request and say plainly whether it arrived."""

from __future__ import annotations

from typing import Protocol

from exporter.sink.encoding import Signal


class SpanSink(Protocol):
    name: str

    def send(self, signal: Signal, request: bytes, count: int) -> bool:
        """Deliver a framed request of `count` records; True only when it was confirmed."""
        ...

    def shutdown(self) -> None: ...


class TeeSink:
    """A primary sink whose confirmation counts, plus observers shown what it delivered."""

    def __init__(self, primary: SpanSink, *observers: SpanSink) -> None:
        self.primary = primary
        self.observers = observers
        self.name = primary.name

    def send(self, signal: Signal, request: bytes, count: int) -> bool:
        delivered = self.primary.send(signal, request, count)
        if delivered:
            for observer in self.observers:
                observer.send(signal, request, count)
        return delivered

    def shutdown(self) -> None:
        self.primary.shutdown()
        for observer in self.observers:
            observer.shutdown()
