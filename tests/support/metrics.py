"""Read a `/metrics` scrape with prometheus_client's own parsers (never by hand).

    scrape = parse(text)                      # Prometheus text or OpenMetrics
    scrape.value("orchestra_steps_total", outcome="failed")   # sum of matching samples
    scrape.samples("orchestra_steps_total")   # [Sample(name, labels, value, ..., exemplar)]

OpenMetrics (what the daemon serves when asked for it, exemplars included) is recognised
by its closing `# EOF` line; anything else is read as the classic text format.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families
from prometheus_client.samples import Sample

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
PROMETHEUS_TEXT = "text/plain"


@dataclass(frozen=True)
class Scrape:
    """One scrape, parsed: its metric families and their samples."""

    families: tuple[Metric, ...]

    def samples(self, name: str, **labels: str) -> list[Sample]:
        """Samples called `name` (as exposed, e.g. `..._total`) whose labels include `labels`."""
        return [
            sample
            for family in self.families
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples `samples(name, **labels)` finds; 0 when there are none."""
        return float(sum(sample.value for sample in self.samples(name, **labels)))


def parse(text: str) -> Scrape:
    """Parse a scrape in either exposition format."""
    is_openmetrics = text.rstrip().endswith("# EOF")
    read = openmetrics_families if is_openmetrics else text_families
    return Scrape(tuple(read(text)))
