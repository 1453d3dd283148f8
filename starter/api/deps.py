"""Request-scoped dependencies: settings, the Temporal client, and who is calling (any user, or an admin).

Routes take these as ``Annotated`` parameters, so that who may call a route reads in its signature. Who is
calling is decided here, once, for the API and the web UI alike, in this order:

1. ``Authorization: Bearer <token>``: the token's owner, within the token's scopes (``starter/api/scopes.py``);
   a token that is not valid is a 401, whatever else the request carries.
2. The ``lapse_session`` cookie: the browser session's user (``starter/services/sessions.py``); never with
   ``LAPSE_AUTH=proxy``, where the proxy alone says who is signed in (someone it locks out is out at once,
   not when a session made before the switch ends).
3. Only with ``LAPSE_AUTH=proxy``, and only from an address in ``LAPSE_TRUSTED_PROXIES``: the
   ``X-Forwarded-Email`` header the SSO proxy sets, exactly once. From anywhere else the header is ignored.

Anyone else is not signed in (401).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPBearer
from temporalio.client import Client

from access.errors import Refusal, RefusalKind
from access.limits import MAX_EMAIL, control_characters
from starter.api.problems import Problem
from starter.api.scopes import ANY, NEEDS_ADMIN, required_scope
from starter.services.audit import refused
from starter.services.authorization import require_active_user, require_admin
from starter.services.recent_sign_in import SignIn
from starter.services.sessions import COOKIE_NAME, SessionInfo, session_user
from starter.services.tokens import Scope, token_user
from store.logs import note_actor
from store.settings import Settings
from store.tables import User


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _client(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


SettingsDep = Annotated[Settings, Depends(_settings)]
ClientDep = Annotated[Client, Depends(_client)]


HEADER = "X-Forwarded-Email"
"""Who is signed in, as the SSO proxy in front of Lapse says (``LAPSE_AUTH=proxy`` only)."""
SESSION_STATE = "lapse_session"
"""``request.state`` key: the session the security middleware already looked up (None: none valid)."""

# Documentation only (the OpenAPI security schemes); the headers and cookie are read in ``identify``.
_bearer = HTTPBearer(auto_error=False, description="An API token (`lapse_…`), made at `POST /api/tokens`.")
_cookie = APIKeyCookie(name=COOKIE_NAME, auto_error=False, description="A browser session, after signing in.")
_proxy = APIKeyHeader(
    name=HEADER, auto_error=False, description="The user's email, set by the SSO proxy (`LAPSE_AUTH=proxy` only)."
)


@dataclass(frozen=True)
class Identity:
    """Who is calling, and how they proved it."""

    user: User
    """The user the call acts as: a token without the ``admin`` scope acts as its owner without admin rights."""
    via: Literal["token", "session", "proxy"]
    scopes: frozenset[Scope] | None = None
    """A token's scopes; None for a session or the proxy's header (everything the user may do)."""
    token_id: str | None = None
    session: SessionInfo | None = None

    @property
    def sign_in(self) -> SignIn:
        """How recently the caller signed in, for the services' sensitive decisions: only a session knows."""
        return SignIn(via=self.via, auth_time=self.session.auth_time if self.session is not None else None)


def _unauthenticated(detail: str, field: str | None = None) -> Problem:
    return Problem(401, f"not signed in: {detail}", field=field)


def trusted_proxy(settings: Settings, host: str | None) -> bool:
    """Whether the proxy's header is believed from a client at ``host``."""
    if settings.auth != "proxy" or not host or not settings.trusted_proxies:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.trusted_proxies)


def proxied_email(request: Request, settings: Settings) -> str | None:
    """The ``X-Forwarded-Email`` header's value, if it is believed: proxy mode, from a trusted proxy, sent exactly
    once (``identify`` refuses a request that carries it twice)."""
    emails = request.headers.getlist(HEADER)
    if len(emails) != 1 or not trusted_proxy(settings, request.client.host if request.client else None):
        return None
    return emails[0]


def lookup_session(request: Request, settings: Settings) -> SessionInfo | None:
    """The live session the request's cookie names, looked up once per request; never one in proxy mode."""
    if settings.auth == "proxy":
        return None
    state = request.scope.setdefault("state", {})
    if SESSION_STATE not in state:
        session_id = request.cookies.get(COOKIE_NAME)
        state[SESSION_STATE] = session_user(settings, session_id) if session_id else None
    found: SessionInfo | None = state[SESSION_STATE]
    return found


def _without_admin(user: User) -> User:
    if not user.is_admin:
        return user
    return User.model_validate({**user.model_dump(), "is_admin": False})


def identify(request: Request, settings: Settings) -> Identity:
    """Who is calling (see the module's docstring for the order); a 401 problem if nobody is."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise _unauthenticated("the Authorization header must be `Bearer <API token>`", "Authorization")
        found = token_user(settings, credentials)
        if found is None:
            raise _unauthenticated(
                "the API token is not valid: unknown, expired or revoked, or its owner is no longer active",
                "Authorization",
            )
        user = found.user if Scope.ADMIN in found.scopes else _without_admin(found.user)
        return Identity(user=user, via="token", scopes=found.scopes, token_id=found.token_id)

    had_cookie = settings.auth != "proxy" and COOKIE_NAME in request.cookies
    session = lookup_session(request, settings)
    if session is not None:
        return Identity(user=session.user, via="session", session=session)

    emails = request.headers.getlist(HEADER)
    email = emails[0] if emails else None
    if email is not None and trusted_proxy(settings, request.client.host if request.client else None):
        if len(emails) != 1:
            raise _unauthenticated(
                f"the request carries {len(emails)} {HEADER} headers: the SSO proxy must send exactly one", HEADER
            )
        return Identity(user=_proxied_user(settings, email), via="proxy")
    if had_cookie:
        raise _unauthenticated("your session has ended (signed out, idle or too old): sign in again")
    if email is not None:
        raise _unauthenticated(
            f"the {HEADER} header is only believed from the SSO proxy (LAPSE_AUTH=proxy, LAPSE_TRUSTED_PROXIES); "
            "sign in, or send an API token",
            HEADER,
        )
    if settings.auth == "proxy":
        raise _unauthenticated(f"the {HEADER} header your SSO proxy sets is missing, and no API token was sent", HEADER)
    raise _unauthenticated("sign in, or send an API token (Authorization: Bearer …)")


def _proxied_user(settings: Settings, header: str) -> User:
    email = header.strip()
    bad = control_characters(email) or set("\t\n,") & set(email)  # a comma: two headers folded into one
    if not email or len(email) > MAX_EMAIL or bad:
        raise _unauthenticated(f"the {HEADER} header is not an email", HEADER)
    user = require_active_user(settings, email, field=HEADER)
    if user.is_service:
        raise Refusal(
            RefusalKind.UNAUTHENTICATED,
            f"{user.email} is a service account: it signs in with API tokens only",
            field=HEADER,
        )
    return user


def _identity(
    request: Request,
    settings: SettingsDep,
    _b: Annotated[object, Depends(_bearer)] = None,
    _c: Annotated[object, Depends(_cookie)] = None,
    _p: Annotated[object, Depends(_proxy)] = None,
) -> Identity:
    identity = identify(request, settings)
    note_actor(identity.user.email)  # the request's remaining log lines name its caller
    if identity.scopes is not None:
        _check_scope(request, settings, identity)
    return identity


def _check_scope(request: Request, settings: Settings, identity: Identity) -> None:
    route = request.scope.get("route")
    what = f"{request.method} {route.path_format if isinstance(route, APIRoute) else request.url.path}"
    needed = required_scope(route, request.method) if isinstance(route, APIRoute) else None
    assert identity.scopes is not None
    if needed == ANY or (needed is not None and needed in identity.scopes):
        return
    if needed is None:
        refusal = Refusal(RefusalKind.FORBIDDEN, f"an API token cannot be used for {what}: sign in to do this")
    else:
        held = ", ".join(sorted(s.value for s in identity.scopes))
        refusal = Refusal(
            RefusalKind.FORBIDDEN, f"this API token's scopes ({held}) do not include {needed.value}, which {what} needs"
        )
    raise refused(settings, identity.user.email, "token.use", f"token:{identity.token_id}", refusal)


CallerIdentity = Annotated[Identity, Depends(_identity)]
"""Who is calling and how (a token, a session, the proxy's header)."""


def _caller(identity: CallerIdentity) -> User:
    return identity.user


CurrentUser = Annotated[User, Depends(_caller)]
"""The signed-in, active Lapse user calling (401 otherwise)."""


def _sign_in(identity: CallerIdentity) -> SignIn:
    return identity.sign_in


CallerSignIn = Annotated[SignIn, Depends(_sign_in)]
"""How the caller signed in (a session and its ``auth_time``, a token, the proxy's header): the services need it
for a decision whose workflow asks for a recent sign-in (``reauthenticate_within``)."""


def _admin(user: CurrentUser, _: Annotated[None, Depends(NEEDS_ADMIN)]) -> User:
    return require_admin(user)


AdminUser = Annotated[User, Depends(_admin)]
"""The caller, who must be an admin (403 otherwise); a token needs the ``admin`` scope."""
