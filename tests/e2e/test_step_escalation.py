"""A step's reminder and escalation through the HTTP API, the real worker and the app DB, in real time: the
organisation file's step settings reach the workflow, the escalation resolves its approvers from the directory,
and the person escalated to can approve through the API (which checks them against the step as escalated).
Their timings, over hours, are in tests/workflows/test_step_timers.py."""

from __future__ import annotations

from typing import Any

from access import names
from store.settings import Settings
from tests.conftest import Api, load_into
from tests.support import eventually

DEPLOY = "ledger/payments-api/deploy"

NAGGING = {
    "approval_workflows": [
        {
            "name": "nagging",
            "rules": [
                {
                    "name": "manager, then security",
                    "max_duration": "PT1H",
                    "steps": [
                        {
                            "name": "manager",
                            "approvers": [{"kind": "manager"}],
                            "remind_after": "PT1S",
                            "escalate_after": "PT2S",
                            "escalate_to": [{"kind": "group", "name": "security"}],
                        }
                    ],
                }
            ],
        }
    ],
    "assignments": [{"workflow": "nagging", "scope": DEPLOY}],
}


async def test_a_reminded_step_escalates_and_the_person_escalated_to_approves(
    api: Api, settings: Settings, audit: Any
) -> None:
    load_into(settings, NAGGING)
    created = await api.request("alan@example.com", DEPLOY, "PT1M", "hotfix")
    assert created["steps"][0]["next_reminder_at"] is not None and created["steps"][0]["escalate_at"] is not None

    status = await eventually(
        lambda: api.status(created["id"]),
        until=lambda s: s["steps"][0]["escalated_at"] is not None,
        what="the step to escalate",
    )
    step = status["steps"][0]
    assert step["reminders"] == 1
    assert step["eligible"] == ["linus@example.com", "ada@example.com", "radia@example.com"]
    waiting = await api.ok("radia@example.com", "GET", "/api/approvals")
    assert created["id"] in [r["id"] for r in waiting]

    await api.ok("radia@example.com", "POST", f"/api/requests/{created['id']}/approve", {"comment": "on behalf"})
    await api.wait_for(created["id"], "active")
    actions = [event.action for event in audit(names.request_workflow_id(created["id"]))]
    assert actions.index("step.reminded") < actions.index("step.escalated") < actions.index("request.approved")
    [escalation] = [e for e in audit(names.request_workflow_id(created["id"])) if e.action == "step.escalated"]
    assert escalation.details["added"] == ["ada@example.com", "radia@example.com"]
