"""The SCIM connector against a real SCIM server: memberships that change, errors a user can act on."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass

import httpx
import pydantic
import pytest

from activities.connectors import DiscoveredRole, HeldRole, PermanentError, RetryableError, Target, check_config
from activities.scim import ScimConnector
from tests.scim_server import ScimServer, scim_server  # noqa: F401
from tests.servers import _free_port

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
def setup(scim_server: ScimServer, monkeypatch: pytest.MonkeyPatch) -> Setup:  # noqa: F811
    suffix = uuid.uuid4().hex[:6]
    email = f"ada.{suffix}@example.com"
    user_id = scim_server.create_user(email, email)
    group = f"sales-{suffix}"
    group_id = scim_server.create_group(group)
    monkeypatch.setenv(TOKEN_ENV, scim_server.token)
    connector = ScimConnector({"base_url": scim_server.base_url, "token_env": TOKEN_ENV})
    return Setup(scim_server, suffix, email, user_id, group, group_id, connector)


def test_grant_makes_the_user_a_member_and_granting_twice_is_fine(setup: Setup) -> None:
    account = setup.connector.account_for(setup.email.upper())
    assert account == setup.email
    setup.connector.grant(account, setup.target(), None)
    setup.connector.grant(account, setup.target(), None)  # idempotent
    assert setup.server.members(setup.group_id) == {setup.user_id}


def test_revoke_removes_only_that_user_and_revoking_twice_is_fine(setup: Setup) -> None:
    other = setup.server.create_user(f"bob.{setup.suffix}@example.com")
    group_id = setup.server.create_group(f"support-{setup.suffix}", [setup.user_id, other])
    target = setup.target(f"support-{setup.suffix}")
    setup.connector.revoke(setup.email, target)
    setup.connector.revoke(setup.email, target)  # revoking what is gone is success
    assert setup.server.members(group_id) == {other}


def test_a_user_whose_username_is_not_the_email_is_found_by_primary_email(setup: Setup) -> None:
    email = f"grace.{setup.suffix}@example.com"
    user_id = setup.server.create_user(f"ghopper{setup.suffix}", email)
    setup.connector.grant(setup.connector.account_for(email), setup.target(), None)
    assert user_id in setup.server.members(setup.group_id)


def test_discover_lists_every_group_across_pages(setup: Setup) -> None:
    for n in range(5):
        setup.server.create_group(f"team{n}-{setup.suffix}")
    connector = ScimConnector(
        {"base_url": setup.server.base_url, "token_env": TOKEN_ENV, "resource": "crm", "page_size": 2}
    )
    discovery = connector.discover()
    assert list(discovery.resources) == ["crm"]
    ours = [role for role in discovery.roles if role.name.endswith(setup.suffix)]
    assert [role.name for role in ours] == [setup.group, *(f"team{n}-{setup.suffix}" for n in range(5))]
    assert {role.resource for role in ours} == {"crm"}


def test_list_grants_reports_members_with_their_emails(setup: Setup) -> None:
    plain = setup.server.create_user(f"svc-{setup.suffix}")  # no email at all
    named = setup.server.create_user(f"carol{setup.suffix}", f"Carol.{setup.suffix}@example.com")
    setup.server.create_group(f"admins-{setup.suffix}", [setup.user_id, plain, named])
    connector = ScimConnector({"base_url": setup.server.base_url, "token_env": TOKEN_ENV, "page_size": 3})
    roles = [DiscoveredRole("app", f"admins-{setup.suffix}"), DiscoveredRole("app", setup.group)]
    setup.connector.grant(setup.email, setup.target(), None)

    held = set(connector.list_grants(roles))

    admins, carol = f"admins-{setup.suffix}", f"Carol.{setup.suffix}@example.com"
    assert held == {
        HeldRole(account=setup.email, resource="app", role=admins, email=setup.email),
        HeldRole(account=f"svc-{setup.suffix}", resource="app", role=admins, email=None),
        HeldRole(account=f"carol{setup.suffix}", resource="app", role=admins, email=carol),
        HeldRole(account=setup.email, resource="app", role=setup.group, email=setup.email),
    }


def test_unknown_group_or_user_is_a_permanent_error_naming_it(setup: Setup) -> None:
    with pytest.raises(PermanentError, match=f"group 'nope-{setup.suffix}' does not exist"):
        setup.connector.grant(setup.email, setup.target(f"nope-{setup.suffix}"), None)
    with pytest.raises(PermanentError, match=f"user 'ghost.{setup.suffix}@example.com' does not exist"):
        setup.connector.grant(f"ghost.{setup.suffix}@example.com", setup.target(), None)
    with pytest.raises(PermanentError, match=f"group 'nope-{setup.suffix}' does not exist"):
        setup.connector.revoke(setup.email, setup.target(f"nope-{setup.suffix}"))
    # A user the app no longer has holds nothing: revoking them is done, not an error.
    setup.connector.revoke(f"ghost.{setup.suffix}@example.com", setup.target())
    assert setup.server.members(setup.group_id) == set()


def test_connection_reports_the_app_or_says_what_is_wrong(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    assert setup.connector.test_connection().startswith(f"SCIM 2.0 at {setup.server.base_url}: ")

    monkeypatch.setenv(TOKEN_ENV, "not-the-token")
    with pytest.raises(PermanentError, match=f"refused the bearer token from \\${TOKEN_ENV}"):
        setup.connector.test_connection()

    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(PermanentError, match=f"{TOKEN_ENV} .* is not set"):
        setup.connector.test_connection()

    monkeypatch.setenv(TOKEN_ENV, setup.server.token)
    closed = ScimConnector({"base_url": f"http://127.0.0.1:{_free_port()}/v2", "token_env": TOKEN_ENV, "timeout": 2})
    with pytest.raises(RetryableError, match=r"cannot reach the SCIM server .* Connection refused"):
        closed.test_connection()


def test_token_from_a_file(setup: Setup, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(setup.server.token + "\n")
    connector = ScimConnector({"base_url": setup.server.base_url, "token_file": str(token_file)})
    connector.grant(setup.email, setup.target(), None)
    assert setup.server.members(setup.group_id) == {setup.user_id}


def test_configuration_is_checked_without_contacting_the_server() -> None:
    check_config("scim", {"base_url": "https://scim.invalid/v2", "token_env": "UNSET_ON_PURPOSE"})
    with pytest.raises(pydantic.ValidationError, match="exactly one of token_env or token_file"):
        ScimConnector({"base_url": "https://scim.invalid/v2"})
    with pytest.raises(pydantic.ValidationError, match="base_url must be an http"):
        ScimConnector({"base_url": "scim.invalid", "token_env": "X"})
    with pytest.raises(pydantic.ValidationError, match="token"):
        ScimConnector({"base_url": "https://scim.invalid/v2", "token_env": "X", "token": "s3cret"})


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
        connector = ScimConnector({"base_url": f"http://127.0.0.1:{port}/v2", "token_env": TOKEN_ENV, "timeout": 0.5})
        with pytest.raises(RetryableError, match=r"did not answer within 0\.5 s"):
            connector.test_connection()
