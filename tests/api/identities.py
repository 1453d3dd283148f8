"""Callers for the sign-in tests: a browser session, an API token, the proxy's header; and an app with no
Temporal behind it, for what must be decided before any workflow is reached."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from temporalio.service import RPCError, RPCStatusCode

from starter.api.app import create_app
from starter.api.security import proxy_csrf_token
from starter.services import sessions, tokens
from store import catalog
from store.db import session_scope
from store.settings import Settings
from tests.conftest import make_settings

BASE_URL = "http://lapse.test"


class NoTemporal:
    """A Temporal client that is never reachable: a call that gets as far as a workflow is a 503."""

    def __getattr__(self, name: str) -> Any:
        raise RPCError("no Temporal behind this test's API", RPCStatusCode.UNAVAILABLE, b"")


def offline_settings(tmp_path: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    """The demo organisation in a fresh app DB, signing in through OIDC (the default) unless told otherwise."""
    return make_settings(tmp_path, "127.0.0.1:1", database_url=database_url, **{"auth": "oidc", **overrides})


def offline_app(settings: Settings) -> FastAPI:
    return create_app(settings, client=NoTemporal())  # type: ignore[arg-type]


def client(app: FastAPI, *, address: str = "127.0.0.1", base_url: str = BASE_URL) -> httpx.AsyncClient:
    """An HTTP client to ``app`` whose requests come from ``address``."""
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


@dataclass
class Caller:
    """What a caller adds to each request: cookies and headers."""

    name: str
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)

    async def call(self, http: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        http.cookies.clear()
        for name, value in self.cookies.items():
            http.cookies.set(name, value)
        try:
            return await http.request(method, path, headers=headers, **kwargs)
        finally:
            http.cookies.clear()


def session_caller(settings: Settings, email: str, *, name: str | None = None) -> Caller:
    """A browser signed in as ``email``: the session cookie, and the CSRF token its pages would send."""
    started = sessions.start_session(settings, email, auth_time=datetime.now(UTC))
    return Caller(
        name or f"session:{email}",
        headers={"X-CSRF-Token": started.csrf_token},
        cookies={sessions.COOKIE_NAME: started.id},
    )


def mint(settings: Settings, email: str, *scopes: str, expires_in: int | None = None, name: str = "test") -> str:
    """A new token of ``email``'s with these scopes (through the service, as ``POST /api/tokens`` does)."""
    with session_scope(settings.db_url, write=False) as session:
        owner = catalog.find_user(session, email)
    assert owner is not None
    body = tokens.TokenCreate(name=name, scopes=[tokens.Scope(s) for s in scopes], expires_in=expires_in)
    return tokens.create_token(settings, owner, body).token


def token_caller(token: str, name: str = "token") -> Caller:
    return Caller(name, headers={"Authorization": f"Bearer {token}"})


def proxy_caller(email: str, settings: Settings | None = None) -> Caller:
    """A browser behind the SSO proxy, which names it in ``X-Forwarded-Email``; with ``settings``, it sends the
    CSRF token its pages would (``proxy_csrf_token``) as well."""
    headers = {"X-Forwarded-Email": email}
    if settings is not None:
        headers["X-CSRF-Token"] = proxy_csrf_token(settings, email)
    return Caller(f"proxy:{email}", headers=headers)
