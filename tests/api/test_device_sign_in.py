"""The CLI's sign-in through a browser (``/auth/device``, ``/auth/device/token``, the ``/device`` page): RFC 8628's
answers while it waits, one token for one approval, nothing a copy of the app DB could use, and only a person in
a browser may approve: by typing the code (a link's is a hint), with admin rights only when ticked, warned when
asked from elsewhere; guessing codes and flooding sign-ins are bounded. The CLI's side is in
``tests/test_cli_login.py``; both, for real, in ``tests/web/test_device_sign_in.py``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError
from sqlmodel import SQLModel, col, select, update

from access.errors import Refusal, RefusalKind
from starter.services import device, device_limits, sessions, tokens
from store import catalog
from store.db import engine_for, session_scope
from store.settings import Settings
from store.tables import AuditEvent, DeviceSignIn, User
from tests.api.answers import problem
from tests.api.identities import (
    Caller,
    client,
    mint,
    offline_app,
    offline_settings,
    proxy_caller,
    session_caller,
    token_caller,
)

CODE = re.compile(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}")


@pytest.fixture
def offline(tmp_path: Path, app_db: str) -> Settings:
    """The demo organisation behind the SSO proxy (people approve through it), no Temporal."""
    return offline_settings(tmp_path, app_db, auth="proxy", trusted_proxies=["127.0.0.1"])


@pytest_asyncio.fixture
async def http(offline: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client(offline_app(offline)) as http:
        yield http


def browser(settings: Settings, email: str) -> Caller:
    """A person's browser behind the proxy, sending the CSRF token its pages carry."""
    return proxy_caller(email, settings)


async def start(http: httpx.AsyncClient, client_name: str = "alans-laptop") -> dict[str, Any]:
    started = await http.post("/auth/device", json={"client_name": client_name})
    assert started.status_code == 200, started.text
    answer: dict[str, Any] = started.json()
    return answer


async def poll(http: httpx.AsyncClient, device_code: str, **more: str) -> httpx.Response:
    return await http.post("/auth/device/token", data={"device_code": device_code, **more})


def error_of(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.headers["cache-control"] == "no-store"
    error: str = response.json()["error"]
    assert response.json()["error_description"]
    return error


def a_while_since_the_last_poll(settings: Settings) -> None:
    with session_scope(settings.db_url) as session:
        session.execute(update(DeviceSignIn).values(polled_at=datetime.now(UTC) - timedelta(minutes=1)))


async def decide(http: httpx.AsyncClient, who: Caller, user_code: str, decision: str, **more: str) -> httpx.Response:
    return await who.call(http, "POST", "/device", data={"user_code": user_code, "decision": decision, **more})


async def show(http: httpx.AsyncClient, who: Caller, typed: str, **more: str) -> httpx.Response:
    """The page after typing ``typed`` into the form (``link_code``: the code the link opened it with)."""
    return await who.call(http, "POST", "/device", data={"user_code": typed, **more})


async def alan_approves(settings: Settings, http: httpx.AsyncClient, user_code: str) -> None:
    approved = await decide(http, browser(settings, "alan@example.com"), user_code, "approve")
    assert approved.status_code == 200, approved.text


def audited(settings: Settings) -> list[tuple[str, str]]:
    with session_scope(settings.db_url, write=False) as session:
        return [(e.action, e.actor) for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.id)))]


async def test_the_cli_waits_then_collects_one_token_for_one_approval(
    offline: Settings, http: httpx.AsyncClient
) -> None:
    started = await start(http)
    assert CODE.fullmatch(started["user_code"]) and len(started["device_code"]) >= 43
    assert started["verification_uri"] == "http://lapse.test/device"
    assert started["verification_uri_complete"] == f"http://lapse.test/device?user_code={started['user_code']}"
    assert (started["expires_in"], started["interval"]) == (600, 5)
    assert error_of(await poll(http, started["device_code"])) == "authorization_pending"

    alan = browser(offline, "alan@example.com")
    shown = await show(http, alan, started["user_code"])
    assert shown.status_code == 200, shown.text
    assert "Sign in the Lapse CLI on <q>alans-laptop</q>?" in shown.text and started["user_code"] in shown.text
    assert "127.0.0.1" in shown.text and "<code>approve</code>" in shown.text and "<code>admin</code>" not in shown.text
    assert "another address than yours" not in shown.text and "for 30 days" in shown.text
    approved = await decide(http, alan, started["user_code"], "approve")
    assert approved.status_code == 200 and "Approved." in approved.text

    a_while_since_the_last_poll(offline)
    collected = await poll(http, started["device_code"], grant_type=device.DEVICE_GRANT_TYPE)
    assert collected.status_code == 200, collected.text
    assert collected.headers["cache-control"] == "no-store"
    token = collected.json()
    assert token["token_type"] == "Bearer" and token["scope"] == "read request approve"
    assert abs(token["expires_in"] - timedelta(days=30).total_seconds()) < 60  # LAPSE_DEVICE_TOKEN_LIFETIME
    me = await token_caller(token["access_token"]).call(http, "GET", "/api/me")
    assert me.json()["email"] == "alan@example.com" and me.json()["scopes"] == ["read", "request", "approve"]
    [made] = tokens.list_tokens(offline, _user(offline, "alan@example.com"))
    assert made.name == "lapse CLI on alans-laptop" and made.created_by == "alan@example.com"

    a_while_since_the_last_poll(offline)
    assert error_of(await poll(http, started["device_code"])) == "invalid_grant"  # used up
    again = await show(http, alan, started["user_code"])
    assert again.status_code == 409 and "already" in again.text
    assert [a for a in audited(offline) if a[0].startswith(("device", "token"))] == [
        ("device_sign_in.approved", "alan@example.com"),
        ("token.created", "alan@example.com"),
    ]


async def test_an_admin_s_cli_gets_admin_rights_only_when_ticked(offline: Settings, http: httpx.AsyncClient) -> None:
    ada = browser(offline, "ada@example.com")
    plain = await start(http, "ada-desktop")
    shown = await show(http, ada, plain["user_code"])
    assert 'name="admin"' in shown.text and "checked" not in shown.text  # offered, unticked
    assert (await decide(http, ada, plain["user_code"], "approve")).status_code == 200
    assert (await poll(http, plain["device_code"])).json()["scope"] == "read request approve"

    ticked = await start(http, "ada-desktop")
    approved = await decide(http, ada, ticked["user_code"], "approve", admin="true")
    assert approved.status_code == 200 and "with admin rights" in approved.text
    assert (await poll(http, ticked["device_code"])).json()["scope"] == "read request approve admin"
    assert ("device_sign_in.approved", "ada@example.com") in audited(offline)

    # Not offered to anyone else, nor taken from them.
    alan = browser(offline, "alan@example.com")
    theirs = await start(http)
    assert 'name="admin"' not in (await show(http, alan, theirs["user_code"])).text
    refused = await decide(http, alan, theirs["user_code"], "approve", admin="true")
    assert refused.status_code == 403 and "is not an admin" in refused.text
    assert error_of(await poll(http, theirs["device_code"])) == "authorization_pending"


async def test_a_link_s_code_is_a_hint_the_person_types_theirs(offline: Settings, http: httpx.AsyncClient) -> None:
    """RFC 8628, 5.4: whoever sends a person ``verification_uri_complete`` gets nothing from their one click."""
    theirs, mine = await start(http, "attackers-box"), await start(http)
    assert theirs["verification_uri_complete"] == f"http://lapse.test/device?user_code={theirs['user_code']}"
    alan = browser(offline, "alan@example.com")
    opened = await alan.call(http, "GET", f"/device?user_code={theirs['user_code']}")
    assert opened.status_code == 200 and "You opened a link with a sign-in code in it" in opened.text
    assert "Approve" not in opened.text and "attackers-box" not in opened.text and "device-code" not in opened.text
    assert 'id="user-code"' in opened.text and 'value=""' in opened.text  # nothing typed for them
    unknown = await alan.call(http, "GET", "/device?user_code=BBBB-BBBB")  # nothing is looked up from a link
    assert unknown.status_code == 200 and "BBBB-BBBB" not in unknown.text.replace('value="BBBB-BBBB"', "")

    typed = await show(http, alan, mine["user_code"], link_code=theirs["user_code"])
    assert typed.status_code == 422 and "is not the one in the link you opened" in typed.text
    assert 'name="link_code"' not in typed.text  # told once: what they type next is looked up
    assert f'value="{mine["user_code"]}"' in typed.text

    same = await show(http, alan, theirs["user_code"].lower(), link_code=theirs["user_code"])
    assert same.status_code == 200 and "attackers-box" in same.text  # typed it themselves: as if no link
    for device_code in (theirs["device_code"], mine["device_code"]):
        assert error_of(await poll(http, device_code)) == "authorization_pending"


async def test_the_device_token_s_lifetime_is_its_own_setting(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path, auth="proxy", trusted_proxies=["127.0.0.1"], device_token_lifetime="P7D")
    async with client(offline_app(settings)) as http:
        started = await start(http)
        await alan_approves(settings, http, started["user_code"])
        expires_in = (await poll(http, started["device_code"])).json()["expires_in"]
        assert abs(expires_in - timedelta(days=7).total_seconds()) < 60
    with pytest.raises(ValidationError, match="device_token_lifetime is longer than token_max_lifetime"):
        offline_settings(tmp_path / "too-long", device_token_lifetime="P400D")


async def test_the_page_warns_when_asked_from_another_address(offline: Settings, http: httpx.AsyncClient) -> None:
    async with client(offline_app(offline), address="203.0.113.9") as elsewhere:
        started = await start(elsewhere)
    shown = await show(http, browser(offline, "alan@example.com"), started["user_code"])
    assert shown.status_code == 200
    assert "Asked from another address than yours" in shown.text and "203.0.113.9" in shown.text
    network_of = device_limits.network_of
    assert network_of("2001:db8::1") == network_of("2001:db8::abcd:1") == "2001:db8::/64"
    assert network_of("2001:db8:0:1::1") != network_of("2001:db8::1")
    assert network_of("::ffff:10.0.0.1") == "10.0.0.1" and network_of("unknown") == "unknown"


async def test_admin_rights_need_a_recent_oidc_sign_in(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path / "oidc")
    async with client(offline_app(settings)) as http:
        started = await start(http)
        stale_session = sessions.start_session(
            settings, "ada@example.com", auth_time=datetime.now(UTC) - timedelta(minutes=20)
        )
        stale = Caller("stale", {"X-CSRF-Token": stale_session.csrf_token}, {sessions.COOKIE_NAME: stale_session.id})
        again = await decide(http, stale, started["user_code"], "approve", admin="true")
        assert again.status_code == 401 and "Sign in again" in again.text
        assert again.headers["refresh"] == "0; url=/auth/login?max_age=600&next=%2Fdevice"
        assert ("device_sign_in.approve.refused", "ada@example.com") in audited(settings)
        assert error_of(await poll(http, started["device_code"])) == "authorization_pending"  # still waiting
        # Without admin rights the same session may; and a fresh one may with them.
        assert (await decide(http, stale, started["user_code"], "approve")).status_code == 200
        fresh = session_caller(settings, "ada@example.com")
        another = await start(http)
        assert (await decide(http, fresh, another["user_code"], "approve", admin="true")).status_code == 200
        assert (await poll(http, another["device_code"])).json()["scope"].endswith(" admin")


async def test_of_two_decisions_at_once_one_wins(
    offline: Settings, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other decision lands between this one's read and its write: this one changes nothing."""
    started = await start(http)
    found = device._find

    def others_decide_meanwhile(settings: Settings, user: User, user_code: str) -> tuple[str, DeviceSignIn]:
        code, row = found(settings, user, user_code)  # read as pending...
        with session_scope(offline.db_url) as session:  # ... then denied by someone else before this one writes
            session.execute(update(DeviceSignIn).values(state="denied", decided_by="linus@example.com"))
        return code, row

    monkeypatch.setattr(device, "_find", others_decide_meanwhile)
    with pytest.raises(Refusal) as lost:
        device.decide(offline, _user(offline, "alan@example.com"), started["user_code"], approve=True)
    assert lost.value.kind is RefusalKind.CONFLICT and "was denied already" in lost.value.message
    assert ("device_sign_in.approved", "alan@example.com") not in audited(offline)
    assert error_of(await poll(http, started["device_code"])) == "access_denied"


async def test_unknown_codes_are_limited_per_person(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    alan = browser(offline, "alan@example.com")
    guesses = [c * 4 + "-" + c * 4 for c in device.USER_CODE_ALPHABET if c * 4 + "-" + c * 4 != started["user_code"]]
    for guess in guesses[: device_limits.MAX_UNKNOWN_CODES]:
        assert (await show(http, alan, guess)).status_code == 404
    for then in (guesses[device_limits.MAX_UNKNOWN_CODES], started["user_code"]):  # found or not: the same answer
        limited = await show(http, alan, then)
        assert limited.status_code == 429 and "codes that no sign-in has" in limited.text
        assert 0 < int(limited.headers["retry-after"]) <= 600
    approving = await decide(http, alan, started["user_code"], "approve")
    assert approving.status_code == 429
    # Someone else is not held up by Alan's guesses.
    linus = await show(http, browser(offline, "linus@example.com"), started["user_code"])
    assert linus.status_code == 200
    assert audited(offline).count((device_limits.UNKNOWN_CODE, "alan@example.com")) == device_limits.MAX_UNKNOWN_CODES


async def test_undecodable_token_requests_are_invalid_requests(http: httpx.AsyncClient) -> None:
    nested = await http.post("/auth/device/token", content=b"[" * 60_000, headers={"Content-Type": "application/json"})
    assert error_of(nested) == "invalid_request"
    for body, kind in (
        (b"{", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b'"a string"', "application/json"),
        (b"device_code=" + b"x" * 5000, "application/x-www-form-urlencoded"),
        (b"device_code=x", "text/plain"),
        (b"device_code=x" + b"&a=b" * 20, "application/x-www-form-urlencoded"),
    ):
        answer = await http.post("/auth/device/token", content=body, headers={"Content-Type": kind})
        assert error_of(answer) == "invalid_request", (body[:20], kind)


async def test_polling_faster_than_the_interval_is_told_to_slow_down(
    offline: Settings, http: httpx.AsyncClient
) -> None:
    started = await start(http)
    assert error_of(await poll(http, started["device_code"])) == "authorization_pending"
    assert error_of(await poll(http, started["device_code"])) == "slow_down"
    with session_scope(offline.db_url) as session:
        [row] = session.exec(select(DeviceSignIn)).all()
        assert row.interval == 10  # 5 more: as the CLI now waits
        row.polled_at = datetime.now(UTC) - timedelta(seconds=7)  # on time before, too soon now
        session.add(row)
    assert error_of(await poll(http, started["device_code"])) == "slow_down"
    a_while_since_the_last_poll(offline)
    assert error_of(await poll(http, started["device_code"])) == "authorization_pending"


async def test_a_denied_sign_in_gets_no_token(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    alan = browser(offline, "alan@example.com")
    denied = await decide(http, alan, started["user_code"], "deny")
    assert denied.status_code == 200 and "Denied." in denied.text
    assert error_of(await poll(http, started["device_code"])) == "access_denied"
    twice = await decide(http, alan, started["user_code"], "approve")
    assert twice.status_code == 409 and "was denied already" in twice.text
    a_while_since_the_last_poll(offline)
    assert error_of(await poll(http, started["device_code"])) == "access_denied"
    assert ("device_sign_in.denied", "alan@example.com") in audited(offline)
    assert tokens.list_tokens(offline, _user(offline, "alan@example.com")) == []


async def test_an_expired_sign_in_is_refused_on_both_sides(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    with session_scope(offline.db_url) as session:
        session.execute(update(DeviceSignIn).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert error_of(await poll(http, started["device_code"])) == "expired_token"
    alan = browser(offline, "alan@example.com")
    shown = await show(http, alan, started["user_code"])
    assert shown.status_code == 410 and "expired" in shown.text and "lapse login" in shown.text
    late = await decide(http, alan, started["user_code"], "approve")
    assert late.status_code == 410
    assert tokens.list_tokens(offline, _user(offline, "alan@example.com")) == []


async def test_an_approval_not_collected_in_time_expires_too(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    await alan_approves(offline, http, started["user_code"])
    with session_scope(offline.db_url) as session:
        session.execute(update(DeviceSignIn).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert error_of(await poll(http, started["device_code"])) == "expired_token"


def _everything_stored(settings: Settings) -> str:
    """Every row of every table, as text (and on SQLite every byte of the database files)."""
    seen = []
    with engine_for(settings.db_url).connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            seen += [repr(tuple(row)) for row in connection.execute(table.select())]
    if settings.db_url.startswith("sqlite:///"):
        database = Path(settings.db_url.removeprefix("sqlite:///"))
        for path in database.parent.glob(database.name + "*"):
            seen.append(path.read_bytes().decode("latin-1"))
    return "\n".join(seen)


async def test_neither_code_nor_the_token_is_stored(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    await alan_approves(offline, http, started["user_code"])
    token = (await poll(http, started["device_code"])).json()["access_token"]
    stored = _everything_stored(offline)
    assert "alans-laptop" in stored  # the scan sees the sign-in's row
    for secret in (started["device_code"], started["user_code"], started["user_code"].replace("-", ""), token):
        assert secret not in stored


async def test_only_a_person_in_a_browser_may_approve(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    code = started["user_code"]
    for scopes in (("approve",), ("read", "request", "approve")):
        with_token = token_caller(mint(offline, "alan@example.com", *scopes))
        refused = await with_token.call(http, "POST", "/device", data={"user_code": code, "decision": "approve"})
        assert refused.status_code == 403 and "sign in to do this" in refused.text
    ada = _user(offline, "ada@example.com")
    tokens.create_service_account(offline, ada, tokens.ServiceAccountCreate(email="ci@example.com", name="CI"))
    service_token = tokens.create_service_token(
        offline, ada, "ci@example.com", tokens.TokenCreate(name="ci", scopes=[tokens.Scope.APPROVE])
    ).token
    refused = await token_caller(service_token).call(
        http, "POST", "/device", data={"user_code": code, "decision": "approve"}
    )
    assert refused.status_code == 403
    # Nor may a service account through the service itself, however it got there.
    service_account = _user(offline, "ci@example.com")
    for attempt in (
        lambda: device.decide(offline, service_account, code, approve=True),
        lambda: device.look_up(offline, service_account, code),
    ):
        with pytest.raises(Refusal) as refusal:
            attempt()
        assert refusal.value.kind is RefusalKind.FORBIDDEN and "service account" in refusal.value.message
    assert error_of(await poll(http, started["device_code"])) == "authorization_pending"  # still waiting


async def test_codes_typed_by_hand_and_bad_ones(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    alan = browser(offline, "alan@example.com")
    form = await alan.call(http, "GET", "/device")
    assert form.status_code == 200 and 'name="user_code"' in form.text
    typed = started["user_code"].replace("-", " ").lower()
    assert (await show(http, alan, typed)).status_code == 200
    not_a_code = await show(http, alan, "hello")
    assert not_a_code.status_code == 422 and "is not a sign-in code" in not_a_code.text
    assert 'aria-invalid="true"' in not_a_code.text and 'value="hello"' in not_a_code.text
    unknown = "BBBB-BBBB" if started["user_code"] != "BBBB-BBBB" else "CCCC-CCCC"
    missing = await show(http, alan, unknown)
    assert missing.status_code == 404 and f"no sign-in with the code {unknown}" in missing.text
    undecided = await alan.call(http, "POST", "/device", data={"user_code": started["user_code"], "decision": "maybe"})
    assert undecided.status_code == 422 and "decision" in undecided.text

    assert error_of(await http.post("/auth/device/token", json={})) == "invalid_request"
    assert error_of(await http.post("/auth/device/token", json={"device_code": "nope"})) == "invalid_grant"
    wrong_grant = await poll(http, started["device_code"], grant_type="authorization_code")
    assert error_of(wrong_grant) == "unsupported_grant_type"
    as_json = await http.post("/auth/device/token", json={"device_code": started["device_code"]})
    assert error_of(as_json) == "authorization_pending"


async def test_starting_says_what_is_wrong_and_is_bounded(
    offline: Settings, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in ({}, {"client_name": ""}, {"client_name": "x" * 101}, {"client_name": "laptop\n(approved by IT)"}):
        assert "client_name" in problem(await http.post("/auth/device", json=bad), 422, "client_name")
    monkeypatch.setattr(device_limits, "MAX_STARTED_PER_ADDRESS", 3)
    for _ in range(3):
        await start(http)
    too_many = await http.post("/auth/device", json={"client_name": "laptop"})
    assert "from 127.0.0.1" in problem(too_many, 429) and too_many.headers["retry-after"] == "60"
    async with client(offline_app(offline), address="10.1.2.3") as elsewhere:
        assert (await elsewhere.post("/auth/device", json={"client_name": "laptop"})).status_code == 200
    monkeypatch.setattr(device_limits, "MAX_PENDING", 4)
    async with client(offline_app(offline), address="10.1.2.4") as third:
        assert "waiting for approval" in problem(await third.post("/auth/device", json={"client_name": "x"}), 429)


async def test_a_few_networks_cannot_hold_everyone_s_sign_in(
    offline: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting sign-ins are counted per network (an IPv6 /64) before all of them: a few cannot fill the cap."""
    monkeypatch.setattr(device_limits, "MAX_PENDING_PER_ADDRESS", 2)
    monkeypatch.setattr(device_limits, "MAX_PENDING", 7)
    app = offline_app(offline)
    for address in ("2001:db8::1", "2001:db8::2"):
        async with client(app, address=address) as one:
            await start(one)
    async with client(app, address="2001:db8::ffff:3") as same_network:  # another address, the same /64
        held = await same_network.post("/auth/device", json={"client_name": "x"})
        assert "from 2001:db8::/64 are waiting for approval" in problem(held, 429) and held.headers["retry-after"]
    for attacker in ("2001:db8:0:1::", "2001:db8:0:2::"):  # each as hard as it can, from many addresses
        answers = []
        for host in range(1, 6):
            async with client(app, address=f"{attacker}{host}") as one:
                answers.append((await one.post("/auth/device", json={"client_name": "x"})).status_code)
        assert answers == [200, 200, 429, 429, 429]
    async with client(app, address="198.51.100.7") as everyone_else:
        assert (await everyone_else.post("/auth/device", json={"client_name": "x"})).status_code == 200


async def test_an_approval_whose_person_left_makes_no_token(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    await alan_approves(offline, http, started["user_code"])
    with session_scope(offline.db_url) as session:
        session.execute(update(User).where(col(User.email) == "alan@example.com").values(active=False))
    left = await poll(http, started["device_code"])
    assert error_of(left) == "access_denied" and "no token was made" in left.json()["error_description"]
    a_while_since_the_last_poll(offline)
    assert error_of(await poll(http, started["device_code"])) == "invalid_grant"  # used up all the same


async def test_an_anonymous_browser_signs_in_first_and_comes_back_with_its_code(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path / "oidc")  # Lapse signs people in itself (OIDC)
    async with client(offline_app(settings)) as http:
        started = await start(http)
        link = f"/device?user_code={started['user_code']}"
        sent = await http.get(link, headers={"Accept": "text/html,application/xhtml+xml"})
        assert sent.status_code == 303
        assert sent.headers["location"] == f"/auth/login?next=%2Fdevice%3Fuser_code%3D{started['user_code']}"
        assert (await http.get(link)).status_code == 401  # not a browser: told, not sent
        signed_in = session_caller(settings, "alan@example.com")
        opened = await signed_in.call(http, "GET", link, headers={"Accept": "text/html"})
        assert opened.status_code == 200 and "Type the code your terminal shows" in opened.text
        shown = await show(http, signed_in, started["user_code"], link_code=started["user_code"])
        assert shown.status_code == 200 and started["user_code"] in shown.text
        approved = await decide(http, signed_in, started["user_code"], "approve")
        assert approved.status_code == 200 and "Approved." in approved.text
        assert (await poll(http, started["device_code"])).status_code == 200


def _user(settings: Settings, email: str) -> User:
    with session_scope(settings.db_url, write=False) as session:
        user = catalog.find_user(session, email)
    assert user is not None
    return user
