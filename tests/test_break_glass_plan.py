"""Break-glass planning as pure rules (``access.break_glass``), and the organisation file's ``break_glass:`` on a
role, checked at load: the reviewers are the rule's skipped approvers, never the requester; only a role that
allows it, with a reason, under its cap; a notify group must exist."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from access.break_glass import RULE, plan_break_glass
from access.policy import InvalidRequest, NotRequestable
from access.types import ApprovalPolicy, BreakGlass, PolicyContext, Requester, RequestPlan, RoleFacts
from starter.services.org import checked_connector
from store.db import migrate, session_scope
from store.org import DEMO_ORG, OrgError, OrgFile
from store.org_load import load_org

POLICY = ApprovalPolicy.model_validate(
    {
        "name": "sensitive",
        "rules": [
            {"name": "short", "when": {"duration_at_most": "PT15M"}, "max_duration": "PT15M", "steps": []},
            {
                "name": "manager then owner",
                "max_duration": "PT8H",
                "steps": [{"approvers": [{"kind": "manager"}]}, {"approvers": [{"kind": "resource_owner"}]}],
            },
        ],
    }
)
CONTEXT = PolicyContext(
    requester=Requester(email="linus@example.com", manager="grace@example.com"),
    role=RoleFacts(path="ledger/prod-db/write", owners=["frances@example.com", "linus@example.com"]),
)
ALLOWED = BreakGlass(max_duration=timedelta(hours=1))


def plan(duration: timedelta, allowance: BreakGlass | None = ALLOWED, justification: str = "INC-1") -> RequestPlan:
    notify = ["ada@example.com", "linus@example.com"]
    return plan_break_glass(POLICY, CONTEXT, allowance, notify=notify, duration=duration, justification=justification)


def test_the_reviewers_are_the_skipped_rules_approvers_never_the_requester() -> None:
    made = plan(timedelta(minutes=30))
    assert made.rule == RULE and made.steps == [] and made.max_duration == timedelta(hours=1)
    assert made.break_glass is not None
    assert made.break_glass.skipped_rule == "manager then owner"
    assert made.break_glass.reviewers == ["frances@example.com", "grace@example.com"]
    assert made.break_glass.notify == ["ada@example.com"]
    assert made.break_glass.review_within == timedelta(hours=24)
    # A short one would have met the rule that needs nobody: nobody to review it but the admins.
    short = plan(timedelta(minutes=10)).break_glass
    assert short is not None and short.reviewers == []


def test_only_an_allowing_role_with_a_reason_under_its_cap() -> None:
    with pytest.raises(NotRequestable, match="does not allow emergency"):
        plan(timedelta(minutes=10), allowance=None)
    with pytest.raises(InvalidRequest, match="PT1H") as refused:
        plan(timedelta(hours=2))
    assert refused.value.field == "duration"
    with pytest.raises(InvalidRequest, match="reason"):
        plan(timedelta(minutes=10), justification="  ")


def test_an_unknown_notify_group_is_refused_at_load(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lapse.db'}"
    migrate(url)
    org = OrgFile.read(DEMO_ORG).model_dump(mode="json")
    org["integrations"][0]["resources"][0]["roles"][1]["break_glass"]["notify"] = ["red-team"]
    with pytest.raises(OrgError) as refused, session_scope(url) as session:
        load_org(session, OrgFile.model_validate(org), connectors=checked_connector)
    assert "red-team" in str(refused.value)
    assert any(p.field.endswith("roles.1.break_glass.notify") for p in refused.value.problems)
