"""Lenient models of the Orchestra API's records.

The API is thinly documented (only the status ``completed`` was ever shown), so these
models keep every field they do not know (``extra="allow"``), accept any JSON where the
docs show more than one shape (``outputs`` is a string in one example, an object in
another), keep timestamps as the raw strings the API sent (the mapping parses them),
and treat ids as opaque strings. Only what we cannot do without is required: an id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Final, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError


def _opaque_id(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError("an id must be a string")
    text = str(value).strip()
    if not text:
        raise ValueError("an id must not be empty")
    return text


def _lenient_text(value: object) -> str | None:
    """Scalars become text; containers are kept as compact JSON so nothing is lost."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, default=str)


OpaqueId = Annotated[str, BeforeValidator(_opaque_id)]
LenientText = Annotated[str | None, BeforeValidator(_lenient_text)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Step(_Record):
    """One executed node of one run (GET .../runs/{run_id}/steps)."""

    id: OpaqueId
    node_id: LenientText = None
    status: LenientText = None
    start_time: Any = None
    end_time: Any = None
    elapsed_time: Any = None
    error: Any = None
    inputs: Any = None
    outputs: Any = None
    step_metadata: Any = None
    tokens: Any = None


class Run(_Record):
    """One execution of a workflow (GET .../runs and .../runs/{run_id})."""

    id: OpaqueId
    status: LenientText = None
    start_time: Any = None
    end_time: Any = None
    elapsed_time: Any = None
    error: Any = None
    outputs: Any = None
    all_outputs: Any = None
    inputs: Any = None


class Workflow(_Record):
    """A workflow with its executable graph (GET /workflows)."""

    workflow_id: OpaqueId
    name: LenientText = None
    status: LenientText = None
    description: LenientText = None
    graph: Any = None


RecordT = TypeVar("RecordT", bound=_Record)


@dataclass(frozen=True)
class RejectedRecord:
    """A record that failed validation: where it was, and why, without its content."""

    index: int
    reason: str


def _describe(error: ValidationError) -> str:
    parts = []
    for problem in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in problem["loc"]) or "record"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_lone_surrogates(value: Any) -> Any:
    """JSON may escape half a UTF-16 pair ("\\ud800"); such text cannot be encoded as
    UTF-8 (protobuf, SQLite), so it becomes U+FFFD here, at the boundary."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [replace_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {
            replace_lone_surrogates(key): replace_lone_surrogates(item)
            for key, item in value.items()
        }
    return value


def may_hold_lone_surrogates(raw: str) -> bool:
    """Cheap pre-check on the JSON text: only escaped text can hold a lone surrogate."""
    return "\\ud" in raw or "\\uD" in raw


# JSON levels a record may have. Downstream code (validation, content capture, the spool)
# recurses into values, so a deeper record could exhaust Python's recursion limit there;
# no real workflow output comes near this.
MAX_NESTING: Final = 256


def nested_deeper_than(value: object, limit: int) -> bool:
    """True when containers inside `value` go more than `limit` levels deep.

    Walks level by level without recursion, so any depth the decoder produced is safe.
    """
    level: list[Any] = [value]
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
    return False


class TooDeep:
    """Stands in a DepthChecked list for a record nested deeper than MAX_NESTING."""


TOO_DEEP: Final = TooDeep()


class DepthChecked(list[object]):
    """Records whose nesting the decoder already bounded (exporter/source/body.py): each
    is within MAX_NESTING, or TOO_DEEP in its place. Walking every record of every
    history page again was a third of an idle poll's CPU."""


def parse_records(
    items: Iterable[object], model: type[RecordT]
) -> tuple[list[RecordT], list[RejectedRecord]]:
    """Validate each item on its own, so one bad record never hides the good ones."""
    good: list[RecordT] = []
    rejected: list[RejectedRecord] = []
    checked = isinstance(items, DepthChecked)
    too_deep = f"nested deeper than {MAX_NESTING} levels"
    for index, item in enumerate(items):
        if item is TOO_DEEP:
            rejected.append(RejectedRecord(index, too_deep))
            continue
        if not isinstance(item, dict):
            rejected.append(RejectedRecord(index, f"expected an object, got {type(item).__name__}"))
            continue
        if not checked and nested_deeper_than(item, MAX_NESTING):
            rejected.append(RejectedRecord(index, too_deep))
            continue
        try:
            good.append(model.model_validate(item))
        except ValidationError as exc:
            rejected.append(RejectedRecord(index, _describe(exc)))
    return good, rejected
