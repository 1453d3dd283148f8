"""Which token scope each route needs: the one place that says it, for the API and the web UI alike.

A route's scope is, in this order: its entry in ``ROUTE_SCOPES``; else a ``NeedsScope`` among its dependencies
(``AdminUser`` carries ``admin``); else ``read`` for ``GET`` and ``HEAD``; else none, and no token may call it
(a route that changes something must say which scope it needs). Browser sessions and the proxy's header are
not limited by scope: they are their user, with all their rights. A scope never adds a right: the services
check the owner's own rights on every call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from starter.services.tokens import Scope

ANY: Literal["any"] = "any"
"""Any valid token, whatever its scopes (who am I; revoking itself)."""
NO_TOKEN: None = None
"""No token at all: only a browser session or the proxy's header (making new tokens)."""

Needed = Scope | Literal["any"] | None

ROUTE_SCOPES: dict[tuple[str, str], Needed] = {
    # The API: requesting, and acting on one's own requests.
    ("POST", "/api/requests"): Scope.REQUEST,
    ("POST", "/api/requests/{request_id}/cancel"): Scope.REQUEST,
    ("POST", "/api/requests/{request_id}/extend"): Scope.REQUEST,
    ("POST", "/api/requests/{request_id}/revoke"): Scope.REQUEST,
    ("POST", "/api/requests/{request_id}/credentials"): Scope.REQUEST,
    # Deciding.
    ("POST", "/api/requests/{request_id}/approve"): Scope.APPROVE,
    ("POST", "/api/requests/{request_id}/deny"): Scope.APPROVE,
    # Reviewing (access review campaigns): deciding, as approving is.
    ("POST", "/api/reviews/items/draft"): Scope.APPROVE,
    ("POST", "/api/reviews/items/submit"): Scope.APPROVE,
    ("POST", "/api/reviews/items/{item_id}/reassign"): Scope.APPROVE,
    # Reviewing an emergency (break-glass) grant afterwards: deciding, as approving is.
    ("POST", "/api/requests/{request_id}/break-glass-review"): Scope.APPROVE,
    # Tokens: a token cannot make tokens (a stolen one must not outlive itself), and may revoke itself.
    ("GET", "/api/me"): ANY,
    ("POST", "/api/tokens"): NO_TOKEN,
    ("DELETE", "/api/tokens/{token_id}"): ANY,
    ("POST", "/api/service-accounts/{email}/tokens"): NO_TOKEN,
    # Notifications: your own channels, as your own requests are yours (the organisation's: AdminUser).
    ("PUT", "/api/me/notifications"): Scope.REQUEST,
    # The web UI's forms.
    ("POST", "/requests/preview"): Scope.READ,  # a dry run of the policy: nothing starts
    ("POST", "/requests"): Scope.REQUEST,
    ("POST", "/access/{request_id}/extend"): Scope.REQUEST,
    ("POST", "/access/{request_id}/give-back"): Scope.REQUEST,
    ("POST", "/access/{request_id}/cancel"): Scope.REQUEST,
    ("POST", "/access/{request_id}/credentials"): Scope.REQUEST,
    ("POST", "/approvals/{request_id}"): Scope.APPROVE,
    ("POST", "/requests/{request_id}/break-glass-review"): Scope.APPROVE,
    ("POST", "/reviews/decide"): Scope.APPROVE,
    ("POST", "/reviews/submit"): Scope.APPROVE,
    ("POST", "/reviews/items/{item_id}/reassign"): Scope.APPROVE,
    ("POST", "/tokens"): NO_TOKEN,  # the API tokens page: as POST /api/tokens
    ("POST", "/notifications"): Scope.REQUEST,  # your channels: as PUT /api/me/notifications
    ("POST", "/admin/service-accounts/{email}/tokens"): NO_TOKEN,
    ("POST", "/device"): NO_TOKEN,  # approving the CLI's sign-in makes a token: a person in a browser only
}


class NeedsScope:
    """A dependency that marks a route as needing ``scope`` from a token (it does nothing when called)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def __call__(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"NeedsScope({self.scope.value})"


NEEDS_ADMIN = NeedsScope(Scope.ADMIN)


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for dependency in dependant.dependencies:
        yield dependency
        yield from _dependencies(dependency)


def required_scope(route: APIRoute, method: str) -> Needed:
    """The scope a token needs to call ``route`` with ``method`` (``ANY``, or ``NO_TOKEN``: None)."""
    method = method.upper()
    if (method, route.path_format) in ROUTE_SCOPES:
        return ROUTE_SCOPES[(method, route.path_format)]
    declared = [d.call.scope for d in _dependencies(route.dependant) if isinstance(d.call, NeedsScope)]
    if declared:
        return Scope.ADMIN if Scope.ADMIN in declared else declared[0]
    if method in ("GET", "HEAD"):
        return Scope.READ
    return NO_TOKEN
