"""The local OpenID provider of the demo: ``lapse run`` starts it when sign-in is OIDC and no issuer is set, for
the bundled demo organisation served on this machine only (``demo_refused`` says why not otherwise).

It is ``oidc-provider-mock``, a real provider (discovery, authorization code, signed ID tokens, JWKS,
RP-initiated logout) whose authorization form lets you pick any user, without a password: so the demo, and the
tests that sign in through it, go through the same sign-in code as production. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import ipaddress
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from sqlmodel import col, select
from werkzeug.debug import DebuggedApplication
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from store.db import session_scope
from store.org import DEMO_ORG
from store.settings import Settings
from store.tables import User

HOST = "127.0.0.1"
CLIENT_ID = "lapse-demo"
"""The demo provider takes any client id and secret (a confidential client: it takes no public one)."""
CLIENT_SECRET_ENV = "LAPSE_DEMO_OIDC_CLIENT_SECRET"
"""Where ``lapse run`` puts the random secret the API then resolves like any client secret."""


@dataclass(frozen=True)
class DemoUser:
    email: str
    name: str = ""

    def claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = {"email": self.email, "email_verified": True}
        if self.name:
            claims["name"] = self.name
        return claims


@dataclass(frozen=True)
class DemoProvider:
    url: str
    """Its issuer URL (``http://127.0.0.1:<port>``)."""
    server: BaseWSGIServer

    def register(self, users: Iterable[DemoUser]) -> None:
        """Add (or change) users the provider can sign in, their ``sub`` their email (``PUT /users/{sub}``)."""
        with httpx.Client(base_url=self.url, timeout=10) as http:
            for user in users:
                http.put(f"/users/{quote(user.email, safe='')}", json=user.claims()).raise_for_status()


class _Quiet(WSGIRequestHandler):
    """No access log on the terminal (its lines would carry sign-in codes); errors are still reported."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@contextmanager
def demo_provider(users: Iterable[DemoUser] = (), *, port: int = 0) -> Iterator[DemoProvider]:
    """Run the provider on ``127.0.0.1:port`` (0: a free port) in a thread, with ``users`` on its form."""
    with warnings.catch_warnings():  # it imports parts of authlib that authlib has deprecated
        import authlib.deprecate  # whose import puts an "always show" filter first: ours goes before it

        warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
        import flask
        import oidc_provider_mock

    app = oidc_provider_mock.app(
        require_nonce=True,
        user_claims=[oidc_provider_mock.User(sub=user.email, claims=user.claims()) for user in users],
    )

    def verified_when_typed_in() -> None:
        """Someone typed in the form's box (a person added since the provider started) is vouched for like those on
        it, ``email_verified`` included (Lapse requires it of the ``email`` claim); the provider itself would
        give them their email alone. Runs after the provider puts its storage in ``flask.g``."""
        request = flask.request
        sub = request.form.get("sub") if request.method == "POST" and request.path == "/oauth2/authorize" else None
        storage = getattr(flask.g, "oidc_provider_mock_storage", None)
        if sub and storage is not None and storage.get_user(sub) is None:
            storage.store_user(oidc_provider_mock.User(sub=sub, claims=DemoUser(email=sub).claims()))

    app.before_request(verified_when_typed_in)
    # It runs Flask in debug mode behind Werkzeug's interactive debugger: neither belongs on a listening port.
    if isinstance(app.wsgi_app, DebuggedApplication):
        app.wsgi_app = app.wsgi_app.app
    app.debug = False
    server = make_server(HOST, port, app, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.name = "demo-oidc-provider"
    thread.start()
    try:
        yield DemoProvider(url=f"http://{HOST}:{server.server_port}", server=server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def demo_users(settings: Settings) -> list[DemoUser]:
    """The people of the app DB who can sign in (active, not service accounts), for the provider's form."""
    with session_scope(settings.db_url, write=False) as session:
        users = session.exec(select(User).where(col(User.active)).order_by(col(User.email))).all()
        return [DemoUser(email=user.email, name=user.name) for user in users if not user.is_service]


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def demo_refused(settings: Settings) -> str | None:
    """Why the passwordless demo provider must not sign anyone in to this Lapse (None: it may). It lets whoever
    opens its form be anyone, so only for the bundled demo organisation (no ``LAPSE_ORG_FILE``, or the demo's
    own) served on this machine alone (the API host and the public URL on the loopback)."""
    why = []
    if settings.org_file is not None and settings.org_file.resolve() != DEMO_ORG.resolve():
        why.append(f"the organisation is {settings.org_file} (LAPSE_ORG_FILE), not the bundled demo")
    public_host = urlsplit(settings.external_url).hostname
    if not _loopback(settings.api_host):
        why.append(f"the API listens on {settings.api_host} (LAPSE_API_HOST), not only on this machine")
    elif not _loopback(public_host):
        why.append(f"people reach it at {settings.external_url} (LAPSE_PUBLIC_URL), not on this machine")
    if not why:
        return None
    return (
        "no identity provider is configured, and the demo's (anyone may sign in as anyone, with no password) "
        f"serves only the bundled demo organisation on this machine: {'; '.join(why)}. Set LAPSE_OIDC_ISSUER and "
        "LAPSE_OIDC_CLIENT_ID (and the client secret's reference) to sign in through your identity provider, or "
        "LAPSE_AUTH=proxy with LAPSE_TRUSTED_PROXIES behind an SSO proxy"
    )
