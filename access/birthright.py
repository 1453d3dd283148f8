"""The birthright plan: which birthright grants to add, remove or relabel, as a pure function.

Desired access is one grant per (user, role) for every active member of a policy's groups,
attributed to the first policy (by position) that grants it. The plan compares that with the
active grants of path ``birthright`` only: JIT and external grants are never in its input, so
it never touches them (the apply step counts them so that overlapping access survives).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PolicySpec:
    """A birthright policy as the plan sees it; the sequence of them is in position order."""

    name: str
    groups: Sequence[str]
    roles: Sequence[str]
    """Role paths ``integration/resource/role``."""


@dataclass(frozen=True)
class HeldGrant:
    """An active birthright grant in the ledger."""

    user: str
    role: str
    policy: str | None


@dataclass(frozen=True)
class PlanItem:
    user: str
    role: str
    policy: str
    """``add``: the policy that grants it; ``remove``: the policy it was granted under."""


@dataclass(frozen=True)
class Relabel:
    """Another policy now accounts for a grant the user keeps: only the ledger's policy name changes."""

    user: str
    role: str
    old_policy: str | None
    policy: str


@dataclass
class BirthrightPlan:
    add: list[PlanItem] = field(default_factory=list)
    remove: list[PlanItem] = field(default_factory=list)
    relabel: list[Relabel] = field(default_factory=list)
    frozen_roles: list[str] = field(default_factory=list)
    """Roles the policies name that cannot be granted now (unknown, or missing in the target): left as they are."""

    def summary(self) -> dict[str, Any]:
        """Counts overall, by policy and by role: what an admin reads before saving a change."""
        by_policy: dict[str, Counter[str]] = defaultdict(Counter)
        by_role: dict[str, Counter[str]] = defaultdict(Counter)
        for action, items in (("add", self.add), ("remove", self.remove)):
            for item in items:
                by_policy[item.policy][action] += 1
                by_role[item.role][action] += 1
        for relabel in self.relabel:
            by_policy[relabel.policy]["relabel_in"] += 1
            if relabel.old_policy is not None:
                by_policy[relabel.old_policy]["relabel_out"] += 1
        return {
            "add": len(self.add),
            "remove": len(self.remove),
            "relabel": len(self.relabel),
            "by_policy": {name: dict(counts) for name, counts in sorted(by_policy.items())},
            "by_role": {name: dict(counts) for name, counts in sorted(by_role.items())},
            "frozen_roles": self.frozen_roles,
        }


Exceptions = Mapping[tuple[str, str], set[str] | frozenset[str]]
"""(policy, role) → the users that policy no longer grants the role to (an access review revoked it)."""


def desired_grants(
    policies: Sequence[PolicySpec],
    members: Mapping[str, Iterable[str]],
    active_users: set[str] | frozenset[str],
    *,
    frozen_roles: set[str] | frozenset[str] = frozenset(),
    exceptions: Exceptions | None = None,
) -> dict[str, dict[str, str]]:
    """role → user → the first policy granting it, for active users only, but a policy's exceptions (another
    policy may still grant the role to an excepted user)."""
    desired: dict[str, dict[str, str]] = {}
    group_sets: dict[str, frozenset[str]] = {}
    for policy in policies:
        users: set[str] = set()
        for group in policy.groups:
            if group not in group_sets:
                group_sets[group] = frozenset(members.get(group, ())) & active_users
            users |= group_sets[group]
        for role in policy.roles:
            if role in frozen_roles:
                continue
            holders = desired.setdefault(role, {})
            excepted = exceptions.get((policy.name, role), frozenset()) if exceptions else frozenset()
            for user in users - holders.keys() - excepted:
                holders[user] = policy.name
    return desired


def plan_birthright(
    policies: Sequence[PolicySpec],
    members: Mapping[str, Iterable[str]],
    active_users: set[str] | frozenset[str],
    current: Iterable[HeldGrant],
    *,
    frozen_roles: set[str] | frozenset[str] = frozenset(),
    exceptions: Exceptions | None = None,
) -> BirthrightPlan:
    """Desired birthright grants versus ``current`` (active ``birthright`` grants) → what to change.

    ``members`` maps each group to its members' emails; ``active_users`` filters out leavers,
    whose birthright grants are removed. Grants of ``frozen_roles`` are neither added nor removed; a policy's
    ``exceptions`` (an access review's revokes) are removed and not granted again by it.
    The result is sorted, so the same inputs always give the same plan.
    """
    desired = desired_grants(policies, members, active_users, frozen_roles=frozen_roles, exceptions=exceptions)
    plan = BirthrightPlan(frozen_roles=sorted(frozen_roles & {r for p in policies for r in p.roles}))
    held: dict[tuple[str, str], str | None] = {}
    for grant in current:
        key = (grant.user, grant.role)
        if key in held:
            continue  # duplicates of one (user, role) are handled together by the apply step
        held[key] = grant.policy
        policy = desired.get(grant.role, {}).get(grant.user)
        if policy is None:
            if grant.role not in frozen_roles:
                plan.remove.append(PlanItem(grant.user, grant.role, grant.policy or ""))
        elif policy != grant.policy:
            plan.relabel.append(Relabel(grant.user, grant.role, grant.policy, policy))
    for role, holders in desired.items():
        for user, policy in holders.items():
            if (user, role) not in held:
                plan.add.append(PlanItem(user, role, policy))
    plan.add.sort(key=lambda i: (i.role, i.user))
    plan.remove.sort(key=lambda i: (i.role, i.user))
    plan.relabel.sort(key=lambda i: (i.role, i.user))
    return plan


@dataclass
class PlanInputs:
    """Everything ``plan_birthright`` reads, as read from the app DB at one moment."""

    policies: list[PolicySpec]
    members: dict[str, set[str]]
    active_users: set[str]
    current: list[HeldGrant]
    grantable_roles: set[str]
    """Roles in the catalog that the target still has."""
    exceptions: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    """(policy, role) → users the policy no longer grants it to (``BirthrightException``: an access review)."""

    def plan(self, policies: Sequence[PolicySpec] | None = None) -> BirthrightPlan:
        """The plan for these policies (default: the stored ones) against the ledger as read."""
        policies = self.policies if policies is None else policies
        named = {role for policy in policies for role in policy.roles}
        return plan_birthright(
            policies,
            self.members,
            self.active_users,
            self.current,
            frozen_roles=named - self.grantable_roles,
            exceptions=self.exceptions,
        )

    def excepted(self, policies: Sequence[PolicySpec] | None = None) -> list[PlanItem]:
        """The grants these policies would make but for an exception: each active member of a policy's groups
        an access review took one of its roles from (another policy may still grant it: see ``plan``)."""
        policies = self.policies if policies is None else policies
        found: list[PlanItem] = []
        for policy in policies:
            members: set[str] = set()
            for group in policy.groups:
                members |= self.members.get(group, set())
            for role in policy.roles:
                for user in sorted(self.exceptions.get((policy.name, role), set()) & members & self.active_users):
                    found.append(PlanItem(user, role, policy.name))
        return sorted(found, key=lambda i: (i.policy, i.role, i.user))
