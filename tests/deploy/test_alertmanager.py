"""deploy/alertmanager/alertmanager.yml, checked with the real `amtool` (Debian's 0.25).

`amtool check-config` validates the file (and a copy with the commented-out Slack receiver
switched on, so the example stays valid); `amtool config routes test` shows where every
alert of the rule file goes. Broken copies must fail. The e2e test (tests/e2e) runs this
very configuration in a real Alertmanager.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promtool import REPO, run_promtool

CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RULES = REPO / "deploy" / "prometheus" / "orchestra-otel-rules.yml"


def config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    return data


def output(result: Any) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def with_slack(text: str) -> str:
    """The file with its commented-out Slack receiver switched on."""
    lines = text.splitlines()
    start = lines.index("  # - name: orchestra-slack")
    active = [re.sub(r"^  # ?", "  ", line) for line in lines[start:] if line.startswith("  #")]
    return "\n".join(lines[:start] + active) + "\n"


def test_amtool_check_config(amtool: Path) -> None:
    result = run_promtool(amtool, "check-config", CONFIG)
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout
    assert "1 receivers" in result.stdout


def test_the_commented_slack_receiver_is_valid_when_switched_on(
    amtool: Path, tmp_path: Path
) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(with_slack(CONFIG.read_text(encoding="utf-8")), encoding="utf-8")
    slack = yaml.safe_load(path.read_text())["receivers"][-1]
    assert slack["name"] == "orchestra-slack" and slack["slack_configs"][0]["send_resolved"]
    result = run_promtool(amtool, "check-config", path)
    assert result.returncode == 0, output(result)
    assert "2 receivers" in result.stdout


BROKEN = {
    "unknown receiver": ("  receiver: orchestra-webhook\n", "  receiver: nobody\n"),
    "unknown field": ("  group_wait: 10s\n", "  group_wiat: 10s\n"),
    "bad duration": ("  group_interval: 1m\n", "  group_interval: soon\n"),
    "bad matcher": ('[alertname="OrchestraExporterDown"]', '[alertname=~"("]'),
    "bad url": ("url: http://host.docker.internal:5001/alerts", "url: not a url"),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_amtool_rejects_a_broken_copy(amtool: Path, tmp_path: Path, breakage: str) -> None:
    old, new = BROKEN[breakage]
    text = CONFIG.read_text(encoding="utf-8")
    assert old in text, f"the config changed; update BROKEN[{breakage!r}]"
    path = tmp_path / "alertmanager.yml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = run_promtool(amtool, "check-config", path)
    assert result.returncode != 0, output(result)
    assert "FAILED" in result.stdout + result.stderr


def alert_names() -> list[str]:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]


@pytest.mark.parametrize("alertname", alert_names())
def test_every_alert_of_the_rules_reaches_the_webhook(amtool: Path, alertname: str) -> None:
    labels = [f"alertname={alertname}", "severity=critical", "workflow_id=wf-1", "node=n"]
    result = run_promtool(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        "--verify.receivers=orchestra-webhook",
        *labels,
    )
    assert result.returncode == 0, output(result)
    assert result.stdout.strip() == "orchestra-webhook"


def test_routing_groups_by_node_and_resolutions_are_sent() -> None:
    data = config()
    route = data["route"]
    # One page per failing node of a workflow, per workflow, per exporter instance.
    assert set(route["group_by"]) == {"alertname", "workflow_id", "node", "instance"}
    for receiver in data["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            assert webhook["send_resolved"] is True, receiver["name"]
    # A burst of failures of one node is one page: not 0s, and well under a minute.
    assert route["group_wait"] in {"5s", "10s", "15s", "30s"}
