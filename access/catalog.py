"""Reading the catalog and the organisation from the app DB into the policy's plain types."""

from __future__ import annotations

from sqlmodel import Session, col, select

from access.tables import (
    ApprovalAssignment,
    ApprovalWorkflow,
    Group,
    Membership,
    Resource,
    Role,
    RoleOwner,
    User,
)
from access.types import ApprovalPolicy, ApproverKind, PolicyContext, Requester, RoleFacts


def find_user(session: Session, email: str) -> User | None:
    return session.exec(select(User).where(User.email == email.strip().lower())).first()


def find_role(session: Session, path: str) -> Role | None:
    return session.exec(select(Role).where(Role.path == path.strip())).first()


def groups_of(session: Session, user: User) -> list[str]:
    rows = session.exec(select(Group.name).join(Membership).where(Membership.user_id == user.id).order_by(Group.name))
    return list(rows)


def active_members(session: Session, group: str) -> list[str]:
    rows = session.exec(
        select(User.email)
        .join(Membership)
        .join(Group)
        .where(Group.name == group, col(User.active).is_(True))
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
    return ApprovalPolicy(name=workflow.name, description=workflow.description, rules=workflow.rules)  # type: ignore[arg-type]


def policy_context(session: Session, requester: User, role: Role, policy: ApprovalPolicy | None) -> PolicyContext:
    """Everything ``evaluate_policy`` needs to know about this requester and role, as of now."""
    manager = find_user(session, requester.manager_email) if requester.manager_email else None
    named_groups = {
        approver.name
        for rule in (policy.rules if policy else [])
        for step in rule.steps
        for approver in step.approvers
        if approver.kind is ApproverKind.GROUP and approver.name
    }
    return PolicyContext(
        requester=Requester(
            email=requester.email,
            manager=manager.email if manager and manager.active else None,
            groups=groups_of(session, requester),
        ),
        role=RoleFacts(path=role.path, owners=role_owners(session, role), sensitivity=role.sensitivity),  # type: ignore[arg-type]
        group_members={group: active_members(session, group) for group in sorted(named_groups)},
    )
