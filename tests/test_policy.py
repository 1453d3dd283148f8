"""Approval policy evaluation on plain data: which rule applies, who approves, what is refused.

The people, roles and workflows mirror ``store/demo_org.yaml``; no database, no Temporal.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from access.policy import (
    InvalidRequest,
    NoEligibleApprovers,
    NotRequestable,
    describe_options,
    evaluate_policy,
    resolve_approvers,
)
from access.types import ApprovalPolicy, Approver, PolicyContext, Requester, RoleFacts

# --- the demo organisation ------------------------------------------------------------------

ADA = "ada@example.com"
GRACE = "grace@example.com"
LINUS = "linus@example.com"
MARGARET = "margaret@example.com"
ALAN = "alan@example.com"
BARBARA = "barbara@example.com"
KEN = "ken@example.com"
FRANCES = "frances@example.com"
RADIA = "radia@example.com"
KATHERINE = "katherine@example.com"

PEOPLE: dict[str, tuple[str | None, list[str]]] = {
    ADA: (None, ["security"]),
    GRACE: (ADA, ["engineering"]),
    LINUS: (GRACE, ["engineering", "platform"]),
    MARGARET: (GRACE, ["engineering", "payments"]),
    ALAN: (LINUS, ["engineering", "platform", "oncall-platform"]),
    BARBARA: (LINUS, ["engineering", "platform", "oncall-platform"]),
    KEN: (MARGARET, ["engineering", "payments"]),
    FRANCES: (GRACE, ["engineering", "data"]),
    RADIA: (ADA, ["security"]),
    KATHERINE: (ADA, ["finance"]),
}

GROUP_MEMBERS = {
    group: sorted(email for email, (_, groups) in PEOPLE.items() if group in groups)
    for group in sorted({group for _, groups in PEOPLE.values() for group in groups})
}

OWNERS = {
    "ledger/prod-db/read": [FRANCES],
    "ledger/prod-db/write": [FRANCES],
    "ledger/prod-db/admin": [FRANCES, RADIA],
    "ledger/payments-api/deploy": [MARGARET, "dennis@example.com"],
}


def make_policy(name: str, *rules: dict[str, Any]) -> ApprovalPolicy:
    return ApprovalPolicy.model_validate({"name": name, "rules": list(rules)})


MANAGER = {"kind": "manager"}
OWNER = {"kind": "resource_owner"}

MANAGER_APPROVAL = make_policy(
    "manager-approval",
    {"name": "manager", "steps": [{"name": "manager", "approvers": [MANAGER]}], "max_duration": "P1D"},
)
READ_ONLY = make_policy(
    "read-only",
    {"name": "quick look", "when": {"duration_at_most": "PT1H"}, "max_duration": "PT1H", "justification": False},
    {"name": "longer read", "steps": [{"name": "manager", "approvers": [MANAGER]}], "max_duration": "PT8H"},
)
SENSITIVE = make_policy(
    "sensitive",
    {
        "name": "on-call",
        "when": {"on_call": ["oncall-platform"]},
        "steps": [{"name": "on-call peer", "approvers": [{"kind": "group", "name": "oncall-platform"}]}],
        "max_duration": "PT4H",
    },
    {
        "name": "manager then owner",
        "steps": [{"name": "manager", "approvers": [MANAGER]}, {"name": "owner", "approvers": [OWNER]}],
        "max_duration": "PT8H",
    },
)
CRITICAL = make_policy(
    "critical",
    {
        "name": "two-person rule",
        "steps": [
            {"name": "manager", "approvers": [MANAGER]},
            {
                "name": "owners and security",
                "approvers": [OWNER, {"kind": "group", "name": "security"}],
                "quorum": 2,
            },
        ],
        "max_duration": "PT2H",
    },
)

_DEFAULT: Any = object()


def context(
    email: str,
    role: str = "ledger/prod-db/write",
    *,
    manager: str | None = _DEFAULT,
    owners: list[str] | None = None,
    group_members: dict[str, list[str]] | None = None,
) -> PolicyContext:
    """What the policy sees when ``email`` asks for ``role`` in the demo organisation."""
    demo_manager, groups = PEOPLE[email]
    return PolicyContext(
        requester=Requester(email=email, manager=demo_manager if manager is _DEFAULT else manager, groups=groups),
        role=RoleFacts(path=role, owners=OWNERS.get(role, []) if owners is None else owners),
        group_members=GROUP_MEMBERS if group_members is None else group_members,
    )


def evaluate(
    policy: ApprovalPolicy | None,
    ctx: PolicyContext,
    duration: timedelta = timedelta(hours=1),
    justification: str = "investigating an incident",
):
    return evaluate_policy(policy, ctx, duration=duration, justification=justification)


def eligible(plan: Any) -> list[list[str]]:
    return [step.eligible for step in plan.steps]


# --- rule order and conditions ---------------------------------------------------------------


def test_first_matching_rule_wins_even_when_a_later_rule_also_matches():
    # Alan is on call, so both "on-call" and the unconditional "manager then owner" match.
    plan = evaluate(SENSITIVE, context(ALAN))

    assert plan.rule == "on-call"
    assert eligible(plan) == [[BARBARA]]


def test_a_later_rule_applies_when_an_earlier_rules_conditions_fail():
    # Linus is in platform but not on call: the on-call rule is skipped.
    plan = evaluate(SENSITIVE, context(LINUS))

    assert plan.rule == "manager then owner"
    assert eligible(plan) == [[GRACE], [FRANCES]]


def test_first_match_wins_over_a_later_rule_with_a_longer_max_duration():
    # The on-call rule allows 4 hours; the later rule's 8 hours does not rescue a 6-hour request.
    with pytest.raises(InvalidRequest) as refused:
        evaluate(SENSITIVE, context(ALAN), duration=timedelta(hours=6))

    assert refused.value.field == "duration"
    assert "PT6H" in str(refused.value)
    # The message must name the limit that applies to this requester: the on-call rule's 4 hours.
    assert "PT4H" in str(refused.value)
    assert "PT8H" not in str(refused.value)


PAYMENTS_ONLY = make_policy(
    "payments-only",
    {
        "name": "payments team",
        "when": {"groups": ["payments", "finance"]},
        "steps": [{"approvers": [MANAGER]}],
        "max_duration": "PT2H",
    },
)


@pytest.mark.parametrize("requester", [MARGARET, KEN, KATHERINE])
def test_groups_condition_holds_for_a_member_of_any_listed_group(requester: str):
    plan = evaluate(PAYMENTS_ONLY, context(requester, "ledger/payments-api/deploy"))

    assert plan.rule == "payments team"
    assert eligible(plan) == [[PEOPLE[requester][0]]]


@pytest.mark.parametrize("requester", [LINUS, ALAN, RADIA])
def test_groups_condition_fails_for_a_non_member(requester: str):
    with pytest.raises(NotRequestable) as refused:
        evaluate(PAYMENTS_ONLY, context(requester, "ledger/payments-api/deploy"))

    assert refused.value.field == "role"


PLATFORM_ON_CALL = make_policy(
    "platform on call",
    {
        "name": "platform engineer on call",
        "when": {"groups": ["platform"], "on_call": ["oncall-platform"]},
        "steps": [{"approvers": [{"kind": "group", "name": "oncall-platform"}]}],
        "max_duration": "PT4H",
    },
    {"name": "everyone else", "steps": [{"approvers": [MANAGER]}], "max_duration": "PT1H"},
)


@pytest.mark.parametrize(
    ("requester", "rule"),
    [
        (ALAN, "platform engineer on call"),  # platform and on call
        (LINUS, "everyone else"),  # platform but not on call
        (KEN, "everyone else"),  # neither
    ],
)
def test_every_given_condition_must_hold(requester: str, rule: str):
    assert evaluate(PLATFORM_ON_CALL, context(requester)).rule == rule


@pytest.mark.parametrize("requester", [ADA, GRACE, ALAN, KATHERINE])
def test_a_rule_without_conditions_matches_everyone(requester: str):
    assert evaluate(CRITICAL, context(requester, "ledger/prod-db/admin", manager=LINUS)).rule == "two-person rule"


@pytest.mark.parametrize(
    ("duration", "rule", "steps"),
    [
        (timedelta(minutes=5), "quick look", []),
        (timedelta(hours=1), "quick look", []),  # at most means inclusive
        (timedelta(hours=1, seconds=1), "longer read", [[LINUS]]),
        (timedelta(hours=8), "longer read", [[LINUS]]),
    ],
)
def test_duration_at_most_condition(duration: timedelta, rule: str, steps: list[list[str]]):
    plan = evaluate(READ_ONLY, context(ALAN, "ledger/prod-db/read"), duration=duration)

    assert plan.rule == rule
    assert eligible(plan) == steps


def test_a_duration_past_a_duration_at_most_rule_is_accepted_under_a_later_longer_rule():
    plan = evaluate(READ_ONLY, context(KEN, "ledger/prod-db/read"), duration=timedelta(hours=3))

    assert plan.rule == "longer read"
    assert plan.max_duration == timedelta(hours=8)
    assert eligible(plan) == [[MARGARET]]


# --- duration and justification -------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "role", "duration", "limit"),
    [
        (MANAGER_APPROVAL, "ledger/payments-api/read", timedelta(days=2), "P1D"),
        (READ_ONLY, "ledger/prod-db/read", timedelta(hours=9), "PT8H"),
        (CRITICAL, "ledger/prod-db/admin", timedelta(hours=2, minutes=1), "PT2H"),
    ],
)
def test_a_duration_over_the_rules_max_is_refused(policy: ApprovalPolicy, role: str, duration: timedelta, limit: str):
    with pytest.raises(InvalidRequest) as refused:
        evaluate(policy, context(GRACE, role), duration=duration)

    assert refused.value.field == "duration"
    assert limit in str(refused.value)
    assert role in str(refused.value)


def test_a_duration_beyond_every_duration_at_most_rule_is_refused_with_the_longest_limit():
    quick_only = make_policy(
        "quick only",
        {"name": "quick look", "when": {"duration_at_most": "PT1H"}, "max_duration": "PT1H"},
    )
    with pytest.raises(InvalidRequest) as refused:
        evaluate(quick_only, context(KEN, "ledger/prod-db/read"), duration=timedelta(hours=2))

    assert refused.value.field == "duration"
    assert "PT2H" in str(refused.value)
    assert "PT1H" in str(refused.value)


@pytest.mark.parametrize("duration", [timedelta(0), timedelta(seconds=-1), timedelta(hours=-2)])
def test_a_duration_of_zero_or_less_is_refused(duration: timedelta):
    with pytest.raises(InvalidRequest) as refused:
        evaluate(MANAGER_APPROVAL, context(GRACE), duration=duration)

    assert refused.value.field == "duration"
    assert "longer than zero" in str(refused.value)


@pytest.mark.parametrize("justification", ["", "   ", "\n\t "])
def test_a_missing_justification_is_refused_when_the_rule_requires_one(justification: str):
    with pytest.raises(InvalidRequest) as refused:
        evaluate(MANAGER_APPROVAL, context(GRACE), justification=justification)

    assert refused.value.field == "justification"
    assert "'manager'" in str(refused.value)
    assert "justification" in str(refused.value)


def test_a_rule_not_requiring_a_justification_accepts_an_empty_one():
    plan = evaluate(READ_ONLY, context(KEN, "ledger/prod-db/read"), duration=timedelta(minutes=30), justification="")

    assert plan.rule == "quick look"
    assert plan.steps == []


def test_a_justification_is_still_required_by_the_later_rule_of_the_same_policy():
    with pytest.raises(InvalidRequest) as refused:
        evaluate(READ_ONLY, context(KEN, "ledger/prod-db/read"), duration=timedelta(hours=2), justification=" ")

    assert refused.value.field == "justification"
    assert "'longer read'" in str(refused.value)


# --- not requestable -------------------------------------------------------------------------


def test_a_role_without_an_approval_workflow_is_not_requestable():
    with pytest.raises(NotRequestable) as refused:
        evaluate(None, context(ADA, "people/hr-system/admin", owners=[ADA]))

    assert refused.value.field == "role"
    assert "people/hr-system/admin" in str(refused.value)
    assert "no approval workflow" in str(refused.value)


def test_a_requester_matching_no_rule_is_not_requestable():
    on_call_only = make_policy(
        "on call only",
        {
            "name": "on-call",
            "when": {"on_call": ["oncall-platform"]},
            "steps": [{"approvers": [MANAGER]}],
            "max_duration": "PT4H",
        },
    )
    with pytest.raises(NotRequestable) as refused:
        evaluate(on_call_only, context(KATHERINE))

    assert refused.value.field == "role"
    assert KATHERINE in str(refused.value)
    assert "ledger/prod-db/write" in str(refused.value)
    assert "'on call only'" in str(refused.value)


# --- approvers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("approver", "requester", "expected"),
    [
        ({"kind": "manager"}, LINUS, [GRACE]),
        ({"kind": "manager"}, ALAN, [LINUS]),
        ({"kind": "resource_owner"}, GRACE, [FRANCES, RADIA]),
        ({"kind": "resource_owner"}, RADIA, [FRANCES]),  # an owner never approves themselves
        ({"kind": "group", "name": "security"}, GRACE, [ADA, RADIA]),
        ({"kind": "group", "name": "security"}, ADA, [RADIA]),  # a member never approves themselves
        ({"kind": "group", "name": "oncall-platform"}, BARBARA, [ALAN]),
        ({"kind": "group", "name": "no-such-group"}, GRACE, []),
        ({"kind": "user", "name": KATHERINE}, GRACE, [KATHERINE]),
        ({"kind": "user", "name": GRACE}, GRACE, []),  # the named user asking for themselves
    ],
)
def test_each_approver_type_resolves_to_the_right_people(approver: dict[str, Any], requester: str, expected: list[str]):
    ctx = context(requester, "ledger/prod-db/admin")

    assert resolve_approvers([Approver.model_validate(approver)], ctx) == expected


def test_approvers_resolve_to_the_sorted_union_without_duplicates_or_the_requester():
    approvers = [
        Approver.model_validate(a)
        for a in [
            {"kind": "user", "name": RADIA},
            {"kind": "group", "name": "security"},
            {"kind": "resource_owner"},
            {"kind": "manager"},
        ]
    ]
    ctx = context(GRACE, "ledger/prod-db/admin", owners=[RADIA, GRACE, FRANCES])

    assert resolve_approvers(approvers, ctx) == [ADA, FRANCES, RADIA]


def test_a_missing_manager_resolves_to_nobody():
    assert resolve_approvers([Approver.model_validate(MANAGER)], context(ADA)) == []


# --- quorum and unapprovable requests --------------------------------------------------------


def _shared_approvers(policy: ApprovalPolicy) -> ApprovalPolicy:
    """``policy`` with its rules opted out of the distinct-approver rule."""
    rules = [rule.model_copy(update={"distinct_approvers": False}) for rule in policy.rules]
    return policy.model_copy(update={"rules": rules})


def test_a_step_with_exactly_its_quorum_of_eligible_approvers_is_accepted():
    # Radia is an owner and in security: that leaves Frances and Ada, exactly the quorum of two —
    # when the rule lets Ada, Radia's manager, also count for the second step.
    plan = evaluate(_shared_approvers(CRITICAL), context(RADIA, "ledger/prod-db/admin"))

    assert plan.steps[1].quorum == 2
    assert plan.steps[1].eligible == [ADA, FRANCES]
    assert plan.distinct_approvers is False


def test_f3_a_rule_one_person_would_have_to_approve_twice_is_refused_up_front():
    # Ada is Radia's manager and one of the two left for the second step: three approvals need three
    # different people, and only Ada and Frances are eligible.
    with pytest.raises(NoEligibleApprovers, match="needs 3 different people across its steps"):
        evaluate(CRITICAL, context(RADIA, "ledger/prod-db/admin"))


def test_f3_distinct_approvers_counts_people_who_can_serve_different_steps():
    # Grace's manager is Ada; the second step has Frances, Radia and Ada: Ada for step 1 leaves two.
    plan = evaluate(CRITICAL, context(GRACE, "ledger/prod-db/admin"))
    assert plan.distinct_approvers is True
    assert [s.quorum for s in plan.steps] == [1, 2]


def test_f12_an_extension_is_held_to_the_limit_of_the_rule_chosen_by_its_condition():
    # "quick look" is chosen for grants up to an hour; its max_duration says 8 h, but a grant it
    # approved automatically must not be extended automatically beyond the hour that chose it.
    policy = make_policy(
        "loose",
        {"name": "quick look", "when": {"duration_at_most": "PT1H"}, "max_duration": "PT8H", "justification": False},
        {"name": "longer", "steps": [{"approvers": [MANAGER]}], "max_duration": "PT8H"},
    )
    plan = evaluate(policy, context(GRACE, "ledger/prod-db/read"), duration=timedelta(minutes=30))
    assert plan.rule == "quick look"
    assert plan.max_duration == timedelta(hours=1)


def test_a_step_with_fewer_eligible_approvers_than_its_quorum_is_refused():
    # Frances is the only owner and the only member of security: one short of two for Grace's request.
    ctx = context(GRACE, "ledger/prod-db/admin", owners=[FRANCES], group_members={"security": [FRANCES]})
    with pytest.raises(NoEligibleApprovers) as refused:
        evaluate(CRITICAL, ctx)

    message = str(refused.value)
    assert "step 2" in message
    assert "needs 2 approval(s)" in message
    assert "only 1 eligible approver(s) other than you" in message


def test_quorum_shortfall_with_the_requester_among_approvers_counts_the_others():
    # Alan and Barbara are on call; a quorum of two cannot be met without Alan, but Barbara can
    # still approve, so the refusal must not claim Alan is the only eligible approver.
    two_peers = make_policy(
        "two peers",
        {
            "name": "two on-call peers",
            "steps": [{"approvers": [{"kind": "group", "name": "oncall-platform"}], "quorum": 2}],
            "max_duration": "PT4H",
        },
    )
    with pytest.raises(NoEligibleApprovers) as refused:
        evaluate(two_peers, context(ALAN))

    message = str(refused.value)
    assert "needs 2 approval(s)" in message
    assert "only 1 eligible approver(s) other than you" in message
    assert "you are the only eligible approver" not in message


def test_the_only_member_of_the_approving_group_cannot_approve_their_own_request():
    ctx = context(ALAN, group_members={"oncall-platform": [ALAN]})
    with pytest.raises(NoEligibleApprovers) as refused:
        evaluate(SENSITIVE, ctx)

    assert refused.value.field == "role"
    assert "step 1" in str(refused.value)
    assert "cannot approve your own request" in str(refused.value)


def test_the_roles_sole_owner_cannot_approve_their_own_request():
    # Frances's manager (Grace) can approve step 1, but step 2 has no owner but Frances.
    with pytest.raises(NoEligibleApprovers) as refused:
        evaluate(SENSITIVE, context(FRANCES, "ledger/prod-db/write"))

    assert "step 2 (resource_owner)" in str(refused.value)
    assert "cannot approve your own request" in str(refused.value)


def test_a_named_user_asking_for_themselves_cannot_approve_their_own_request():
    policy = make_policy(
        "katherine approves",
        {"name": "katherine", "steps": [{"approvers": [{"kind": "user", "name": KATHERINE}]}], "max_duration": "P1D"},
    )
    with pytest.raises(NoEligibleApprovers) as refused:
        evaluate(policy, context(KATHERINE, "ledger/billing-reports/viewer"))

    assert "cannot approve your own request" in str(refused.value)


def test_a_requester_without_a_manager_is_refused_because_nobody_is_eligible():
    # Ada has no manager in the demo organisation.
    with pytest.raises(NoEligibleApprovers) as refused:
        evaluate(MANAGER_APPROVAL, context(ADA, "ledger/payments-api/deploy"))

    assert refused.value.field == "role"
    assert "step 1 (manager)" in str(refused.value)
    assert "nobody is eligible" in str(refused.value)


def test_a_group_with_no_active_members_leaves_nobody_eligible():
    with pytest.raises(NoEligibleApprovers) as refused:
        evaluate(SENSITIVE, context(ALAN, group_members={}))

    assert "nobody is eligible" in str(refused.value)


def test_a_rule_without_steps_needs_no_approvers():
    # Even with nobody to approve anything, the automatic rule grants.
    ctx = context(ADA, "ledger/prod-db/read", group_members={})
    plan = evaluate(READ_ONLY, ctx, duration=timedelta(minutes=10))

    assert plan.rule == "quick look"
    assert plan.steps == []


# --- the plan --------------------------------------------------------------------------------


def test_the_plan_carries_policy_rule_max_duration_and_sorted_eligible_lists():
    unnamed = make_policy(
        "critical",
        {
            "name": "two-person rule",
            "steps": [
                {"name": "manager", "approvers": [MANAGER]},
                {"approvers": [OWNER, {"kind": "group", "name": "security"}], "quorum": 2},
            ],
            "max_duration": "PT2H",
        },
    )
    ctx = context(GRACE, "ledger/prod-db/admin", owners=[RADIA, FRANCES], group_members={"security": [RADIA, ADA]})
    plan = evaluate(unnamed, ctx, duration=timedelta(minutes=45))

    assert plan.policy == "critical"
    assert plan.rule == "two-person rule"
    assert plan.max_duration == timedelta(hours=2)
    assert [step.name for step in plan.steps] == ["manager", "resource_owner or group:security"]
    assert [step.quorum for step in plan.steps] == [1, 2]
    assert [step.approvers for step in plan.steps] == [step.approvers for step in unnamed.rules[0].steps]
    assert eligible(plan) == [[ADA], [ADA, FRANCES, RADIA]]
    assert plan.model_dump(mode="json")["max_duration"] == "PT2H"


def test_no_step_of_a_plan_lists_the_requester():
    ctx = context(RADIA, "ledger/prod-db/admin", manager=ADA)
    plan = evaluate(_shared_approvers(CRITICAL), ctx)

    assert all(RADIA not in step.eligible for step in plan.steps)


# --- describe_options ------------------------------------------------------------------------


def options(policy: ApprovalPolicy, ctx: PolicyContext) -> list[tuple[str, str, list[str]]]:
    return [(option.rule, option.up_to, option.approval) for option in describe_options(policy, ctx)]


def test_options_for_an_on_call_engineer_list_every_rule_they_meet():
    assert options(SENSITIVE, context(ALAN)) == [
        ("on-call", "PT4H", ["1 of group:oncall-platform"]),
        ("manager then owner", "PT8H", ["1 of manager", "1 of resource_owner"]),
    ]


def test_options_leave_out_rules_whose_conditions_do_not_hold():
    assert options(SENSITIVE, context(LINUS)) == [
        ("manager then owner", "PT8H", ["1 of manager", "1 of resource_owner"]),
    ]
    assert options(PAYMENTS_ONLY, context(LINUS)) == []
    assert options(PLATFORM_ON_CALL, context(LINUS)) == [("everyone else", "PT1H", ["1 of manager"])]


def test_options_show_automatic_for_a_rule_without_steps():
    assert options(READ_ONLY, context(KEN, "ledger/prod-db/read")) == [
        ("quick look", "PT1H", ["automatic"]),
        ("longer read", "PT8H", ["1 of manager"]),
    ]


def test_options_show_the_quorum_and_every_approver_of_a_step():
    assert options(CRITICAL, context(GRACE, "ledger/prod-db/admin")) == [
        ("two-person rule", "PT2H", ["1 of manager", "2 of resource_owner or group:security"]),
    ]


@pytest.mark.parametrize(
    ("at_most", "max_duration", "up_to"),
    [
        ("PT30M", "PT1H", "PT30M"),
        ("PT2H", "PT1H", "PT1H"),
        ("PT1H", "PT1H", "PT1H"),
        (None, "P1DT1H", "P1DT1H"),
    ],
)
def test_options_up_to_is_the_smaller_of_duration_at_most_and_max_duration(
    at_most: str | None, max_duration: str, up_to: str
):
    when = {"duration_at_most": at_most} if at_most else {}
    policy = make_policy("p", {"name": "r", "when": when, "max_duration": max_duration})

    assert options(policy, context(KEN)) == [("r", up_to, ["automatic"])]


def test_options_do_not_depend_on_duration_conditions_being_met():
    # duration_at_most limits how long, not who: a duration-limited rule is still offered.
    names = [option.rule for option in describe_options(READ_ONLY, context(ADA, "ledger/prod-db/read"))]

    assert names == ["quick look", "longer read"]
