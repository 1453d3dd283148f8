"""Request-scoped dependencies: settings, the Temporal client, and the caller (any user, or an admin).

Routes take these as ``Annotated`` parameters, so that who may call a route reads in its signature.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from temporalio.client import Client

from access.limits import MAX_EMAIL, control_characters
from starter.api.problems import Problem
from starter.services.authorization import require_active_user, require_admin
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
"""Who is signed in: set by the SSO proxy in front of Lapse."""


def _caller(
    settings: SettingsDep,
    x_forwarded_email: Annotated[
        str | None, Header(description="The signed-in user's email, set by the SSO proxy in front of Lapse.")
    ] = None,
) -> User:
    if not x_forwarded_email:
        raise Problem(401, "not signed in: the X-Forwarded-Email header is missing", field=HEADER)
    email = x_forwarded_email.strip()
    bad = control_characters(email) or set("\t\n") & set(email)
    if len(email) > MAX_EMAIL or bad:
        raise Problem(401, "not signed in: the X-Forwarded-Email header is not an email", field=HEADER)
    return require_active_user(settings, email, field=HEADER)


CurrentUser = Annotated[User, Depends(_caller)]
"""The signed-in, active Lapse user calling (401 otherwise)."""


def _admin(user: CurrentUser) -> User:
    return require_admin(user)


AdminUser = Annotated[User, Depends(_admin)]
"""The caller, who must be an admin (403 otherwise)."""
