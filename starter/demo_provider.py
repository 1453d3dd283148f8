"""The local OpenID provider of the demo: ``lapse run`` starts it when sign-in is OIDC and no issuer is set.

It is ``oidc-provider-mock``, a real provider (discovery, authorization code, signed ID tokens, JWKS,
RP-initiated logout) whose authorization form lets you pick any user, without a password: so the demo, and the
tests that sign in through it, go through the same sign-in code as production. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from sqlmodel import col, select
from werkzeug.debug import DebuggedApplication
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from store.db import session_scope
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
        import oidc_provider_mock

    app = oidc_provider_mock.app(
        require_nonce=True,
        user_claims=[oidc_provider_mock.User(sub=user.email, claims=user.claims()) for user in users],
    )
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
