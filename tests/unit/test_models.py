"""exporter/source/models.py: lenient parsing of API records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.source.models import RejectedRecord, Run, Step, Workflow, parse_records


def _fixture(shared_dir: Path, name: str) -> list[object]:
    data = json.loads((shared_dir / "fixtures" / name).read_text(encoding="utf-8"))
    assert isinstance(data, list) and data
    return data


def test_steps_fixture_parses(shared_dir: Path) -> None:
    steps, rejected = parse_records(_fixture(shared_dir, "steps-model-slack.json"), Step)
    assert rejected == []
    assert [step.id for step in steps] == [
        "b2acc986-af06-418a-bf71-c730d5ghaf0b",
        "ad6edfea-bf1c-4639-9d9f-b53c9ad60bgg",
    ]
    model, slack = steps
    assert model.node_id == "model"
    assert model.status == "completed"
    # timestamps stay the raw strings the API sent
    assert model.start_time == "2025-03-13T02:41:15.144470Z"
    assert model.end_time == "2025-03-13T02:41:17.382162Z"
    assert model.elapsed_time == 2
    assert model.error is None
    assert isinstance(model.outputs, dict)
    assert model.outputs["object"] == "chat.completion"
    assert model.inputs["model"] == "virtuoso-medium"
    assert slack.node_id == "slack_integration"
    assert slack.inputs["app_name"] == "slack"
    assert slack.outputs["result"]["successfull"] is True
    # fields the model does not declare are kept
    assert model.model_extra is not None
    assert model.model_extra["user_id"] == "2*****************1"
    assert "organization_id" in model.model_extra


@pytest.mark.parametrize("name", ["runs-list.json", "run.json"])
def test_runs_fixtures_parse(shared_dir: Path, name: str) -> None:
    items = _fixture(shared_dir, name)
    runs, rejected = parse_records(items, Run)
    assert rejected == []
    assert len(runs) == len(items)
    for run, raw in zip(runs, items, strict=True):
        assert isinstance(raw, dict)
        assert run.id == raw["id"]
        assert run.status == "completed"
        assert run.start_time == raw["start_time"]
        assert run.outputs == raw["outputs"]
        assert run.all_outputs == raw["all_outputs"]


def test_run_outputs_string_and_object_both_kept(shared_dir: Path) -> None:
    listed, _ = parse_records(_fixture(shared_dir, "runs-list.json"), Run)
    single, _ = parse_records(_fixture(shared_dir, "run.json"), Run)
    assert isinstance(listed[0].outputs, str)
    assert listed[0].outputs.startswith("Why was the weather forecast sad?")
    assert isinstance(single[0].outputs, dict)
    assert single[0].outputs["model_1"].startswith("Hello there!")


def test_workflows_fixture_parses(shared_dir: Path) -> None:
    workflows, rejected = parse_records(_fixture(shared_dir, "workflows.json"), Workflow)
    assert rejected == []
    assert [(w.workflow_id, w.name) for w in workflows] == [
        ("1234f567-bb12-1234-b7cd-f7a71a98cd24", "hi"),
        ("7c1e2f34-5a6b-4c7d-8e9f-0a1b2c3d4e5f", "joke-to-slack"),
    ]
    assert isinstance(workflows[0].graph, dict)
    assert workflows[0].graph["edges"] == [["START", "model_1"], ["model_1", "END"]]
    assert workflows[0].model_extra is not None
    assert workflows[0].model_extra["created_at"] == "2025-03-12 00:59:55.465508+00:00"


@pytest.mark.parametrize(
    ("outputs"),
    ["plain text", {"result": {"successful": True}}, ["a", 1], 3, None],
)
def test_step_outputs_any_json_kept(outputs: object) -> None:
    steps, rejected = parse_records([{"id": "s1", "outputs": outputs}], Step)
    assert rejected == []
    assert steps[0].outputs == outputs


def test_unknown_fields_kept() -> None:
    item = {"id": "s1", "brand_new": {"nested": [1, 2]}, "flag": True}
    steps, _ = parse_records([item], Step)
    assert steps[0].model_extra == {"brand_new": {"nested": [1, 2]}, "flag": True}


@pytest.mark.parametrize(("raw", "expected"), [(7, "7"), (0, "0"), ("  abc ", "abc")])
def test_ids_coerced_to_str(raw: object, expected: str) -> None:
    steps, rejected = parse_records([{"id": raw}], Step)
    runs, _ = parse_records([{"id": raw}], Run)
    workflows, _ = parse_records([{"workflow_id": raw}], Workflow)
    assert rejected == []
    assert steps[0].id == expected
    assert runs[0].id == expected
    assert workflows[0].workflow_id == expected


@pytest.mark.parametrize("model", [Step, Run])
@pytest.mark.parametrize("raw", ["", "   ", None, True, False, 1.5, ["a"], {"id": "a"}])
def test_bad_ids_rejected_with_reason(model: type[Step] | type[Run], raw: object) -> None:
    good, rejected = parse_records([{"id": raw}], model)
    assert good == []
    assert len(rejected) == 1
    assert rejected[0].index == 0
    assert rejected[0].reason.startswith("id")


@pytest.mark.parametrize("model", [Step, Run])
def test_missing_id_rejected(model: type[Step] | type[Run]) -> None:
    good, rejected = parse_records([{"status": "completed"}], model)
    assert good == []
    assert rejected[0].reason.startswith("id")


def test_workflow_without_workflow_id_rejected() -> None:
    good, rejected = parse_records([{"id": "w1", "name": "x"}], Workflow)
    assert good == []
    assert rejected[0].reason.startswith("workflow_id")


def test_bad_items_do_not_stop_the_others() -> None:
    items: list[object] = [
        {"id": "a"},
        3,
        None,
        "text",
        ["id", "b"],
        {"id": ""},
        {"id": "c", "status": "failed"},
    ]
    good, rejected = parse_records(items, Step)
    assert [step.id for step in good] == ["a", "c"]
    assert [record.index for record in rejected] == [1, 2, 3, 4, 5]
    assert rejected[0] == RejectedRecord(1, "expected an object, got int")
    assert rejected[1].reason == "expected an object, got NoneType"
    assert rejected[3].reason == "expected an object, got list"


def test_rejection_reason_never_carries_the_content() -> None:
    secret = "prompt-with-pii-123"
    _, rejected = parse_records([{"id": {"x": secret}}, {"id": [secret]}], Step)
    assert len(rejected) == 2
    for record in rejected:
        assert secret not in record.reason


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("node_id", 7, "7"),
        ("status", True, "true"),
        ("status", None, None),
        ("status", "COMPLETED", "COMPLETED"),  # raw value kept as is
        ("node_id", {"a": 1}, '{"a": 1}'),
    ],
)
def test_lenient_text_fields(field: str, raw: object, expected: str | None) -> None:
    steps, rejected = parse_records([{"id": "s1", field: raw}], Step)
    assert rejected == []
    assert getattr(steps[0], field) == expected


def test_records_are_frozen() -> None:
    steps, _ = parse_records([{"id": "s1"}], Step)
    with pytest.raises(Exception, match="frozen"):
        steps[0].status = "x"  # type: ignore[misc]


def test_empty_input() -> None:
    assert parse_records([], Step) == ([], [])
