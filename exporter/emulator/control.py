"""The emulator's control endpoints under `/_emulator/`: steer a running emulator over HTTP.

They need no key, so a test, or a user rehearsing failures with curl, can steer an
emulator that a daemon in another process is polling:

    GET    /_emulator/stats     what arrived (Emulator.stats()); DELETE resets it
    GET    /_emulator/faults    the active fault rules; POST adds rules, DELETE clears them
    POST   /_emulator/runs      start a run: {"workflow_id", "start_in", "fail_node",
                                "durations", "inputs", "fail_soft", "fail_message", "run_id"}
    POST   /_emulator/api-key   {"api_key": "..."}: the key the API answers to from now on
    POST   /_emulator/clock     {"set": t, "advance": s}: move a scenario's steerable clock
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from exporter.emulator.api import EmulatedApi
from exporter.emulator.faults import FaultPlan, rules_from_json
from exporter.emulator.messages import (
    HttpError,
    Request,
    Response,
    error_response,
    json_object,
    json_response,
    json_value,
)
from exporter.emulator.stats import RequestStats

CONTROL_PREFIX = "/_emulator/"


@runtime_checkable
class SteerableClock(Protocol):
    """A scenario clock that `/_emulator/clock` can move (tests pass one; time.time is not)."""

    def __call__(self) -> float: ...

    def advance(self, seconds: float) -> float: ...

    def set(self, now: float) -> None: ...


class ControlApi:
    """Answers the control requests of one emulator by acting on its parts.

    It changes what `api` serves (its scenario's runs and clock, its key), the `faults`
    that hit the next API requests, and the request `stats`. Control requests themselves
    are never counted or faulted. Used by `Emulator.serve` for paths under CONTROL_PREFIX.
    """

    def __init__(self, api: EmulatedApi, faults: FaultPlan, stats: RequestStats) -> None:
        self._api = api
        self._faults = faults
        self._stats = stats

    def answer(self, request: Request) -> Response:
        action = (request.method, request.path[len(CONTROL_PREFIX) :].strip("/"))
        try:
            if action == ("GET", "stats"):
                return json_response(200, self._stats.snapshot())
            if action == ("DELETE", "stats"):
                self._stats.reset()
                return json_response(200, {"ok": True})
            if action == ("GET", "faults"):
                return json_response(200, {"rules": self._faults.describe()})
            if action == ("POST", "faults"):
                return self._add_faults(request.body)
            if action == ("DELETE", "faults"):
                self._faults.clear()
                return json_response(200, {"ok": True})
            if action == ("POST", "runs"):
                return self._add_run(request.body)
            if action == ("POST", "api-key"):
                return self._set_api_key(request.body)
            if action == ("POST", "clock"):
                return self._move_clock(request.body)
        except HttpError as error:
            return error_response(error.status, error.detail)
        return error_response(404, "Not Found")

    def _add_faults(self, body: bytes) -> Response:
        try:
            rules = rules_from_json(json_value(body))
        except ValueError as error:
            raise HttpError(400, str(error)) from error
        for rule in rules:
            self._faults.add(rule)
        return json_response(200, {"added": len(rules), "rules": self._faults.describe()})

    def _add_run(self, body: bytes) -> Response:
        payload = json_object(body)
        workflow_id = payload.get("workflow_id")
        if not isinstance(workflow_id, str):
            raise HttpError(400, "workflow_id (a string) is required")
        start_in = payload.get("start_in", 0)
        chosen_id = payload.get("run_id")
        if chosen_id is not None and not (isinstance(chosen_id, str) and chosen_id):
            raise HttpError(400, "run_id must be a non-empty string")
        scenario = self._api.scenario
        try:
            run_id = scenario.add_run(
                workflow_id,
                start_at=scenario.clock() + float(start_in),
                fail_node=payload.get("fail_node"),
                step_durations=payload.get("durations"),
                inputs=payload.get("inputs"),
                fail_soft=payload.get("fail_soft"),
                fail_message=payload.get("fail_message"),
                run_id=chosen_id,
            )
        except KeyError as error:
            raise HttpError(404, f"Workflow {workflow_id} not found") from error
        except (ValueError, TypeError, AttributeError) as error:
            raise HttpError(400, str(error)) from error
        return json_response(200, {"workflow_id": workflow_id, "run_id": run_id})

    def _set_api_key(self, body: bytes) -> Response:
        api_key = json_object(body).get("api_key")
        if not isinstance(api_key, str) or not api_key:
            raise HttpError(400, "api_key (a non-empty string) is required")
        self._api.api_key = api_key
        return json_response(200, {"ok": True})

    def _move_clock(self, body: bytes) -> Response:
        clock = self._api.scenario.clock
        if not isinstance(clock, SteerableClock):
            raise HttpError(409, "the scenario runs on a real clock")
        payload = json_object(body)
        try:
            moment = float(payload["set"]) if "set" in payload else None
            step = float(payload.get("advance", 0))
        except (TypeError, ValueError) as error:
            raise HttpError(400, "set and advance must be numbers of seconds") from error
        if moment is not None:
            clock.set(moment)
        clock.advance(step)
        return json_response(200, {"now": clock()})
