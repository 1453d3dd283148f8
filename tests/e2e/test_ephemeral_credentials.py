"""Ephemeral credentials on a real PostgreSQL: a login per grant, shown once, valid until the expiry, dropped."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import psycopg
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.testing import WorkflowEnvironment

from access import names
from harness.postgres import PostgresServer
from store.credentials import KEY_FILE
from store.settings import Settings
from tests.conftest import Api, load_into
from tests.support import eventually

REQUESTER = "katherine@example.com"


@pytest.fixture
def pg_role(postgres: PostgresServer, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> str:
    """A NOLOGIN role ``reports_read`` on an ephemeral-credentials integration, ``vault/postgres/reports_read``."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS reports (id int)")
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'reports_read'").fetchone():
            admin.execute("CREATE ROLE reports_read NOLOGIN")
            admin.execute("GRANT SELECT ON reports TO reports_read")
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn())
    load_into(
        settings,
        {
            "integrations": [
                {
                    "name": "vault",
                    "kind": "postgres",
                    "config": {"dsn_env": "LAPSE_TEST_PG_DSN", "ephemeral": True, "insecure": True},
                    "resources": [{"name": "postgres", "roles": [{"name": "reports_read"}]}],
                }
            ],
            "assignments": [{"workflow": "read-only", "scope": "vault"}],
        },
    )
    return "vault/postgres/reports_read"


def _login(postgres: PostgresServer, shown: dict[str, Any]) -> psycopg.Connection[Any]:
    return psycopg.connect(postgres.dsn(shown["username"], password=shown["password"]), autocommit=True)


def _reads(session: psycopg.Connection[Any]) -> bool:
    try:
        session.execute("SET ROLE reports_read")
        session.execute("SELECT count(*) FROM reports").fetchone()
        session.execute("RESET ROLE")
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def _valid_until(postgres: PostgresServer, login: str) -> datetime | None:
    """The login's VALID UNTIL, or None when the role does not exist."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        row = admin.execute("SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
    return row[0] if row else None


async def _history_text(env: WorkflowEnvironment, request_id: str) -> str:
    """The run's history as JSON plus every payload in it decoded (payloads are base64 in the JSON) and
    decrypted: the codec hides payloads from the server, not from key holders, so a secret must not be there."""
    history = await env.client.get_workflow_handle(names.request_workflow_id(request_id)).fetch_history()
    raw = history.to_json()
    decoded: list[str] = []
    payloads: list[Payload] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str):
                decoded.append(base64.b64decode(node["data"]).decode(errors="replace"))
                if isinstance(node.get("metadata"), dict):
                    payloads.append(json_format.ParseDict(node, Payload(), ignore_unknown_fields=True))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(raw))
    codec = env.client.data_converter.payload_codec
    assert codec is not None
    decoded += [p.data.decode(errors="replace") for p in await codec.decode(payloads)]
    return raw + "\n".join(decoded)


async def test_ephemeral_login_is_shown_once_works_and_lapses(
    api: Api, pg_role: str, postgres: PostgresServer, env: WorkflowEnvironment, settings: Settings, audit: Any
) -> None:
    created = await api.request(REQUESTER, pg_role, "PT6S", "")
    active = await api.wait_for(created["id"], "active")
    path = f"/api/requests/{created['id']}/credentials"

    refused = await api.call("ada@example.com", "POST", path)  # even an admin: the login is the requester's
    assert refused.status_code == 403
    shown = await api.ok(REQUESTER, "POST", path)
    again = await api.call(REQUESTER, "POST", path)
    assert again.status_code == 410
    assert shown["username"] == active["login"] == f"katherine_{created['id']}"
    assert shown["dsn_hint"] == f"postgresql://{shown['username']}@127.0.0.1:{postgres.port}/postgres"
    assert (settings.data_dir / KEY_FILE).stat().st_mode & 0o777 == 0o600

    # The target enforces the end itself: the login is valid until the grant's expiry.
    assert _valid_until(postgres, shown["username"]) == datetime.fromisoformat(active["expires_at"])
    holder = _login(postgres, shown)
    assert _reads(holder)
    holder.execute("SET ROLE reports_read")  # a live session keeps its rights unless it is ended

    await api.wait_for(created["id"], "expired", timeout=30)
    with pytest.raises(psycopg.OperationalError):
        holder.execute("SELECT count(*) FROM reports")
    assert _valid_until(postgres, shown["username"]) is None  # the role is dropped
    with pytest.raises(psycopg.OperationalError):
        _login(postgres, shown)

    history = await _history_text(env, created["id"])
    assert shown["username"] in history  # the decoding sees the payloads...
    assert shown["password"] not in history  # ...and the password is in none of them
    events = audit(names.request_workflow_id(created["id"]))
    assert [e.action for e in events if e.action.startswith("credentials.")] == [
        "credentials.show.refused",
        "credentials.shown",
        "credentials.show.refused",
    ]
    assert shown["password"] not in json.dumps([[e.reason, e.details] for e in audit()], default=str)


async def test_extension_moves_valid_until_and_keeps_the_password(
    api: Api, pg_role: str, postgres: PostgresServer
) -> None:
    created = await api.request(REQUESTER, pg_role, "PT20M", "")
    await api.wait_for(created["id"], "active")
    shown = await api.ok(REQUESTER, "POST", f"/api/requests/{created['id']}/credentials")

    extended = await api.ok(REQUESTER, "POST", f"/api/requests/{created['id']}/extend", {"duration": "PT10M"})
    new_end = datetime.fromisoformat(extended["expires_at"])
    await eventually(  # the workflow moves it right after applying the extension
        lambda: _valid_until(postgres, shown["username"]),
        until=lambda valid_until: valid_until == new_end,
        what=f"the login's VALID UNTIL to move to {new_end}",
    )
    with _login(postgres, shown) as session:
        assert _reads(session)

    await api.ok(REQUESTER, "POST", f"/api/requests/{created['id']}/revoke", {})
    assert _valid_until(postgres, shown["username"]) is None


async def test_overlapping_ephemeral_grants_are_separate_logins(
    api: Api, pg_role: str, postgres: PostgresServer
) -> None:
    first = await api.request(REQUESTER, pg_role, "PT20M", "")
    second = await api.request(REQUESTER, pg_role, "PT20M", "")
    await api.wait_for(first["id"], "active")
    await api.wait_for(second["id"], "active")
    one = await api.ok(REQUESTER, "POST", f"/api/requests/{first['id']}/credentials")
    two = await api.ok(REQUESTER, "POST", f"/api/requests/{second['id']}/credentials")
    assert one["username"] != two["username"]

    await api.ok(REQUESTER, "POST", f"/api/requests/{first['id']}/revoke", {})
    assert _valid_until(postgres, one["username"]) is None
    with _login(postgres, two) as session:
        assert _reads(session)
    await api.ok(REQUESTER, "POST", f"/api/requests/{second['id']}/revoke", {})
    gone = await api.call(REQUESTER, "POST", f"/api/requests/{second['id']}/credentials")
    assert gone.status_code == 409  # ended: nothing left to show
