"""The birthright plan as a pure function: attribution, leavers, deletions, and what it never touches."""

from __future__ import annotations

import random

from access.birthright import HeldGrant, PlanItem, PolicySpec, Relabel, plan_birthright

ENG = PolicySpec("engineering-baseline", groups=["engineering"], roles=["git/repos/read", "wiki/space/edit"])
PLATFORM = PolicySpec("platform", groups=["platform", "oncall"], roles=["git/repos/read", "k8s/prod/view"])
MEMBERS = {
    "engineering": {"alan@x", "barbara@x", "ken@x"},
    "platform": {"alan@x", "linus@x"},
    "oncall": {"barbara@x"},
}
ACTIVE = {"alan@x", "barbara@x", "ken@x", "linus@x"}


def test_first_policy_by_position_accounts_for_a_role_two_policies_grant() -> None:
    plan = plan_birthright([ENG, PLATFORM], MEMBERS, ACTIVE, [])
    added = {(i.user, i.role): i.policy for i in plan.add}
    assert added[("alan@x", "git/repos/read")] == "engineering-baseline"
    assert added[("linus@x", "git/repos/read")] == "platform"  # not in engineering
    assert added[("barbara@x", "k8s/prod/view")] == "platform"  # through the second group
    assert len(plan.add) == len(added) == 3 + 3 + 1 + 3  # one grant per (user, role)
    assert not plan.remove and not plan.relabel

    reordered = plan_birthright([PLATFORM, ENG], MEMBERS, ACTIVE, [])
    assert {(i.user, i.role): i.policy for i in reordered.add}[("alan@x", "git/repos/read")] == "platform"


def test_plan_of_the_current_state_is_empty_and_a_reorder_only_relabels() -> None:
    plan = plan_birthright([ENG, PLATFORM], MEMBERS, ACTIVE, [])
    current = [HeldGrant(i.user, i.role, i.policy) for i in plan.add]
    again = plan_birthright([ENG, PLATFORM], MEMBERS, ACTIVE, current)
    assert not (again.add or again.remove or again.relabel)

    reordered = plan_birthright([PLATFORM, ENG], MEMBERS, ACTIVE, current)
    assert not reordered.add and not reordered.remove
    assert sorted(reordered.relabel, key=lambda r: r.user) == [
        Relabel("alan@x", "git/repos/read", "engineering-baseline", "platform"),
        Relabel("barbara@x", "git/repos/read", "engineering-baseline", "platform"),
    ]


def test_leavers_and_those_who_left_the_group_lose_their_grants() -> None:
    current = [HeldGrant("ken@x", "wiki/space/edit", "engineering-baseline"), HeldGrant("ken@x", "git/repos/read", "x")]
    plan = plan_birthright([ENG], MEMBERS, ACTIVE - {"ken@x"}, current)
    assert sorted(plan.remove, key=lambda i: i.role) == [
        PlanItem("ken@x", "git/repos/read", "x"),
        PlanItem("ken@x", "wiki/space/edit", "engineering-baseline"),
    ]
    assert all(i.user != "ken@x" for i in plan.add)

    moved = {**MEMBERS, "engineering": {"alan@x", "barbara@x"}}
    assert [i.user for i in plan_birthright([ENG], moved, ACTIVE, current).remove] == ["ken@x", "ken@x"]


def test_a_deleted_policy_removes_its_grants_unless_another_policy_still_grants_them() -> None:
    current = [HeldGrant(i.user, i.role, i.policy) for i in plan_birthright([ENG, PLATFORM], MEMBERS, ACTIVE, []).add]
    plan = plan_birthright([PLATFORM], MEMBERS, ACTIVE, current)
    removed = {(i.user, i.role) for i in plan.remove}
    assert removed == {
        ("ken@x", "git/repos/read"),
        ("alan@x", "wiki/space/edit"),
        ("barbara@x", "wiki/space/edit"),
        ("ken@x", "wiki/space/edit"),
    }
    # Alan and Barbara keep repo access, now accounted for by the platform policy.
    assert {(r.user, r.policy) for r in plan.relabel} == {("alan@x", "platform"), ("barbara@x", "platform")}
    assert plan.summary()["by_policy"]["engineering-baseline"] == {"remove": 4, "relabel_out": 2}


def test_frozen_roles_are_neither_added_nor_removed() -> None:
    current = [HeldGrant("ken@x", "wiki/space/edit", "engineering-baseline")]
    plan = plan_birthright([ENG], MEMBERS, ACTIVE - {"ken@x"}, current, frozen_roles={"wiki/space/edit"})
    assert {i.role for i in plan.add} == {"git/repos/read"}
    assert not plan.remove
    assert plan.frozen_roles == ["wiki/space/edit"]


def test_leavers_are_left_out_at_scale() -> None:
    """50,000 users in 500 groups under 200 policies: every active member gets each role once, no leaver any.
    (How long it takes is measured by ``python -m bench.birthright``, not asserted here.)"""
    rng = random.Random(7)
    users = [f"user{n}@example.com" for n in range(50_000)]
    groups = [f"group-{g}" for g in range(500)]
    members: dict[str, set[str]] = {g: set() for g in groups}
    for user in users:
        for group in rng.sample(groups, 5):
            members[group].add(user)
    roles = [f"ledger/res-{r // 10}/role-{r}" for r in range(400)]
    policies = [PolicySpec(f"p{n}", rng.sample(groups, 3), rng.sample(roles, 2)) for n in range(200)]
    active = set(users[:49_000])
    plan = plan_birthright(policies, members, active, [])
    granted = {(i.user, i.role) for i in plan.add}
    assert len(granted) == len(plan.add) > 100_000  # one grant per user and role
    assert not {i.user for i in plan.add} - active


def test_an_exception_removes_exactly_its_user_role_and_policy_and_another_policy_still_grants_it() -> None:
    """An access review revoked ken's and barbara's ``git/repos/read`` from engineering-baseline: ken loses it
    (and keeps the policy's other role); barbara keeps it through platform (her on-call group), relabelled. The
    review's engine then marks barbara's item ``revoke_failed``, saying platform also grants it."""
    full = plan_birthright([ENG, PLATFORM], MEMBERS, ACTIVE, [])
    current = [HeldGrant(i.user, i.role, i.policy) for i in full.add]
    exceptions = {("engineering-baseline", "git/repos/read"): {"ken@x", "barbara@x"}}

    plan = plan_birthright([ENG, PLATFORM], MEMBERS, ACTIVE, current, exceptions=exceptions)
    assert plan.remove == [PlanItem("ken@x", "git/repos/read", "engineering-baseline")]
    assert plan.relabel == [Relabel("barbara@x", "git/repos/read", "engineering-baseline", "platform")]
    assert plan.add == []

    fresh = plan_birthright([ENG, PLATFORM], MEMBERS, ACTIVE, [], exceptions=exceptions)
    added = {(i.user, i.role): i.policy for i in fresh.add}
    assert ("ken@x", "git/repos/read") not in added
    assert added[("ken@x", "wiki/space/edit")] == "engineering-baseline"
    assert added[("barbara@x", "git/repos/read")] == "platform"
    assert added[("alan@x", "git/repos/read")] == "engineering-baseline"  # nobody else's access moves
    assert len(fresh.add) == len(full.add) - 1

    # An exception on a policy that does not grant the role, or for another role, changes nothing.
    unrelated = {("platform", "wiki/space/edit"): {"ken@x"}, ("engineering-baseline", "k8s/prod/view"): {"alan@x"}}
    same = plan_birthright([ENG, PLATFORM], MEMBERS, ACTIVE, current, exceptions=unrelated)
    assert not (same.add or same.remove or same.relabel)
