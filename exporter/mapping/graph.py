"""The workflow graph as the mapping needs it: node types and upstream nodes.

Two documented sources: ``graph`` from GET /workflows (typed nodes, ``[src, dst]``
edges with START/END sentinels) and the Mermaid text of GET .../diagram (edges only).
Both are parsed leniently: a graph we cannot read is an empty graph, never an error,
because links and node types can still be inferred from the step records.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

SENTINELS: Final = frozenset({"START", "END"})
# `a --> b`, dotted `a -.-> b`, thick `a ==> b`, and labelled edges, which Mermaid writes
# as `a -->|yes| b`, `a -- yes --> b` or `a -. yes .-> b` (how branches may be drawn).
_NODE = r"([A-Za-z0-9_.-]+)"
_MERMAID_EDGE = re.compile(
    rf"^\s*{_NODE}\s*"
    r"(?:-{2,}>|-\.+->|={2,}>|--\s[^|>]*?\s-{2,}>|-\.\s[^|>]*?\s\.->|==\s[^|>]*?\s={2,}>)"
    rf"\s*(?:\|[^|]*\|\s*)?{_NODE}\s*;?\s*$"
)


@dataclass(frozen=True)
class WorkflowGraph:
    node_types: Mapping[str, str] = field(default_factory=dict)
    upstream: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def knows(self, node_id: str) -> bool:
        return node_id in self.node_types or node_id in self.upstream


EMPTY_GRAPH: Final = WorkflowGraph()


def graph_from_api(graph: object) -> WorkflowGraph:
    if not isinstance(graph, Mapping):
        return EMPTY_GRAPH
    return WorkflowGraph(
        node_types=_node_types(graph.get("nodes")),
        upstream=_upstream_from_edges(_edge_pairs(graph.get("edges"))),
    )


def graph_from_mermaid(diagram: object) -> WorkflowGraph:
    if not isinstance(diagram, str):
        return EMPTY_GRAPH
    pairs = [
        (match.group(1), match.group(2))
        for match in map(_MERMAID_EDGE.match, diagram.splitlines())
        if match is not None
    ]
    return WorkflowGraph(upstream=_upstream_from_edges(pairs))


def _node_types(nodes: object) -> dict[str, str]:
    if not isinstance(nodes, Mapping):
        return {}
    types: dict[str, str] = {}
    for node_id, node in nodes.items():
        node_type = node.get("type") if isinstance(node, Mapping) else None
        if isinstance(node_id, str) and isinstance(node_type, str) and node_type:
            types[node_id] = node_type
    return types


def _edge_pairs(edges: object) -> list[tuple[str, str]]:
    if not isinstance(edges, list):
        return []
    pairs = []
    for edge in edges:
        if isinstance(edge, Mapping):  # tolerate {"source":..,"target":..} should it appear
            edge = [edge.get("source"), edge.get("target")]
        if isinstance(edge, (list, tuple)) and len(edge) >= 2:
            source, target = edge[0], edge[1]
            if isinstance(source, str) and isinstance(target, str):
                pairs.append((source, target))
    return pairs


def _upstream_from_edges(pairs: list[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    upstream: dict[str, list[str]] = {}
    for source, target in pairs:
        if target in SENTINELS:
            continue
        parents = upstream.setdefault(target, [])
        if source not in SENTINELS and source not in parents:
            parents.append(source)
    return {node: tuple(parents) for node, parents in upstream.items()}
