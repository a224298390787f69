"""What a workflow is: its nodes, its graph, and what each kind of node records as a step.

Every shape here is copied from the documented payloads (tests/shared/fixtures and the
steps example; docs/orchestra-api.md, "Records"): field names, their order and their
types. Where the docs show nothing (code-node step inputs, failure payloads) the choice
is marked as a guess.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any, ClassVar

JsonDict = dict[str, Any]

START = "START"
END = "END"
SENTINELS = frozenset({START, END})

US_PER_S = 1_000_000
# The docs print ids masked like this; real ones are long numbers. Keeping the masked form
# makes the emulator's records indistinguishable from the documented examples.
MASKED_USER_ID = "2*****************1"
MASKED_ORG_ID = "2*****************7"
# The organisation folder seen in the documented S3 key of a workflow definition.
_STORAGE_FOLDER = "288772212935168457"
_BUCKET = "orchestra-workflow-dev2025010618392776890000000a"
# 2025-03-12 00:59:55.465508+00:00, the created_at of the documented workflow example.
DOCUMENTED_CREATED_AT = 1741741195.465508

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# ---------------------------------------------------------------------------- time


def seconds_to_us(seconds: float) -> int:
    return round(seconds * US_PER_S)


def _datetime_from_us(us: int) -> datetime:
    # Integer microseconds, not float seconds: the last digits of the timestamps stay exact.
    return _EPOCH + timedelta(microseconds=us)


def format_run_time(us: int) -> str:
    """Timestamp as runs and steps carry it: `2025-03-13T02:41:15.144470Z`."""
    return _datetime_from_us(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_workflow_time(us: int) -> str:
    """Timestamp as workflows carry it: `2025-03-12 00:59:55.465508+00:00`."""
    return _datetime_from_us(us).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")


def parse_time_us(text: str) -> int:
    """Either documented timestamp form -> epoch microseconds (naive means UTC)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def random_uuid(rng: random.Random) -> str:
    """A UUID4 string drawn from `rng`, so ids repeat exactly for the same seed."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _random_hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


# ---------------------------------------------------------------------------- templates

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")


def render_template(value: Any, context: Mapping[str, Any]) -> Any:
    """Fill `{{name.path}}` placeholders in strings anywhere inside `value`.

    Steps record their inputs already resolved (the documented model step shows the run's
    prompt, not `{{prompt}}`), so the emulator resolves them the same way.
    """
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda match: _as_text(_lookup(match.group(1), context)), value)
    if isinstance(value, list | tuple):
        return [render_template(item, context) for item in value]
    if isinstance(value, Mapping):
        return {key: render_template(item, context) for key, item in value.items()}
    return value


def _lookup(path: str, context: Mapping[str, Any]) -> Any:
    current: Any = context
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return ""  # Orchestra's behaviour for a missing variable is undocumented
        current = current[part]
    return current


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _estimate_tokens(text: str) -> int:
    # Roughly what a BPE tokenizer gives for English prose.
    return max(1, round(len(text.split()) * 1.3))


# ---------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class Failure:
    """How a step fails when a run is told to fail at its node.

    A hard failure gives the step the failure status and `error=message` and stops the run.
    A soft one (integration and code nodes only) keeps status `completed` and reports
    `successful: false` with the message inside the outputs; the run goes on.
    """

    message: str
    soft: bool = False


@dataclass(frozen=True, kw_only=True)
class Node(ABC):
    """One node of a workflow graph and the step records it produces."""

    kind: ClassVar[str]

    node_id: str
    description: str = ""
    failure: Failure | None = None  # None: fails with `default_failure()` when told to
    weight: float = 1.0  # share of a run's duration this node takes

    @abstractmethod
    def metadata(self) -> JsonDict:
        """`graph.nodes[node_id].metadata` of the workflow record."""

    @abstractmethod
    def step_inputs(self, run_id: str, input_data: JsonDict) -> JsonDict:
        """The step's `inputs`: the node config with templates resolved."""

    @abstractmethod
    def step_outputs(
        self, rng: random.Random, inputs: JsonDict, start_us: int, end_us: int
    ) -> JsonDict:
        """The step's raw `outputs` when it succeeds."""

    @abstractmethod
    def publish(self, outputs: JsonDict) -> Any:
        """What the run's `all_outputs` and downstream `input_data` hold under the node id."""

    @abstractmethod
    def default_failure(self) -> Failure: ...

    def soft_failure_outputs(self, rng: random.Random, message: str) -> JsonDict | None:
        """Outputs reporting `successful: false`; None when this kind cannot fail softly."""
        return None

    def route(self, outputs: JsonDict) -> str | None:
        """The one child that runs next, or None when every child runs."""
        return None

    @property
    def title(self) -> str:
        return self.node_id.replace("_", " ").title()


_CONFIDENCE_INFO: JsonDict = {
    "error": "No logprobs available - model/provider may not support confidence calculation",
    "confidence_score": None,
    "mean_entropy": None,
    "total_entropy": None,
}


@dataclass(frozen=True, kw_only=True)
class ModelNode(Node):
    """A chat call to an LLM; its step outputs are an OpenAI-style `chat.completion`."""

    kind: ClassVar[str] = "model"

    description: str = "Model node"
    weight: float = 3.0
    model: str = "virtuoso-medium"
    messages: tuple[Mapping[str, str], ...] = ({"role": "user", "content": "{{prompt}}"},)
    replies: tuple[str, ...] = ("Hello there! How can I assist you today?",)  # templates allowed
    max_tokens: int = 8192
    temperature: float = 0.7
    top_p: float = 1
    top_k: int = 50
    repetition_penalty: float = 0

    def __post_init__(self) -> None:
        if not self.replies:
            raise ValueError(f"model node {self.node_id!r} needs at least one reply")

    def _parameters(self) -> JsonDict:
        return {
            "model": self.model,
            "stream": False,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
        }

    def metadata(self) -> JsonDict:
        return {
            "description": self.description,
            **self._parameters(),
            "messages": [dict(message) for message in self.messages],
            "output_mapping": {self.node_id: "choices[0].message.content"},
        }

    def step_inputs(self, run_id: str, input_data: JsonDict) -> JsonDict:
        return {
            **self._parameters(),
            "messages": render_template(self.messages, input_data),
            "run_id": run_id,
            "input_data": input_data,
        }

    def step_outputs(
        self, rng: random.Random, inputs: JsonDict, start_us: int, end_us: int
    ) -> JsonDict:
        content = render_template(rng.choice(self.replies), inputs["input_data"])
        prompt = " ".join(str(message.get("content", "")) for message in inputs["messages"])
        prompt_tokens = _estimate_tokens(prompt) + 8  # the chat template's own tokens
        completion_tokens = _estimate_tokens(content)
        return {
            "id": f"chatcmpl-{_random_hex(rng, 32)}",
            "object": "chat.completion",
            "created": (start_us + end_us) // 2 // US_PER_S,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "reasoning_content": None,
                        "content": content,
                        "tool_calls": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                    "stop_reason": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "completion_tokens": completion_tokens,
                "prompt_tokens_details": None,
            },
            "prompt_logprobs": None,
            "confidence_info": dict(_CONFIDENCE_INFO),
        }

    def publish(self, outputs: JsonDict) -> Any:
        return outputs["choices"][0]["message"]["content"]

    def default_failure(self) -> Failure:
        return Failure("RateLimitError: upstream model returned 429")


AppReply = Callable[[random.Random, int], JsonDict]


def default_app_reply(app_name: str, rng: random.Random, end_us: int) -> JsonDict:
    """What the app itself answers, shaped after its real API where the docs show one."""
    if app_name == "slack":
        channel = "C0" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(9))
        return {
            "ok": True,
            "channel": channel,
            "ts": f"{end_us // US_PER_S}.{rng.randrange(10**6):06d}",
        }
    if app_name == "gmail":
        message_id = _random_hex(rng, 16)
        return {"id": message_id, "threadId": message_id, "labelIds": ["SENT"]}
    return {"ok": True, "id": random_uuid(rng)}


@dataclass(frozen=True, kw_only=True)
class IntegrationNode(Node):
    """A call to a connected app (Slack, Gmail, ...): a tool call, in GenAI terms."""

    kind: ClassVar[str] = "integration"

    app_name: str
    action: str
    input_mapping: Mapping[str, Any] = field(default_factory=dict)  # templates allowed
    reply: AppReply | None = None  # None: `default_app_reply` for the app
    entity_id: str = "a***********m"
    workspace_type: str = "local"

    def metadata(self) -> JsonDict:
        # The graph carries the action arguments as `tool_config` (a guess of the fixture's
        # author); the step record calls the resolved ones `input_mapping`.
        return {
            "description": self.description,
            "app_name": self.app_name,
            "action": self.action,
            "tool_config": dict(self.input_mapping),
        }

    def step_inputs(self, run_id: str, input_data: JsonDict) -> JsonDict:
        return {
            "app_name": self.app_name,
            "action": self.action,
            "entity_id": self.entity_id,
            "workspace_type": self.workspace_type,
            "input_mapping": render_template(self.input_mapping, input_data),
            "tool_config": {"tool_type": self.app_name},
            "run_id": run_id,
            "input_data": input_data,
        }

    def step_outputs(
        self, rng: random.Random, inputs: JsonDict, start_us: int, end_us: int
    ) -> JsonDict:
        if self.reply is None:
            data = default_app_reply(self.app_name, rng, end_us)
        else:
            data = self.reply(rng, end_us)
        return self._result(data=data, error=None, successful=True)

    def soft_failure_outputs(self, rng: random.Random, message: str) -> JsonDict | None:
        return self._result(data={}, error=message, successful=False)

    @staticmethod
    def _result(*, data: JsonDict, error: str | None, successful: bool) -> JsonDict:
        # Both spellings of the flag appear in the documented examples.
        return {
            "result": {
                "data": data,
                "error": error,
                "successfull": successful,
                "successful": successful,
            }
        }

    def publish(self, outputs: JsonDict) -> Any:
        result = outputs["result"]
        return {
            "successful": result["successful"],
            "data": result["data"],
            "error": result["error"],
        }

    def default_failure(self) -> Failure:
        return Failure(f"IntegrationError: {self.app_name} action {self.action} returned 502")


CodeResults = Callable[[random.Random, Mapping[str, Any]], Any]


@dataclass(frozen=True, kw_only=True)
class CodeNode(Node):
    """Python run in a sandbox; outputs follow the documented code-node object."""

    kind: ClassVar[str] = "code"

    weight: float = 0.6
    code: str = "def main(input_data):\n    return input_data\n"
    results: CodeResults | None = None  # the code's return value from (rng, input_data)
    stdout: str = ""
    # A router's results are a dict whose "next" names the one child that runs: the
    # emulator's stand-in for a conditional node, whose step shape is undocumented.
    router: bool = False

    def metadata(self) -> JsonDict:
        return {"description": self.description, "code": self.code}

    def step_inputs(self, run_id: str, input_data: JsonDict) -> JsonDict:
        # Undocumented; this mirrors the other kinds: config, then run_id and input_data.
        return {"code": self.code, "run_id": run_id, "input_data": input_data}

    def step_outputs(
        self, rng: random.Random, inputs: JsonDict, start_us: int, end_us: int
    ) -> JsonDict:
        results = None if self.results is None else self.results(rng, inputs["input_data"])
        data = self._data(rng, results=results, stdout=self.stdout, stderr="", error="")
        return {"data": data, "error": None, "successfull": True, "successful": True}

    def soft_failure_outputs(self, rng: random.Random, message: str) -> JsonDict | None:
        traceback = (
            f'Traceback (most recent call last):\n  File "main.py", line 1, in main\n{message}\n'
        )
        data = self._data(rng, results=None, stdout="", stderr=traceback, error=message)
        return {"data": data, "error": message, "successfull": False, "successful": False}

    @staticmethod
    def _data(
        rng: random.Random, *, results: Any, stdout: str, stderr: str, error: str
    ) -> JsonDict:
        return {
            "results": results,
            "stdout": stdout,
            "stderr": stderr,
            "error": error,
            "sandbox_id": f"sandbox-{rng.randint(1000, 9999)}",
        }

    def publish(self, outputs: JsonDict) -> Any:
        return outputs

    def default_failure(self) -> Failure:
        return Failure("SandboxError: process exited with code 137 (out of memory)")

    def route(self, outputs: JsonDict) -> str | None:
        if not self.router:
            return None
        results = outputs.get("data", {}).get("results")
        return str(results.get("next", "")) if isinstance(results, dict) else ""


# ---------------------------------------------------------------------------- workflows


@dataclass(frozen=True, kw_only=True)
class WorkflowSpec:
    """A workflow: typed nodes wired by `[source, target]` edges with START/END sentinels.

    Immutable and checked when made: node ids are unique and not START/END, every edge
    joins known nodes, the selected output is a node, the graph has no cycle. Its graph
    facts (parents, topological order, ancestors) are computed once. Defined by demo.py
    and tests, read from a record by `from_record`; runs.py plans runs along it and
    `record()` renders it for the API (WorkflowRecord).
    """

    workflow_id: str
    name: str
    description: str
    nodes: tuple[Node, ...]
    edges: tuple[tuple[str, str], ...]
    selected_output: str  # the node whose published output becomes the run's `outputs`
    sample_inputs: tuple[Mapping[str, Any], ...] = ({},)  # generated runs pick one
    created_at: float = DOCUMENTED_CREATED_AT
    updated_at: float | None = None
    version: str = "1"
    status: str = "active"
    public: bool = False
    user_id: str = MASKED_USER_ID
    organization_id: str = MASKED_ORG_ID

    def __post_init__(self) -> None:
        ids = [node.node_id for node in self.nodes]
        if len(set(ids)) != len(ids) or SENTINELS & set(ids):
            raise ValueError(f"{self.name}: node ids must be unique and not START/END")
        for source, target in self.edges:
            if source not in self.node_by_id and source != START:
                raise ValueError(f"{self.name}: edge from unknown node {source!r}")
            if target not in self.node_by_id and target != END:
                raise ValueError(f"{self.name}: edge to unknown node {target!r}")
        if self.selected_output not in self.node_by_id:
            raise ValueError(f"{self.name}: selected output {self.selected_output!r} is no node")
        if not self.sample_inputs:
            raise ValueError(f"{self.name}: needs at least one set of sample inputs")
        _ = self.topological_order  # raises on a cycle

    @cached_property
    def node_by_id(self) -> dict[str, Node]:
        return {node.node_id: node for node in self.nodes}

    @cached_property
    def parents(self) -> dict[str, tuple[str, ...]]:
        """Node id -> its sources, START included."""
        found: dict[str, list[str]] = {node.node_id: [] for node in self.nodes}
        for source, target in self.edges:
            if target in found:
                found[target].append(source)
        return {node_id: tuple(sources) for node_id, sources in found.items()}

    @cached_property
    def topological_order(self) -> tuple[Node, ...]:
        """Nodes so that every node follows its parents; ties keep declaration order."""
        placed: list[Node] = []
        done: set[str] = {START}
        pending = list(self.nodes)
        while pending:
            ready = [node for node in pending if set(self.parents[node.node_id]) <= done]
            if not ready:
                raise ValueError(f"{self.name}: the graph has a cycle or an unreachable node")
            placed.extend(ready)
            done.update(node.node_id for node in ready)
            pending = [node for node in pending if node.node_id not in done]
        return tuple(placed)

    @cached_property
    def ancestors(self) -> dict[str, tuple[str, ...]]:
        """Node id -> every node upstream of it, in topological order."""
        upstream: dict[str, set[str]] = {}
        for node in self.topological_order:
            found: set[str] = set()
            for parent in self.parents[node.node_id]:
                if parent != START:
                    found |= {parent} | upstream[parent]
            upstream[node.node_id] = found
        order = [node.node_id for node in self.topological_order]
        return {
            node_id: tuple(n for n in order if n in found) for node_id, found in upstream.items()
        }

    def record(self) -> JsonDict:
        """The workflow as `GET /workflows` lists it."""
        return WorkflowRecord(self).json()

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> WorkflowSpec:
        """An executable spec for a workflow record (e.g. a fixture), with generic content."""
        graph = record["graph"]
        nodes = tuple(_node_from_graph(node_id, entry) for node_id, entry in graph["nodes"].items())
        return cls(
            workflow_id=str(record["workflow_id"]),
            name=str(record.get("name") or record["workflow_id"]),
            description=str(record.get("description", "")),
            nodes=nodes,
            edges=tuple((str(source), str(target)) for source, target in graph["edges"]),
            selected_output=str(graph.get("selectedOutput") or nodes[-1].node_id),
            user_id=str(record.get("user_id", MASKED_USER_ID)),
            organization_id=str(record.get("organization_id", MASKED_ORG_ID)),
        )


class WorkflowRecord:
    """A spec as the API's workflow record: `WorkflowRecord(spec).json()`.

    Field names, order and nesting copy the documented example, down to the S3 file
    metadata and the UI canvas (`node_metadata`, a JSON string inside the JSON). Ids and
    positions there derive from the workflow id and the graph, so one spec always gives
    the same record. Used by `WorkflowSpec.record()`.
    """

    def __init__(self, spec: WorkflowSpec) -> None:
        self.spec = spec

    def json(self) -> JsonDict:
        spec = self.spec
        created_us = seconds_to_us(spec.created_at)
        updated_us = created_us if spec.updated_at is None else seconds_to_us(spec.updated_at)
        return {
            "workflow_id": spec.workflow_id,
            "user_id": spec.user_id,
            "organization_id": spec.organization_id,
            "created_at": format_workflow_time(created_us),
            "created_by": spec.user_id,
            "description": spec.description,
            "file_metadata": self._file_metadata(created_us),
            "graph": self._graph(),
            "name": spec.name,
            "status": spec.status,
            "updated_at": format_workflow_time(updated_us),
            "updated_by": spec.user_id,
            "version": spec.version,
            "public": spec.public,
        }

    def _file_metadata(self, created_us: int) -> JsonDict:
        slug = re.sub(r"[^a-z0-9]+", "_", self.spec.name.lower()).strip("_")
        stamp = _datetime_from_us(created_us).strftime("%Y%m%d_%H%M%S")
        key = f"{_STORAGE_FOLDER}/workflows/{slug}_{stamp}_{self._stable_uuid('file')}.yaml"
        return {"bucket": _BUCKET, "url": f"https://{_BUCKET}.s3.amazonaws.com/{key}", "key": key}

    def _graph(self) -> JsonDict:
        spec = self.spec
        entry = next((target for source, target in spec.edges if source == START), "")
        finish = next((source for source, target in spec.edges if target == END), "")
        return {
            "settings": {"support_multiple_edges": True},
            "input_data": {},
            "description": spec.description,
            "nodes": {
                node.node_id: {"type": node.kind, "metadata": node.metadata()}
                for node in spec.nodes
            },
            "edges": [[source, target] for source, target in spec.edges],
            "entry_point": entry,
            "finish_point": finish,
            "selectedOutput": spec.selected_output,
            # A JSON string inside the JSON, as documented.
            "node_metadata": json.dumps(self._canvas(), separators=(",", ":")),
        }

    def _canvas(self) -> JsonDict:
        """The UI canvas state: a start node, then each node placed by its depth."""
        start = {
            "id": self._stable_uuid(START),
            "type": "start",
            "data": {
                "inputData": [],
                "description": "",
                "outputData": [],
                "messages": [],
                "customName": "Start 1",
                "customLabel": "start_1",
            },
            "position": {"x": 400, "y": 250},
            "width": 260,
            "height": 102,
        }
        canvas_nodes = [start]
        depth: dict[str, int] = {START: 0}
        rows: dict[int, int] = {}
        for node in self.spec.topological_order:
            level = 1 + max(depth.get(parent, 0) for parent in self.spec.parents[node.node_id])
            depth[node.node_id] = level
            row = rows.get(level, 0)
            rows[level] = row + 1
            canvas_nodes.append(
                {
                    "id": self._stable_uuid(node.node_id),
                    "type": node.kind,
                    "data": {"customName": node.title, "customLabel": node.node_id},
                    "position": {"x": 400 + 360 * level, "y": 250 + 160 * row},
                    "width": 260,
                    "height": 102,
                }
            )
        return {"nodes": canvas_nodes}

    def _stable_uuid(self, name: str) -> str:
        seed = f"orchestra-emulator:{self.spec.workflow_id}/{name}"
        return str(uuid.uuid5(uuid.NAMESPACE_URL, seed))


def _node_from_graph(node_id: str, entry: Mapping[str, Any]) -> Node:
    metadata: Mapping[str, Any] = entry.get("metadata") or {}
    description = str(metadata.get("description", ""))
    if entry.get("type") == "model":
        return ModelNode(
            node_id=node_id,
            description=description,
            model=str(metadata.get("model", "virtuoso-medium")),
            messages=tuple(metadata.get("messages") or ()),
            max_tokens=int(metadata.get("max_tokens", 8192)),
            temperature=metadata.get("temperature", 0.7),
            top_p=metadata.get("top_p", 1),
            top_k=int(metadata.get("top_k", 50)),
            repetition_penalty=metadata.get("repetition_penalty", 0),
        )
    if entry.get("type") == "integration":
        return IntegrationNode(
            node_id=node_id,
            description=description,
            app_name=str(metadata.get("app_name", "unknown")),
            action=str(metadata.get("action", "UNKNOWN_ACTION")),
            input_mapping=dict(metadata.get("tool_config") or {}),
        )
    # Other kinds (knowledge retrieval, conditional) have no documented step shape:
    # they run as code nodes.
    return CodeNode(node_id=node_id, description=description, code=str(metadata.get("code", "")))


def mermaid_diagram(graph: Mapping[str, Any]) -> str:
    """The `graph TD` text of `GET .../diagram`, laid out like the documented example."""
    nodes: Mapping[str, Any] = graph.get("nodes") or {}
    lines = ["graph TD"]
    for node_id, entry in nodes.items():
        description = str((entry.get("metadata") or {}).get("description", ""))
        label = f"{node_id}<br/>{description}".replace('"', "#quot;")  # Mermaid's escape
        lines.append(f'    {node_id}["{label}"]')
    lines += ["    START((START))", "    END((END))"]
    # The documented example lists edges ordered by target, not topologically.
    edges = sorted(
        ((str(s), str(t)) for s, t in graph.get("edges") or ()), key=lambda e: (e[1], e[0])
    )
    lines += [f"    {source} --> {target}" for source, target in edges]
    lines += [
        f"    style {node_id} fill:#bbf,stroke:#333,stroke-width:1px,color:#fff"
        for node_id in nodes
    ]
    lines.append("    style START fill:#9f9,stroke:#333,stroke-width:2px,color:#fff")
    lines.append("    style END fill:#f99,stroke:#333,stroke-width:2px,color:#fff")
    return "\n".join(lines)
