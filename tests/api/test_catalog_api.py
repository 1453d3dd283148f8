"""/api/catalog: what the caller can request, for how long, and whose approval it takes."""

from __future__ import annotations

from sqlmodel import select

from store.db import session_scope
from store.settings import Settings
from store.tables import Role
from tests.conftest import Api


async def test_catalog_shows_what_the_caller_can_request_and_who_approves(api: Api) -> None:
    entries = {e["role"]: e for e in await api.ok("alan@example.com", "GET", "/api/catalog")}
    assert "people/hr-system/admin" not in entries  # no approval workflow assigned
    assert entries["ledger/prod-db/read"]["options"] == [
        {"rule": "quick look", "up_to": "PT1H", "approval": ["automatic"]},
        {"rule": "longer read", "up_to": "PT8H", "approval": ["1 of manager"]},
    ]
    assert entries["ledger/prod-db/read"]["approval_workflow"] == "read-only"
    # alan is on call, so the on-call rule comes first for him; ken is not
    assert entries["ledger/prod-db/write"]["options"][0]["rule"] == "on-call"
    kens = {e["role"]: e for e in await api.ok("ken@example.com", "GET", "/api/catalog")}
    assert [o["rule"] for o in kens["ledger/prod-db/write"]["options"]] == ["manager then owner"]


async def test_a_role_missing_in_its_target_leaves_the_catalog(api: Api, settings: Settings) -> None:
    with session_scope(settings.db_url) as session:
        role = session.exec(select(Role).where(Role.path == "ledger/prod-db/read")).one()
        role.missing = True
        session.add(role)
    entries = {e["role"] for e in await api.ok("alan@example.com", "GET", "/api/catalog")}
    assert "ledger/prod-db/read" not in entries and "ledger/prod-db/write" in entries
