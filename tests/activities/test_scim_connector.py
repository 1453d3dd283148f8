"""The SCIM connector against a real SCIM server: memberships that change, errors a user can act on.

What every connector promises (idempotence, error classes, discovery) is in test_connector_contract.py."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydantic
import pytest

from access.connectors import DiscoveredRole, HeldRole, PermanentError, RetryableError, Target
from activities.connectors import check_config
from activities.connectors.scim import ScimConnector
from harness.scim import ScimServer

TOKEN_ENV = "LAPSE_TEST_SCIM_TOKEN"


@dataclass
class Setup:
    server: ScimServer
    suffix: str
    email: str
    user_id: str
    group: str
    group_id: str
    connector: ScimConnector

    def target(self, role: str | None = None) -> Target:
        return Target(integration="crm", resource="app", role=role or self.group, config={})


@pytest.fixture
def setup(scim_server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> Setup:
    suffix = uuid.uuid4().hex[:6]
    email = f"ada.{suffix}@example.com"
    user_id = scim_server.create_user(email, email)
    group = f"sales-{suffix}"
    group_id = scim_server.create_group(group)
    monkeypatch.setenv(TOKEN_ENV, scim_server.token)
    connector = ScimConnector({"base_url": scim_server.base_url, "token_env": TOKEN_ENV, "insecure": True})
    return Setup(scim_server, suffix, email, user_id, group, group_id, connector)


def test_the_account_is_the_email_lowercased_and_grants_reach_that_user(setup: Setup) -> None:
    account = setup.connector.account_for(setup.email.upper())
    assert account == setup.email
    setup.connector.grant(account, setup.target(), None)
    assert setup.server.members(setup.group_id) == {setup.user_id}


def test_f15_scim_matches_users_by_username_never_by_an_editable_email(setup: Setup) -> None:
    """Finding 15: an app user who edits their email to a Lapse user's must not receive that user's grants."""
    victim = f"grace.{setup.suffix}@example.com"
    impostor = setup.server.create_user(f"mallory{setup.suffix}", victim)  # userName is theirs, the email is not
    with pytest.raises(PermanentError, match=f"user '{victim}' does not exist in the SCIM app"):
        setup.connector.grant(setup.connector.account_for(victim), setup.target(), None)
    assert impostor not in setup.server.members(setup.group_id)

    # Once the real user exists under their userName, the grant reaches them and only them.
    real = setup.server.create_user(victim.upper())  # userName compares case-insensitively
    setup.connector.grant(setup.connector.account_for(victim), setup.target(), None)
    assert setup.server.members(setup.group_id) == {real}
    # Discovery reports accounts by userName only, so the impostor's email links them to nobody.
    held = setup.connector.list_grants([DiscoveredRole("app", setup.group)])
    assert {(h.account, h.email) for h in held} == {(victim.upper(), None)}


def test_f15_scim_can_match_users_by_external_id(setup: Setup) -> None:
    email = f"ext.{setup.suffix}@example.com"
    response = setup.server.http.post(
        "/Users",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": f"x{setup.suffix}",
            "externalId": email,
        },
    )
    user_id = response.json()["id"]
    connector = ScimConnector(
        {"base_url": setup.server.base_url, "token_env": TOKEN_ENV, "insecure": True, "match": "externalId"}
    )
    connector.grant(connector.account_for(email), setup.target(), None)
    assert setup.server.members(setup.group_id) == {user_id}
    assert {h.account for h in connector.list_grants([DiscoveredRole("app", setup.group)])} == {email}


def test_discover_lists_every_group_across_pages(setup: Setup) -> None:
    for n in range(5):
        setup.server.create_group(f"team{n}-{setup.suffix}")
    connector = ScimConnector(
        {"base_url": setup.server.base_url, "token_env": TOKEN_ENV, "resource": "crm", "page_size": 2, "insecure": True}
    )
    discovery = connector.discover()
    assert list(discovery.resources) == ["crm"]
    ours = [role for role in discovery.roles if role.name.endswith(setup.suffix)]
    assert [role.name for role in ours] == [setup.group, *(f"team{n}-{setup.suffix}" for n in range(5))]
    assert {role.resource for role in ours} == {"crm"}


def test_list_grants_reports_members_by_username(setup: Setup) -> None:
    plain = setup.server.create_user(f"svc-{setup.suffix}")  # no email at all
    named = setup.server.create_user(f"carol{setup.suffix}", f"Carol.{setup.suffix}@example.com")
    setup.server.create_group(f"admins-{setup.suffix}", [setup.user_id, plain, named])
    connector = ScimConnector(
        {"base_url": setup.server.base_url, "token_env": TOKEN_ENV, "page_size": 3, "insecure": True}
    )
    roles = [DiscoveredRole("app", f"admins-{setup.suffix}"), DiscoveredRole("app", setup.group)]
    setup.connector.grant(setup.email, setup.target(), None)

    held = set(connector.list_grants(roles))

    admins = f"admins-{setup.suffix}"
    assert held == {
        HeldRole(account=setup.email, resource="app", role=admins),
        HeldRole(account=f"svc-{setup.suffix}", resource="app", role=admins),
        HeldRole(account=f"carol{setup.suffix}", resource="app", role=admins),
        HeldRole(account=setup.email, resource="app", role=setup.group),
    }


def test_unknown_user_or_a_revoke_in_an_unknown_group_is_a_permanent_error_naming_it(setup: Setup) -> None:
    with pytest.raises(PermanentError, match=f"user 'ghost.{setup.suffix}@example.com' does not exist"):
        setup.connector.grant(f"ghost.{setup.suffix}@example.com", setup.target(), None)
    with pytest.raises(PermanentError, match=f"group 'nope-{setup.suffix}' does not exist"):
        setup.connector.revoke(setup.email, setup.target(f"nope-{setup.suffix}"))
    # A user the app no longer has holds nothing: revoking them is done, not an error.
    setup.connector.revoke(f"ghost.{setup.suffix}@example.com", setup.target())
    assert setup.server.members(setup.group_id) == set()


def test_token_from_a_file(setup: Setup, secrets_dir: Path) -> None:
    token_file = secrets_dir / "token"
    token_file.write_text(setup.server.token + "\n")
    connector = ScimConnector({"base_url": setup.server.base_url, "token_file": str(token_file), "insecure": True})
    connector.grant(setup.email, setup.target(), None)
    assert setup.server.members(setup.group_id) == {setup.user_id}


def test_configuration_is_checked_without_contacting_the_server() -> None:
    check_config("scim", {"base_url": "https://scim.invalid/v2", "token_env": "LAPSE_UNSET_ON_PURPOSE"})
    with pytest.raises(pydantic.ValidationError, match="exactly one of token_env or token_file"):
        ScimConnector({"base_url": "https://scim.invalid/v2"})
    with pytest.raises(pydantic.ValidationError, match="base_url must be an http"):
        ScimConnector({"base_url": "scim.invalid", "token_env": "LAPSE_X"})
    with pytest.raises(pydantic.ValidationError, match="token"):
        ScimConnector({"base_url": "https://scim.invalid/v2", "token_env": "LAPSE_X", "token": "s3cret"})


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (429, {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "429"}, RetryableError),
        (503, "<html>upstream unavailable</html>", RetryableError),
        (500, {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "500"}, RetryableError),
        (403, {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "403"}, PermanentError),
        (400, {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "400"}, PermanentError),
        (200, "<html>a login page</html>", PermanentError),
    ],
)
def test_an_unwell_server_is_retried_and_a_refusal_is_not(
    status: int, body: object, error: type[Exception], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No real server answers 429 or 503 on demand, so these answers come from a MockTransport."""

    def answer(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers={"Content-Type": "text/html"})
        return httpx.Response(status, json=body, headers={"Content-Type": "application/scim+json"})

    monkeypatch.setenv(TOKEN_ENV, "token")
    connector = ScimConnector(
        {"base_url": "https://scim.example.com/v2", "token_env": TOKEN_ENV}, transport=httpx.MockTransport(answer)
    )
    with pytest.raises(error, match=str(status) if status != 200 else "not SCIM"):
        connector.test_connection()


def test_a_server_that_never_answers_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        monkeypatch.setenv(TOKEN_ENV, "token")
        connector = ScimConnector(
            {"base_url": f"http://127.0.0.1:{port}/v2", "token_env": TOKEN_ENV, "timeout": 0.5, "insecure": True}
        )
        with pytest.raises(RetryableError, match=r"did not answer within 0\.5 s"):
            connector.test_connection()
