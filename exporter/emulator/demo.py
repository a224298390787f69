"""The demo: its workflows, how often each runs, and the scenario that runs them.

What `orchestra-otel demo` and `python -m exporter.emulator` show as traces. Four
workflows of growing shape: one node, a chain, a conditional branch, and a fan-out that
joins again; between them they fail in each documented way (a model rate limit, a
sandbox timeout, integrations answering `successful: false`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.emulator.graph import (
    END,
    START,
    CodeNode,
    Failure,
    IntegrationNode,
    ModelNode,
    WorkflowSpec,
)
from exporter.emulator.scenario import Scenario
from exporter.emulator.store import Clock

HELLO_ID = "e2b7c9d4-8a16-4f3b-9c5e-6a1d2f7b8c04"
JOKE_TO_SLACK_ID = "0f8a3c2e-6d41-4b7a-9e15-2c7d9b4e1a01"
SUPPORT_TRIAGE_ID = "5a2d7e90-1b3c-4f68-8d2e-7f1a6c3b9d02"
NIGHTLY_REPORT_ID = "9c4e1b7a-3f5d-4a2e-b8c6-1d7e9f2a4b03"

_DAY = 86_400.0


@dataclass(frozen=True)
class DemoPlan:
    """How often a demo workflow runs, how long a run takes and how often it fails."""

    workflow_id: str
    every: float
    first_in: float  # seconds after the scenario is made
    jitter: float
    duration: tuple[float, float]
    failure_rate: float
    fail_runs: tuple[int, ...] = ()  # scheduled runs that always fail: a short demo sees one
    history: int = 3  # finished runs from the last minutes
    history_every: float = 60.0
    history_fail_runs: tuple[int, ...] = ()


DEMO_PLANS: tuple[DemoPlan, ...] = (
    DemoPlan(JOKE_TO_SLACK_ID, 5.0, 0.5, 0.3, (1.5, 3.5), 0.15, fail_runs=(1,), history=4,
             history_fail_runs=(2,)),
    DemoPlan(SUPPORT_TRIAGE_ID, 7.0, 1.5, 0.5, (2.0, 5.5), 0.2, history_fail_runs=(1,)),
    DemoPlan(NIGHTLY_REPORT_ID, 8.0, 2.5, 0.5, (3.0, 6.0), 0.15, fail_runs=(1,)),
    DemoPlan(HELLO_ID, 6.0, 3.5, 0.2, (0.6, 1.5), 0.1),
)  # fmt: skip


def demo_scenario(clock: Clock = time.time, *, seed: int = 0) -> Scenario:
    """Realistic workflows that start runs every few seconds, some of which fail.

    A 20-30 s demo sees several finished traces and at least one failure; a few finished
    runs from the last minutes are there from the start.
    """
    now = clock()
    scenario = Scenario(demo_workflows(now), clock=clock, seed=seed)
    for plan in DEMO_PLANS:
        scenario.add_history(
            plan.workflow_id,
            plan.history,
            every=plan.history_every,
            end_by=now - 5.0,
            duration=plan.duration,
            failure_rate=plan.failure_rate,
            fail_runs=plan.history_fail_runs,
        )
        scenario.add_schedule(
            plan.workflow_id,
            plan.every,
            first_at=now + plan.first_in,
            jitter=plan.jitter,
            duration=plan.duration,
            failure_rate=plan.failure_rate,
            fail_runs=plan.fail_runs,
        )
    return scenario


def demo_workflows(now: float) -> list[WorkflowSpec]:
    return [_hello(now), _joke_to_slack(now), _support_triage(now), _nightly_report(now)]


def _hello(now: float) -> WorkflowSpec:
    model = ModelNode(
        node_id="model_1",
        model="virtuoso-large",
        messages=({"role": "system", "content": ""}, {"role": "user", "content": "say hi"}),
        replies=(
            "Hi there! How can I help you today?",
            "Hello! What can I do for you?",
            "Hi! Great to hear from you.",
        ),
    )
    return WorkflowSpec(
        workflow_id=HELLO_ID,
        name="hi",
        description='A workflow that sends a simple "hi" message using the Virtuoso-Large model.',
        nodes=(model,),
        edges=((START, "model_1"), ("model_1", END)),
        selected_output="model_1",
        created_at=now - 30 * _DAY,
    )


_JOKES = (
    "Why was the weather forecast sad?\n\nBecause it had a lot of problems and was feeling "
    'a little "forecast-ticular."',
    "Why did the cloud break up with the fog?\n\nIt needed some space to rain on its own.",
    "What did one raindrop say to the other?\n\nTwo's company, three's a cloud.",
    "How do hurricanes see?\n\nWith one eye.",
    "What's a tornado's favourite game?\n\nTwister!",
)


def _joke_to_slack(now: float) -> WorkflowSpec:
    model = ModelNode(node_id="model", model="virtuoso-medium", replies=_JOKES)
    slack = IntegrationNode(
        node_id="slack_integration",
        app_name="slack",
        action="SLACK_SENDS_A_MESSAGE_TO_A_SLACK_CHANNEL",
        input_mapping={"channel": "#weather-jokes", "text": "{{model}}"},
        failure=Failure("channel_not_found: the bot is not a member of #weather-jokes", soft=True),
    )
    return WorkflowSpec(
        workflow_id=JOKE_TO_SLACK_ID,
        name="joke-to-slack",
        description="Takes a prompt, generates a reply with the Virtuoso-Medium model, and "
        "posts the reply to a Slack channel.",
        nodes=(model, slack),
        edges=((START, "model"), ("model", "slack_integration"), ("slack_integration", END)),
        selected_output="model",
        sample_inputs=(
            {"prompt": "Tell me a joke about the weather"},
            {"prompt": "Tell me a joke about clouds"},
            {"prompt": "Tell me a joke about storms"},
        ),
        created_at=now - 12 * _DAY,
        updated_at=now - 2 * _DAY,
        version="2",
    )


_TICKETS = (
    {
        "ticket_id": "T-1042",
        "customer_email": "dana@northwind.example",
        "message": "I was charged twice for my March invoice.",
    },
    {
        "ticket_id": "T-1043",
        "customer_email": "li@contoso.example",
        "message": "The export to CSV button does nothing in Firefox.",
    },
    {
        "ticket_id": "T-1044",
        "customer_email": "sam@fabrikam.example",
        "message": "How do I add a second admin to our workspace?",
    },
)


def _lookup_customer(rng: random.Random, input_data: Mapping[str, Any]) -> Any:
    return {
        "customer_id": f"cus_{rng.randrange(10**6):06d}",
        "plan": rng.choice(("enterprise", "team", "starter")),
        "open_tickets": rng.randint(0, 4),
    }


def _route_ticket(rng: random.Random, input_data: Mapping[str, Any]) -> Any:
    customer = input_data["lookup_customer"]["data"]["results"]
    urgent = customer["plan"] == "enterprise" or customer["open_tickets"] >= 3
    return {
        "priority": "high" if urgent else "normal",
        "next": "slack_escalation" if urgent else "email_reply",
    }


def _support_triage(now: float) -> WorkflowSpec:
    lookup = CodeNode(
        node_id="lookup_customer",
        description="Find the customer in the CRM",
        code="def main(input_data):\n    return crm.lookup(input_data['customer_email'])\n",
        results=_lookup_customer,
        stdout="crm: 1 match\n",
    )
    draft = ModelNode(
        node_id="draft_reply",
        description="Draft a reply",
        model="virtuoso-large",
        temperature=0.3,
        max_tokens=1024,
        messages=(
            {"role": "system", "content": "You are a friendly support agent. Three sentences."},
            {
                "role": "user",
                "content": "Customer on the {{lookup_customer.data.results.plan}} plan writes: "
                "{{message}}",
            },
        ),
        replies=(
            "Thanks for reaching out about ticket {{ticket_id}}. I've looked into it and a "
            "specialist will follow up within one business day. Sorry for the trouble!",
            "Thank you for your message. Here is what to do next: open Settings, choose "
            "Members, and follow the steps there. Let us know if anything is unclear.",
        ),
        failure=Failure("RateLimitError: upstream model returned 429"),
    )
    route = CodeNode(
        node_id="route_ticket",
        description="Pick escalation or email",
        code="def main(input_data):\n    return triage(input_data['lookup_customer'])\n",
        results=_route_ticket,
        router=True,
    )
    escalate = IntegrationNode(
        node_id="slack_escalation",
        app_name="slack",
        action="SLACK_SENDS_A_MESSAGE_TO_A_SLACK_CHANNEL",
        input_mapping={
            "channel": "#support-escalations",
            "text": "Ticket {{ticket_id}} from {{customer_email}} needs a human: {{message}}",
        },
    )
    email = IntegrationNode(
        node_id="email_reply",
        app_name="gmail",
        action="GMAIL_SEND_EMAIL",
        input_mapping={
            "recipient_email": "{{customer_email}}",
            "subject": "Re: ticket {{ticket_id}}",
            "body": "{{draft_reply}}",
        },
        failure=Failure("SMTPRecipientsRefused: 550 mailbox unavailable", soft=True),
    )
    return WorkflowSpec(
        workflow_id=SUPPORT_TRIAGE_ID,
        name="support-triage",
        description="Looks the customer up, drafts a reply, then escalates urgent tickets to "
        "Slack and answers the others by email.",
        nodes=(lookup, draft, route, escalate, email),
        edges=(
            (START, "lookup_customer"),
            ("lookup_customer", "draft_reply"),
            ("draft_reply", "route_ticket"),
            ("route_ticket", "slack_escalation"),
            ("route_ticket", "email_reply"),
            ("slack_escalation", END),
            ("email_reply", END),
        ),
        selected_output="draft_reply",
        sample_inputs=_TICKETS,
        created_at=now - 9 * _DAY,
        updated_at=now - 1 * _DAY,
        version="4",
    )


def _fetch_metrics(rng: random.Random, input_data: Mapping[str, Any]) -> Any:
    return {
        "signups": rng.randint(80, 240),
        "churned": rng.randint(2, 19),
        "mrr_usd": rng.randint(180_000, 260_000),
        "p95_latency_ms": rng.randint(180, 420),
    }


def _build_chart(rng: random.Random, input_data: Mapping[str, Any]) -> Any:
    team = input_data.get("team", "all")
    return {"chart_url": f"https://charts.internal.example/{team}/{rng.getrandbits(48):012x}.png"}


def _nightly_report(now: float) -> WorkflowSpec:
    fetch = CodeNode(
        node_id="fetch_metrics",
        description="Query yesterday's metrics",
        code="import warehouse\n\ndef main(input_data):\n"
        "    return warehouse.daily_metrics(team=input_data['team'])\n",
        results=_fetch_metrics,
        stdout="warehouse: 4 metrics\n",
        failure=Failure("OperationalError: could not connect to warehouse.internal:5432"),
    )
    summarize = ModelNode(
        node_id="summarize",
        description="Summarise the metrics",
        model="virtuoso-large",
        temperature=0.2,
        messages=(
            {"role": "system", "content": "You write crisp daily business summaries."},
            {
                "role": "user",
                "content": "Summarise yesterday for the {{team}} team in three sentences: "
                "{{fetch_metrics.data.results}}",
            },
        ),
        replies=(
            "Yesterday the {{team}} team saw {{fetch_metrics.data.results.signups}} sign-ups "
            "against {{fetch_metrics.data.results.churned}} churned accounts. MRR stands at "
            "${{fetch_metrics.data.results.mrr_usd}}. Latency held at "
            "{{fetch_metrics.data.results.p95_latency_ms}} ms p95.",
        ),
    )
    chart = CodeNode(
        node_id="build_chart",
        description="Render the trend chart",
        code="def main(input_data):\n    return plot(input_data['fetch_metrics'])\n",
        results=_build_chart,
        stdout="rendered 3 series\n",
    )
    post = IntegrationNode(
        node_id="post_report",
        app_name="slack",
        action="SLACK_SENDS_A_MESSAGE_TO_A_SLACK_CHANNEL",
        input_mapping={
            "channel": "#daily-metrics",
            "text": "{{summarize}}\n{{build_chart.data.results.chart_url}}",
        },
    )
    return WorkflowSpec(
        workflow_id=NIGHTLY_REPORT_ID,
        name="nightly-report",
        description="Pulls yesterday's metrics, summarises them and posts the summary with a "
        "chart to Slack.",
        nodes=(fetch, summarize, chart, post),
        edges=(
            (START, "fetch_metrics"),
            ("fetch_metrics", "summarize"),
            ("fetch_metrics", "build_chart"),
            ("summarize", "post_report"),
            ("build_chart", "post_report"),
            ("post_report", END),
        ),
        selected_output="summarize",
        sample_inputs=({"team": "growth"}, {"team": "platform"}, {"team": "sales"}),
        created_at=now - 20 * _DAY,
        updated_at=now - 3 * _DAY,
        version="7",
    )
