"""Who may do what: the checks every caller (the API, the CLI's server side, the web UI) goes through.

First who is calling (``require_active_user``: a known, active Lapse user), then what they may do:
every admin-only service function calls ``require_admin`` on its caller before anything else, so it
refuses a non-admin whichever way it is reached, not only through the API's ``AdminUser`` dependency.
"""

from __future__ import annotations

from access.errors import Refusal, RefusalKind
from access.requests import RequestStatus
from store import catalog
from store.db import session_scope
from store.settings import Settings
from store.tables import User


def require_active_user(settings: Settings, email: str, *, field: str | None = None) -> User:
    """The Lapse user signed in as ``email`` (compared case-insensitively), if Lapse knows them and they are
    active (a leaver is made inactive, and can no longer sign in); else a refusal naming ``field``, the
    input the email came from (the API's ``X-Forwarded-Email`` header)."""
    email = email.strip().lower()  # emails are kept, and compared, in lower case
    with session_scope(settings.db_url, write=False) as session:
        user = catalog.find_user(session, email)
    if user is None or not user.active:
        raise Refusal(RefusalKind.UNAUTHENTICATED, f"{email} is not an active Lapse user", field=field)
    return user


def require_admin(user: User) -> User:
    """The user, if an admin; else a refusal."""
    if not user.is_admin:
        raise Refusal(RefusalKind.FORBIDDEN, "only admins can do this")
    return user


def require_request_reader(user: User, status: RequestStatus) -> None:
    """A request is seen by its requester, anyone eligible for one of its steps (its extensions' too), an emergency
    grant's reviewers and those told of it, and admins: the status names who may approve, which is nobody else's
    business."""
    approvers = {p for step in status.steps for p in step.eligible}
    approvers |= {p for ext in status.extensions for step in ext.steps for p in step.eligible}
    if status.break_glass is not None:  # an emergency grant: those told of it and those who review it
        approvers |= {*status.break_glass.reviewers, *status.break_glass.notify}
    if not (user.is_admin or user.email == status.requester or user.email in approvers):
        raise Refusal(RefusalKind.FORBIDDEN, "only the requester, its approvers and admins can see this request")
