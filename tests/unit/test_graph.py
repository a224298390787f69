"""exporter/mapping/graph.py: workflow graphs from GET /workflows and the Mermaid diagram."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.mapping.graph import (
    EMPTY_GRAPH,
    WorkflowGraph,
    graph_from_api,
    graph_from_mermaid,
)


def _workflows(shared_dir: Path) -> dict[str, Any]:
    items = json.loads((shared_dir / "fixtures" / "workflows.json").read_text())
    return {item["name"]: item for item in items}


def test_fixture_workflow_hi(shared_dir: Path) -> None:
    graph = graph_from_api(_workflows(shared_dir)["hi"]["graph"])
    assert graph.node_types == {"model_1": "model"}
    # START -> model_1 -> END: a node with no real parents, and END never a key.
    assert graph.upstream == {"model_1": ()}
    assert graph.knows("model_1")
    assert not graph.knows("START")
    assert not graph.knows("END")


def test_fixture_workflow_joke_to_slack(shared_dir: Path) -> None:
    graph = graph_from_api(_workflows(shared_dir)["joke-to-slack"]["graph"])
    assert graph.node_types == {"model": "model", "slack_integration": "integration"}
    assert graph.upstream == {"model": (), "slack_integration": ("model",)}
    assert not graph.knows("nope")


def test_fixture_diagram(shared_dir: Path) -> None:
    diagram = json.loads((shared_dir / "fixtures" / "diagram.json").read_text())["diagram"]
    graph = graph_from_mermaid(diagram)
    assert graph.upstream == {"model": (), "slack_integration": ("model",)}
    assert graph.node_types == {}
    assert graph.knows("slack_integration")
    # style lines and node declarations are not edges
    assert "style" not in graph.upstream


def test_mermaid_and_api_agree(shared_dir: Path) -> None:
    diagram = json.loads((shared_dir / "fixtures" / "diagram.json").read_text())["diagram"]
    api = graph_from_api(_workflows(shared_dir)["joke-to-slack"]["graph"])
    assert graph_from_mermaid(diagram).upstream == api.upstream


@pytest.mark.parametrize(
    ("line", "source", "target"),
    [
        ("a --> b", "a", "b"),
        ("  a-->b  ", "a", "b"),
        ("a --->b", "a", "b"),
        ("a -->|yes| b", "a", "b"),
        ("a -->|a label with spaces| b", "a", "b"),
        ("a -.-> b", "a", "b"),
        ("a -..-> b", "a", "b"),
        ("a -.->|maybe| b", "a", "b"),
        ("node-1 --> node.2", "node-1", "node.2"),
    ],
)
def test_mermaid_edge_forms(line: str, source: str, target: str) -> None:
    graph = graph_from_mermaid(f"graph TD\n{line}\n")
    assert graph.upstream == {target: (source,)}


@pytest.mark.parametrize(
    "line",
    [
        "a -- yes --> b",
        "a -. maybe .-> b",
        "a ==> b",
        "a == sure ==> b",
        "a --> b;",
        "a -- two words --> b",
    ],
)
def test_mermaid_other_edge_forms(line: str) -> None:
    # Mermaid's text-on-link labels, thick links and statement semicolons.
    assert graph_from_mermaid(f"graph TD\n{line}\n").upstream == {"b": ("a",)}


@pytest.mark.parametrize(
    "line",
    [
        "a --- b",  # a link without an arrow is not a data flow
        "a -> b",
        "style a fill:#bbf",
        "%% a --> b",
    ],
)
def test_mermaid_lines_that_are_not_simple_edges(line: str) -> None:
    assert graph_from_mermaid(f"graph TD\n{line}\n").upstream == {}


def test_mermaid_several_parents_in_order_without_duplicates() -> None:
    diagram = "graph TD\nSTART --> a\nSTART --> b\na --> c\nb --> c\na --> c\nc --> END\n"
    graph = graph_from_mermaid(diagram)
    assert graph.upstream == {"a": (), "b": (), "c": ("a", "b")}


def test_api_several_parents_in_order_without_duplicates() -> None:
    graph = graph_from_api(
        {
            "nodes": {"a": {"type": "model"}, "b": {"type": "code"}, "c": {"type": "model"}},
            "edges": [["START", "a"], ["START", "b"], ["b", "c"], ["a", "c"], ["b", "c"]],
        }
    )
    assert graph.upstream == {"a": (), "b": (), "c": ("b", "a")}
    assert graph.node_types == {"a": "model", "b": "code", "c": "model"}


def test_api_tolerates_source_target_objects() -> None:
    graph = graph_from_api({"edges": [{"source": "a", "target": "b"}]})
    assert graph.upstream == {"b": ("a",)}


@pytest.mark.parametrize(
    "value",
    [None, [], [["a", "b"]], "graph TD", 42, True, {}, {"nodes": None, "edges": None}],
)
def test_api_garbage_is_empty(value: object) -> None:
    assert graph_from_api(value) == EMPTY_GRAPH


@pytest.mark.parametrize("value", [None, [], {"diagram": "a --> b"}, 42, b"a --> b", ""])
def test_mermaid_garbage_is_empty(value: object) -> None:
    assert graph_from_mermaid(value) == EMPTY_GRAPH


def test_api_partial_graph_keeps_what_is_valid() -> None:
    graph = graph_from_api(
        {
            "nodes": {
                "a": {"type": "model"},
                "b": "not a mapping",
                "c": {"type": 3},
                "d": {},
                "e": {"type": ""},
            },
            "edges": [
                ["a"],  # too short
                [],
                ["a", "b", "extra"],  # too long: the first two count
                "ab",
                None,
                [1, 2],
                ["START", "END"],
                ["x", None],
                ["a", "e"],
            ],
        }
    )
    assert graph.node_types == {"a": "model"}
    assert graph.upstream == {"b": ("a",), "e": ("a",)}


@pytest.mark.parametrize("nodes", [None, [], ["a"], "a", 1])
def test_api_nodes_not_a_mapping(nodes: object) -> None:
    graph = graph_from_api({"nodes": nodes, "edges": [["a", "b"]]})
    assert graph.node_types == {}
    assert graph.upstream == {"b": ("a",)}


@pytest.mark.parametrize("edges", [None, {}, "a->b", 1, {"a": "b"}])
def test_api_edges_not_a_list(edges: object) -> None:
    graph = graph_from_api({"nodes": {"a": {"type": "model"}}, "edges": edges})
    assert graph.node_types == {"a": "model"}
    assert graph.upstream == {}


def test_empty_graph_knows_nothing() -> None:
    assert WorkflowGraph() == EMPTY_GRAPH
    assert not EMPTY_GRAPH.knows("model")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["nodes", "edges", "type", "a", "START"]), children)
    ),
    max_leaves=20,
)


@given(_JSON)
def test_api_never_raises(value: object) -> None:
    graph = graph_from_api(value)
    assert isinstance(graph, WorkflowGraph)
    assert "START" not in graph.upstream and "END" not in graph.upstream


@given(st.text())
def test_mermaid_never_raises(text: str) -> None:
    graph = graph_from_mermaid(text)
    assert isinstance(graph, WorkflowGraph)
    assert "END" not in graph.upstream
