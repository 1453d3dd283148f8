"""Who may do what: the checks every caller (the API, the CLI's server side, the web UI) goes through."""

from __future__ import annotations

from access.errors import Refusal, RefusalKind
from access.requests import RequestStatus
from store.tables import User


def require_admin(user: User) -> User:
    """The user, if an admin; else a refusal."""
    if not user.is_admin:
        raise Refusal(RefusalKind.FORBIDDEN, "only admins can do this")
    return user


def require_request_reader(user: User, status: RequestStatus) -> None:
    """A request is seen by its requester, anyone eligible for one of its steps (its extensions' too), and
    admins: the status names who may approve, which is nobody else's business."""
    approvers = {p for step in status.steps for p in step.eligible}
    approvers |= {p for ext in status.extensions for step in ext.steps for p in step.eligible}
    if not (user.is_admin or user.email == status.requester or user.email in approvers):
        raise Refusal(RefusalKind.FORBIDDEN, "only the requester, its approvers and admins can see this request")
