"""Request-scoped dependencies: settings, the Temporal client, and the caller (any user, or an admin).

Routes take these as ``Annotated`` parameters, so that who may call a route reads in its signature.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from temporalio.client import Client

from access.limits import MAX_EMAIL, control_characters
from starter.api.problems import Problem
from starter.services.authorization import require_admin
from store import catalog
from store.db import session_scope
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


def _caller(
    settings: SettingsDep,
    x_forwarded_email: Annotated[
        str | None, Header(description="The signed-in user's email, set by the SSO proxy in front of Lapse.")
    ] = None,
) -> User:
    if not x_forwarded_email:
        raise Problem(401, "not signed in: the X-Forwarded-Email header is missing", field="X-Forwarded-Email")
    # Emails compare case-insensitively: the caller is looked up (and named) in lower case.
    x_forwarded_email = x_forwarded_email.strip().lower()
    bad = control_characters(x_forwarded_email) or set("\t\n") & set(x_forwarded_email)
    if len(x_forwarded_email) > MAX_EMAIL or bad:
        raise Problem(401, "not signed in: the X-Forwarded-Email header is not an email", field="X-Forwarded-Email")
    with session_scope(settings.db_url, write=False) as session:
        user = catalog.find_user(session, x_forwarded_email)
    if user is None or not user.active:
        raise Problem(401, f"{x_forwarded_email} is not an active Lapse user", field="X-Forwarded-Email")
    return user


CurrentUser = Annotated[User, Depends(_caller)]
"""The signed-in, active Lapse user calling (401 otherwise)."""


def _admin(user: CurrentUser) -> User:
    return require_admin(user)


AdminUser = Annotated[User, Depends(_admin)]
"""The caller, who must be an admin (403 otherwise)."""
