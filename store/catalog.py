"""Reading the catalog and the organisation from the app DB into the policy's plain types."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from access.birthright import HeldGrant, PlanInputs, PolicySpec
from access.grants import GrantPath
from access.on_call import is_provider_ref
from access.types import ApprovalPolicy, ApproverKind, PolicyContext, Requester, RoleFacts
from store import groups
from store.tables import (
    ApprovalAssignment,
    ApprovalWorkflow,
    BirthrightException,
    BirthrightPolicy,
    Grant,
    Group,
    Membership,
    Resource,
    Role,
    RoleOwner,
    User,
)


def find_user(session: Session, email: str) -> User | None:
    return session.exec(select(User).where(User.email == email.strip().lower())).first()


def find_role(session: Session, path: str) -> Role | None:
    return session.exec(select(Role).where(Role.path == path.strip())).first()


def groups_of(session: Session, user: User) -> list[str]:
    """The user's groups as shown: ``name`` for the organisation file's, ``source:name`` for a directory's."""
    return sorted(group_ids_of(session, user).values())


def group_ids_of(session: Session, user: User) -> dict[int, str]:
    """The user's groups: id → how the group is shown (``name`` for the file's, ``source:name`` otherwise)."""
    rows = session.execute(
        sa_select(col(Group.id), col(Group.source), col(Group.name))
        .join(Membership, col(Membership.group_id) == Group.id)
        .where(col(Membership.user_id) == user.id)
    )
    return {group_id: groups.display(source, name) for group_id, source, name in rows}


def active_members(session: Session, group_id: int) -> list[str]:
    """The active members of one group (by id: a name may be several sources' groups)."""
    rows = session.exec(
        select(User.email)
        .join(Membership)
        .where(Membership.group_id == group_id, col(User.active).is_(True))
        .order_by(User.email)
    )
    return list(rows)


def role_owners(session: Session, role: Role) -> list[str]:
    rows = session.exec(
        select(User.email)
        .join(RoleOwner)
        .where(RoleOwner.role_id == role.id, col(User.active).is_(True))
        .order_by(User.email)
    )
    return list(rows)


def policy_for(session: Session, role: Role) -> ApprovalPolicy | None:
    """The approval workflow assigned most specifically: role, then resource, then integration."""
    resource = session.get(Resource, role.resource_id)
    assert resource is not None
    assignments = session.exec(
        select(ApprovalAssignment).where(ApprovalAssignment.integration_id == resource.integration_id)
    ).all()

    def specificity(a: ApprovalAssignment) -> int:
        if a.role_id is not None:
            return 3 if a.role_id == role.id else -1
        if a.resource_id is not None:
            return 2 if a.resource_id == resource.id else -1
        return 1

    applicable = [a for a in assignments if specificity(a) > 0]
    if not applicable:
        return None
    chosen = max(applicable, key=specificity)
    workflow = session.get(ApprovalWorkflow, chosen.approval_workflow_id)
    assert workflow is not None
    return ApprovalPolicy(
        name=workflow.name,
        description=workflow.description,
        rules=workflow.rules,  # type: ignore[arg-type]
        reauthenticate_within=workflow.reauthenticate_seconds,  # type: ignore[arg-type]
    )


def policy_context(session: Session, requester: User, role: Role, policy: ApprovalPolicy | None) -> PolicyContext:
    """Everything ``evaluate_policy`` needs to know about this requester and role, as of now, but who is on
    call at PagerDuty or Opsgenie: read over HTTP, it is added by ``activities.oncall.on_call_context``."""
    manager = find_user(session, requester.manager_email) if requester.manager_email else None
    approvers = [  # a step's fallback approvers too: the step resolves them when it escalates
        approver
        for rule in (policy.rules if policy else [])
        for step in rule.steps
        for approver in step.approvers + step.escalate_to
    ]
    named_groups = {a.name for a in approvers if a.kind is ApproverKind.GROUP and a.name}
    named_users = {a.name for a in approvers if a.kind is ApproverKind.USER and a.name}
    inactive = session.exec(
        select(User.email).where(col(User.email).in_(sorted(named_users)), col(User.active).is_(False))
    )
    # The policy names groups by reference; each names one group of one source, or nobody (unknown or
    # ambiguous). The requester is "in" a reference only through that very group, never a namesake, so
    # ``Requester.groups`` holds the policy's references the requester meets (what the conditions compare).
    # A ``when.on_call`` reference to PagerDuty or Opsgenie is no group: the caller asks the provider
    # (``activities.oncall.on_call_context``) and sets ``Requester.on_call``.
    conditions = {
        ref
        for rule in (policy.rules if policy else [])
        for ref in rule.when.groups + [r for r in rule.when.on_call if not is_provider_ref(r)]
    }
    resolved = groups.resolve(session, named_groups | conditions)
    held = group_ids_of(session, requester)
    matched = {ref for ref, group_id in resolved.items() if group_id in held}
    return PolicyContext(
        requester=Requester(
            email=requester.email,
            manager=manager.email if manager and manager.active else None,
            groups=sorted(matched),
        ),
        role=RoleFacts(path=role.path, owners=role_owners(session, role), sensitivity=role.sensitivity),  # type: ignore[arg-type]
        group_members={
            ref: active_members(session, resolved[ref]) if ref in resolved else [] for ref in sorted(named_groups)
        },
        inactive=sorted(inactive),
    )


def birthright_inputs(session: Session, also: Iterable[str] = ()) -> PlanInputs:
    """Policies, group members, active users, active birthright grants and grantable roles, as of now.

    Members are keyed by the group references the policies use (and ``also``: a preview's changed policies').

    Plain column reads (no ORM objects): at 50,000 users these are hundreds of thousands of rows.
    """
    policies = [
        PolicySpec(name=p.name, groups=list(p.groups), roles=list(p.roles))
        for p in session.exec(
            select(BirthrightPolicy).order_by(col(BirthrightPolicy.position), col(BirthrightPolicy.id))
        )
    ]
    # Policies name groups by reference: members are keyed by the reference, through the one group it names.
    resolved = groups.resolve(session, {ref for policy in policies for ref in policy.groups} | set(also))
    by_id: dict[int, set[str]] = {}
    if resolved:
        for group_id, email in session.execute(
            sa_select(col(Membership.group_id), col(User.email))
            .join(User, col(User.id) == Membership.user_id)
            .where(col(Membership.group_id).in_(sorted(set(resolved.values()))))
        ):
            by_id.setdefault(group_id, set()).add(email)
    members = {ref: set(by_id.get(group_id, set())) for ref, group_id in resolved.items()}
    active = set(session.execute(sa_select(col(User.email)).where(col(User.active).is_(True))).scalars())
    current = [
        HeldGrant(user=user, role=role, policy=policy)
        for user, role, policy in session.execute(
            sa_select(col(Grant.user_email), col(Grant.role), col(Grant.policy)).where(
                col(Grant.path) == GrantPath.BIRTHRIGHT, col(Grant.active).is_(True), col(Grant.user_email).is_not(None)
            )
        )
    ]
    grantable = set(session.execute(sa_select(col(Role.path)).where(col(Role.missing).is_(False))).scalars())
    exceptions: dict[tuple[str, str], set[str]] = {}
    for policy, user, role in session.execute(
        sa_select(col(BirthrightException.policy), col(BirthrightException.user_email), col(BirthrightException.role))
    ):
        exceptions.setdefault((policy, role), set()).add(user)
    return PlanInputs(
        policies=policies,
        members=members,
        active_users=active,
        current=current,
        grantable_roles=grantable,
        exceptions=exceptions,
    )
