"""Which workflows this replica polls, with the names and graphs the spans need.

Discovery is `GET /workflows`, at start and every ORCHESTRA_DISCOVERY_INTERVAL; a workflow
whose graph lists no edges gets them from its Mermaid diagram (`GET .../diagram`), the
documented fallback. With ORCHESTRA_WORKFLOWS set, only those workflows are polled, and
they are polled even while discovery fails. With ORCHESTRA_SHARD=i/n, this replica owns
the workflows whose stable hash mod n is i (docs/design.md, "Sharding").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping

from exporter.errors import ApiAuthError, ApiError
from exporter.mapping.graph import WorkflowGraph, graph_from_api, graph_from_mermaid
from exporter.mapping.spans import WorkflowInfo
from exporter.problems import ProblemReporter
from exporter.source.client import OrchestraClient
from exporter.source.models import Workflow

log = logging.getLogger(__name__)

DiscoveryListener = Callable[[Mapping[str, WorkflowInfo]], None]


def owns_workflow(workflow_id: str, shard: tuple[int, int]) -> bool:
    """Stable across processes and machines (unlike hash(), which is salted per process)."""
    index, count = shard
    if count <= 1:
        return True
    digest = hashlib.sha256(workflow_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count == index


class WorkflowSet:
    """The workflows this replica owns, refreshed by discovery.

    Invariant: `workflows` holds only owned workflows; until the first successful
    discovery it holds the explicitly configured ones (or nothing with `all`).
    Read by the poll cycle, `backfill` and `check`; refreshed by the scheduler's
    discovery job.
    """

    def __init__(
        self,
        client: OrchestraClient,
        reporter: ProblemReporter,
        *,
        selected: tuple[str, ...] = (),
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self._client = client
        self._reporter = reporter
        self._selected = selected  # empty: every workflow the key can see
        self._shard = shard
        self.workflows: dict[str, WorkflowInfo] = {}
        self.discovered = False
        self.listeners: list[DiscoveryListener] = []

    def info(self, workflow_id: str) -> WorkflowInfo:
        return self.workflows.get(workflow_id) or WorkflowInfo(workflow_id)

    async def refresh(self) -> None:
        """Names and graphs anew; with ORCHESTRA_WORKFLOWS=all, the workflow set too."""
        listed = {wf.workflow_id: wf for wf in await self._client.list_workflows()}
        missing = [wid for wid in self._selected if wid not in listed]
        if missing:
            self._reporter.once(
                "discovery", f"workflow(s) not visible to this API key: {', '.join(missing)}"
            )
        owned = [wid for wid in self._selected or tuple(listed) if self._owns(wid)]
        infos = await asyncio.gather(*(self._describe(wid, listed.get(wid)) for wid in owned))
        self.workflows = {info.workflow_id: info for info in infos}
        self.discovered = True
        log.debug("discovery: %d workflows owned by this replica", len(self.workflows))
        for listener in self.listeners:
            listener(self.workflows)

    def use_configured(self) -> None:
        """Without discovery, explicitly configured workflows can still be polled."""
        if not self.workflows and self._selected:
            self.workflows = {wid: WorkflowInfo(wid) for wid in self._selected if self._owns(wid)}

    def _owns(self, workflow_id: str) -> bool:
        return owns_workflow(workflow_id, self._shard)

    async def _describe(self, workflow_id: str, workflow: Workflow | None) -> WorkflowInfo:
        if workflow is None:
            return WorkflowInfo(workflow_id)
        graph = graph_from_api(workflow.graph)
        if not graph.upstream:
            graph = await self._with_diagram_edges(workflow_id, graph)
        return WorkflowInfo(workflow_id, workflow.name, graph)

    async def _with_diagram_edges(self, workflow_id: str, graph: WorkflowGraph) -> WorkflowGraph:
        try:
            diagram = await self._client.get_diagram(workflow_id)
        except ApiAuthError:
            raise
        except ApiError as exc:
            # Links then come from the steps' input_data: worse, not wrong.
            log.debug("no diagram for workflow %s: %s", workflow_id, exc)
            return graph
        return WorkflowGraph(graph.node_types, graph_from_mermaid(diagram).upstream)
