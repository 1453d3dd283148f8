"""A recent sign-in for sensitive decisions: under an approval workflow that says ``reauthenticate_within``,
approving a request or its extension, asking for an extension (or for a role the policy grants at once, which is
one in effect: grants may overlap), and ending someone else's request or grant need a sign-in at the identity
provider at most that long ago.

The API and the pages say how the caller signed in (a ``SignIn``, from ``starter.api.deps``); the services check it
here, before the workflow is sent anything, and audit a refusal like any other. Only a browser session started by
Lapse's own OIDC sign-in knows when its person last authenticated (the provider's ``auth_time``): an older one is
sent back to the provider with ``max_age`` and returns to the request's page. An API token, or the SSO proxy's
header (Lapse cannot tell when the proxy's user signed in), never vouches for a recent sign-in.

Reducing access needs no fresh sign-in: denying, a requester withdrawing their own request or giving back their
own access.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import urlencode

from access import names
from access.durations import format_duration
from access.errors import Refusal, RefusalKind
from access.requests import RequestStatus
from access.types import RequestPlan
from starter.services.audit import refused
from store.settings import Settings
from store.tables import User

SIGN_IN_PATH = "/auth/login"
"""Where a browser signs in again (``starter/web/routes/auth.py``): ``max_age`` and ``next`` go with it."""


@dataclass(frozen=True)
class SignIn:
    """How the caller proved who they are, as far as a sensitive decision needs to know."""

    via: Literal["session", "token", "proxy", "chat"]
    """``chat``: a button in a chat message (Slack), which vouches for who clicked and never for when they signed in."""
    auth_time: datetime | None = None
    """When the identity provider last authenticated the person (a session's); None: unknown, or not a session."""

    def within(self, window: timedelta, *, now: datetime) -> bool:
        """Whether this is a browser session whose person authenticated at most ``window`` before ``now``."""
        return self.via == "session" and self.auth_time is not None and now - self.auth_time <= window


def reauthenticate_url(window: timedelta, come_back: str) -> str:
    """Lapse's sign-in, asking the provider for an authentication at most ``window`` old, then back to
    ``come_back`` (one of Lapse's own paths)."""
    return f"{SIGN_IN_PATH}?{urlencode({'max_age': int(window.total_seconds()), 'next': come_back})}"


def require_recent_sign_in(
    settings: Settings,
    sign_in: SignIn,
    actor: User,
    status: RequestStatus,
    *,
    action: str,
    doing: str,
    plan: RequestPlan | None = None,
) -> None:
    """Refuse (audited as ``<action>.refused``) ``doing`` on ``status``'s request unless its workflow asks for no
    recent sign-in or ``sign_in`` is recent enough; ``doing`` says what, for the message (``approving …``).
    ``plan``, the policy's plan now (an extension's), asks for its own window too where it is the stricter: a
    workflow made stricter since binds the grants it already covers the moment they ask for more."""
    window, policy = status.reauthenticate_within, status.policy
    now = plan.reauthenticate_within if plan is not None else None
    if plan is not None and now is not None and (window is None or now < window):
        window, policy = now, plan.policy
    target = names.request_workflow_id(status.id)
    require_recent(
        settings,
        sign_in,
        actor,
        window,
        policy=policy,
        page=f"/requests/{status.id}",
        doing=doing,
        action=action,
        target=target,
    )


def require_recent(
    settings: Settings,
    sign_in: SignIn,
    actor: User,
    window: timedelta | None,
    *,
    policy: str,
    page: str,
    doing: str,
    action: str,
    target: str,
) -> None:
    """Refuse (audited as ``<action>.refused`` on ``target``) ``doing`` unless ``window`` is None or ``sign_in`` is
    at most that old; ``policy`` is the approval workflow asking, ``page`` where to come back to (do it again)."""
    if window is None or sign_in.within(window, now=datetime.now(UTC)):
        return
    raise refused(settings, actor.email, action, target, _refusal(sign_in, window, policy, page, doing))


def require_recent_to_request(
    settings: Settings, sign_in: SignIn, requester: User, plan: RequestPlan, role: str
) -> None:
    """A new request the policy approves at once (no steps) under a workflow that says ``reauthenticate_within``
    needs a sign-in that recent: grants may overlap, so it is an extension in effect, and asking for one does."""
    if plan.steps or plan.reauthenticate_within is None:
        return
    role = role.strip()
    require_recent(
        settings,
        sign_in,
        requester,
        plan.reauthenticate_within,
        policy=plan.policy,
        page=f"/?{urlencode({'role': role})}",  # the catalog's form, the role chosen
        doing=f"requesting {role} (approved at once)",
        action="request.create",
        target=role,
    )


def _refusal(sign_in: SignIn, window: timedelta, policy: str, page: str, doing: str) -> Refusal:
    asks = f"approval workflow {policy!r} asks for a sign-in at most {format_duration(window)} old"
    if sign_in.via == "token":
        return Refusal(
            RefusalKind.FORBIDDEN,
            f"{doing} needs a recent browser sign-in ({asks}, reauthenticate_within), which an API token cannot "
            f"vouch for: do it in the web UI, on {page}",
        )
    if sign_in.via == "chat":
        return Refusal(
            RefusalKind.FORBIDDEN,
            f"{doing} needs a recent sign-in ({asks}, reauthenticate_within), which a chat button cannot vouch for: "
            f"do it in the web UI, on {page}",
        )
    if sign_in.via == "proxy":
        return Refusal(
            RefusalKind.FORBIDDEN,
            f"{doing} needs a recent browser sign-in ({asks}, reauthenticate_within), and Lapse cannot tell when "
            "the SSO proxy's user signed in (LAPSE_AUTH=proxy): under this workflow it can be done only where "
            "people sign in to Lapse through OIDC",
        )
    url = reauthenticate_url(window, page)
    return Refusal(
        RefusalKind.REAUTHENTICATE,
        f"{doing} needs a recent sign-in ({asks}, reauthenticate_within) and yours is older: sign in again at "
        f"{url}, then do it again",
        extra={"reauthenticate_url": url, "max_age": int(window.total_seconds())},
    )
