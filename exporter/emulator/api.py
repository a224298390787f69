"""The emulated Orchestra API proper: routes, the bearer key, and answers from a Scenario.

Nothing here knows about faults, sockets or counting: `Emulator.serve` routes a request
here, decides with answers.py how the answer goes out, and the transport writes it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import unquote

from exporter.emulator.messages import (
    HttpError,
    Request,
    Response,
    error_response,
    int_param,
    json_object,
    json_response,
)
from exporter.emulator.scenario import Scenario

log = logging.getLogger(__name__)

MAX_LIMIT = 100  # the docs: "the last 100 runs", limit defaults to 100


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    method: str
    kind: str


_ID = r"(?P<{}>[^/]+)"
_ROUTES = (
    _Route(re.compile(r"/workflows/?"), "GET", "list_workflows"),
    _Route(re.compile(rf"/workflows/{_ID.format('workflow_id')}/runs/?"), "GET", "list_runs"),
    _Route(
        re.compile(rf"/workflows/{_ID.format('workflow_id')}/runs/{_ID.format('run_id')}/?"),
        "GET",
        "get_run",
    ),
    _Route(
        re.compile(rf"/workflows/{_ID.format('workflow_id')}/runs/{_ID.format('run_id')}/steps/?"),
        "GET",
        "steps",
    ),
    _Route(re.compile(rf"/workflows/{_ID.format('workflow_id')}/diagram/?"), "GET", "diagram"),
    _Route(re.compile(rf"/workflows/{_ID.format('workflow_id')}/execute/?"), "POST", "execute"),
)


@dataclass(frozen=True)
class Endpoint:
    """Where a request path leads: the endpoint kind ("unknown" when nowhere), its path
    parameters (unquoted) and the one method the route takes (None when nowhere)."""

    kind: str
    params: dict[str, str]
    method: str | None


_NOWHERE = Endpoint("unknown", {}, None)


class EmulatedApi:
    """The workflow API of docs/orchestra-api.md, served from `scenario`.

    Routes live under `base_path` ("" or "/a/b"); every route needs
    `Authorization: Bearer <api_key>` unless `api_key` is None. `api_key` may change
    while the emulator runs (key rotation); the rest is fixed. The run history lists
    only the newest `history_limit` runs (the docs' "last 100"); a single run comes back
    as `[run]` when `run_as_array`, as documented. Answers never raise: an emulator bug
    becomes a 500. Used by `Emulator`, which owns one.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        api_key: str | None,
        base_path: str,
        history_limit: int,
        run_as_array: bool,
    ) -> None:
        self.scenario = scenario
        self.api_key = api_key
        self.base_path = base_path
        self.history_limit = history_limit
        self.run_as_array = run_as_array

    def route(self, path: str) -> Endpoint:
        if self.base_path and not (path == self.base_path or path.startswith(self.base_path + "/")):
            return _NOWHERE
        relative = path[len(self.base_path) :]
        for route in _ROUTES:
            match = route.pattern.fullmatch(relative)
            if match:
                params = {name: unquote(value) for name, value in match.groupdict().items()}
                return Endpoint(route.kind, params, route.method)
        return _NOWHERE

    def answer(self, request: Request, endpoint: Endpoint) -> Response:
        """The real answer to `request`, which `route` led to `endpoint`."""
        if endpoint.method is None:
            return error_response(404, "Not Found")
        if request.method != endpoint.method:
            return error_response(405, "Method Not Allowed", {"Allow": endpoint.method})
        if not self._authorized(request):
            return error_response(401, "Invalid or missing API key", {"WWW-Authenticate": "Bearer"})
        try:
            return self._endpoint(endpoint.kind, request, endpoint.params)
        except HttpError as error:
            return error_response(error.status, error.detail)
        except Exception:
            # A bug in the emulator: answer like a broken server rather than hang up.
            log.exception("emulator failed on %s %s", request.method, request.target)
            return error_response(500, "Internal Server Error")

    def _authorized(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self.api_key

    def _endpoint(self, kind: str, request: Request, params: dict[str, str]) -> Response:
        if kind == "list_workflows":
            return json_response(200, self.scenario.workflow_records())
        workflow_id = params["workflow_id"]
        if not self.scenario.has_workflow(workflow_id):
            raise HttpError(404, f"Workflow {workflow_id} not found")
        if kind == "list_runs":
            return self._list_runs(workflow_id, request.query)
        if kind == "get_run":
            run = self.scenario.run(workflow_id, params["run_id"])
            if run is None:
                raise HttpError(404, f"Run {params['run_id']} not found")
            return json_response(200, [run] if self.run_as_array else run)
        if kind == "steps":
            steps = self.scenario.steps(workflow_id, params["run_id"])
            if steps is None:
                raise HttpError(404, f"Run {params['run_id']} not found")
            return json_response(200, steps)
        if kind == "diagram":
            return json_response(200, {"diagram": self.scenario.diagram(workflow_id)})
        return self._execute(workflow_id, request.body)

    def _list_runs(self, workflow_id: str, query: dict[str, list[str]]) -> Response:
        limit = int_param(query, "limit", MAX_LIMIT)
        offset = int_param(query, "offset", 0)
        if not 1 <= limit <= MAX_LIMIT:
            raise HttpError(400, f"limit must be between 1 and {MAX_LIMIT}")
        if offset < 0:
            raise HttpError(400, "offset must be 0 or more")
        runs = self.scenario.runs(
            workflow_id, offset=offset, limit=limit, newest=self.history_limit
        )
        return json_response(200, runs or [])

    def _execute(self, workflow_id: str, body: bytes) -> Response:
        inputs = json_object(body)
        try:
            run_id = self.scenario.add_run(workflow_id, inputs=inputs)
        except ValueError as error:
            raise HttpError(400, str(error)) from error
        return json_response(200, {"message": "Workflow execution started", "run_id": run_id})
