"""The web UI's pages over HTTP (no browser): who may see what, refusals as HTML pages with the API's status,
the CSRF token in every form, user text escaped, the policy's dry run, the permissions table."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from starter.api.app import create_app
from starter.api.security import proxy_csrf_token
from starter.services.permissions import GrantFilter, list_permissions
from store.credentials import credential_cipher
from store.db import session_scope
from store.settings import Settings
from store.tables import Credential, Grant, User
from tests.conftest import Api, make_settings
from tests.web.test_admin_pages import ADMIN_SECTION_PAGES

ADMIN_PAGES = [
    ("GET", "/admin/grants"),
    ("POST", "/admin/grants/{grant_id}/revoke"),
    ("POST", "/admin/grants/impact"),
    ("POST", "/admin/grants/revoke-selected"),
    ("POST", "/admin/service-accounts"),
    ("POST", "/admin/service-accounts/{email}/tokens"),
    ("POST", "/admin/service-accounts/{email}/deactivate"),
    *ADMIN_SECTION_PAGES,
]
"""The UI's admin-only routes (through the API's ``AdminUser``); ``tests/api/test_access_control.py`` counts them."""

NOW = datetime.now(UTC)


def html(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("text/html"), response.headers["content-type"]
    return response.text


def as_user(email: str | None) -> dict[str, str]:
    return {"X-Forwarded-Email": email} if email else {}


def with_csrf_token(http: httpx.AsyncClient, settings: Settings) -> httpx.AsyncClient:
    """Post as the pages' forms do: with the CSRF token the page gives the proxy's user (``X-CSRF-Token``)."""

    async def add_token(request: httpx.Request) -> None:
        who = request.headers.get("x-forwarded-email")
        if who and request.method == "POST" and "x-csrf-token" not in request.headers:
            request.headers["X-CSRF-Token"] = proxy_csrf_token(settings, who)

    http.event_hooks["request"].append(add_token)
    return http


@pytest.fixture(autouse=True)
def _forms_carry_the_csrf_token(request: pytest.FixtureRequest) -> None:
    if "api" in request.fixturenames:
        api: Api = request.getfixturevalue("api")
        with_csrf_token(api.http, request.getfixturevalue("settings"))


@pytest.fixture
def demo(tmp_path: Path) -> Settings:
    """The demo organisation, with one grant in the ledger, and no Temporal behind it."""
    settings = make_settings(tmp_path, "127.0.0.1:1")
    with session_scope(settings.db_url) as session:
        session.add(Grant(account="ken", role="ledger/prod-db/read", user_email="ken@example.com", granted_at=NOW))
    return settings


@pytest_asyncio.fixture
async def pages(demo: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the demo organisation with no Temporal behind it: for pages that only read."""
    app = create_app(demo, client=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as client:
        yield with_csrf_token(client, demo)


# --- who may see what ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/access", "/approvals", "/requests/abc", "/admin/grants"])
async def test_every_page_asks_who_is_calling(pages: httpx.AsyncClient, path: str) -> None:
    response = await pages.get(path)
    assert response.status_code == 401
    assert "X-Forwarded-Email" in html(response) and '<h1 id="error-title">Unauthorized</h1>' in response.text


async def test_an_unknown_user_is_not_signed_in(pages: httpx.AsyncClient) -> None:
    response = await pages.get("/", headers=as_user("nobody@example.com"))
    assert response.status_code == 401 and "nobody@example.com is not an active Lapse user" in html(response)


@pytest.mark.parametrize(("method", "path"), ADMIN_PAGES)
async def test_admin_pages_refuse_a_non_admin_with_a_page(pages: httpx.AsyncClient, method: str, path: str) -> None:
    response = await pages.request(method, path.replace("{grant_id}", "1"), headers=as_user("alan@example.com"))
    assert response.status_code == 403
    assert "only admins can do this" in html(response)
    assert 'href="/admin/grants"' not in response.text  # nor is the page offered in the nav


async def test_the_nav_offers_permissions_to_admins(pages: httpx.AsyncClient) -> None:
    response = await pages.get("/admin/grants", headers=as_user("ada@example.com"))
    assert response.status_code == 200 and 'href="/admin/grants" aria-current="page"' in html(response)


async def test_an_unknown_request_is_a_404_page(pages: httpx.AsyncClient) -> None:
    response = await pages.get("/requests/nothing", headers=as_user("alan@example.com"))
    assert response.status_code == 404 and "there is no request &#39;nothing&#39;" in html(response)


async def test_invalid_input_is_a_422_page_naming_the_field(pages: httpx.AsyncClient) -> None:
    response = await pages.get("/admin/grants?path=nonsense", headers=as_user("ada@example.com"))
    assert response.status_code == 422 and "path: Input should be" in html(response)


async def test_pages_are_not_cached_and_not_in_the_api_document(pages: httpx.AsyncClient) -> None:
    response = await pages.get("/access", headers=as_user("alan@example.com"))
    assert response.headers["cache-control"] == "no-store"
    documented = (await pages.get("/openapi.json")).json()["paths"]
    # The API, the codec, the probes (health, readiness, metrics), and the CLI's start of a device sign-in (its
    # token endpoint answers OAuth's errors, not problem documents, and is left out).
    probes = ("/healthz", "/readyz", "/metrics")
    assert not [p for p in documented if not p.startswith(("/api/", "/codec/", *probes)) and p != "/auth/device"]


async def test_static_files_are_served(pages: httpx.AsyncClient) -> None:
    for path in ("/static/vendor/htmx.min.js", "/static/vendor/pico.min.css", "/static/lapse.js"):
        assert (await pages.get(path)).status_code == 200, path


# --- forms and the CSRF token ----------------------------------------------------------------------

FORM = re.compile(r"<form\b[^>]*>.*?</form>", re.S)


@pytest.mark.parametrize(("who", "path"), [("alan@example.com", "/"), ("ada@example.com", "/admin/grants")])
async def test_every_form_posts_to_the_ui_with_the_csrf_token(
    pages: httpx.AsyncClient, demo: Settings, who: str, path: str
) -> None:
    token = proxy_csrf_token(demo, who)  # the one the proxy's user's pages carry
    text = html(await pages.get(path, headers=as_user(who)))
    assert f'<meta name="csrf-token" content="{token}">' in text
    posting = [form for form in FORM.findall(text) if 'method="post"' in form]
    assert posting
    for form in posting:
        assert f'<input type="hidden" name="csrf_token" value="{token}">' in form, form
        assert 'action="/api' not in form


async def test_no_inline_script_style_or_handler(pages: httpx.AsyncClient) -> None:
    """The Content-Security-Policy forbids them: the pages must not need them."""
    text = html(await pages.get("/?role=ledger/prod-db/read", headers=as_user("alan@example.com")))
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text)
    assert not re.search(r"\sstyle=|\son[a-z]+=|<style", text)
    assert not re.search(r"\bhx-on|\bjs:", text)


# --- the policy's dry run ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "duration", "says"),
    [
        ("ledger/payments-api/deploy", "PT1H", "manager: 1 of linus@example.com"),
        ("ledger/prod-db/read", "PT30M", "Granted without approval"),
        ("ledger/payments-api/deploy", "P2D", "P2D is longer than the P1D you may hold ledger/payments-api/deploy"),
        ("ledger/payments-api/deploy", "soon", "&#39;soon&#39; is not a duration"),
        ("people/hr-system/admin", "PT1H", "has no approval workflow assigned"),
        ("ledger/payments-api/deploy", "", "Choose a role and a duration"),
    ],
    ids=["approval", "automatic", "too-long", "not-a-duration", "not-requestable", "incomplete"],
)
async def test_the_form_shows_the_policys_verdict_before_submitting(
    pages: httpx.AsyncClient, role: str, duration: str, says: str
) -> None:
    form = {"role": role, "duration": duration, "justification": "INC-1"}
    response = await pages.post("/requests/preview", data=form, headers=as_user("alan@example.com"))
    assert response.status_code == 200 and says in html(response)


async def test_a_missing_justification_is_asked_for(pages: httpx.AsyncClient) -> None:
    form = {"role": "ledger/payments-api/deploy", "duration": "PT1H", "justification": " "}
    response = await pages.post("/requests/preview", data=form, headers=as_user("alan@example.com"))
    assert "Give a justification:</strong> rule &#39;manager&#39; requires a justification" in html(response)


async def test_the_catalog_filters_by_text_and_sensitivity(pages: httpx.AsyncClient) -> None:
    text = html(await pages.get("/?q=prod-db&sensitivity=low", headers=as_user("alan@example.com")))
    shown = re.findall(r'<h3 id="role-\d+"><code>([^<]+)</code>', text)
    assert shown == ["ledger/prod-db/read"]
    assert "people/hr-system/admin" not in html(await pages.get("/", headers=as_user("alan@example.com")))


# --- with Temporal: requests made, shown, refused -------------------------------------------------------


async def test_a_refused_request_returns_the_form_with_the_reason(api: Api) -> None:
    form = {"role": "ledger/payments-api/deploy", "duration": "P3D", "justification": "<b>why</b>"}
    response = await api.http.post("/requests", data=form, headers=as_user("alan@example.com"))
    assert response.status_code == 422
    text = html(response)
    assert "Not requested: P3D is longer than the P1D" in text
    assert 'value="P3D"' in text and "&lt;b&gt;why&lt;/b&gt;</textarea>" in text


async def test_user_text_is_escaped_on_every_page_that_shows_it(api: Api) -> None:
    script = "<script>alert(1)</script>"
    form = {"role": "ledger/payments-api/deploy", "duration": "PT1H", "justification": script}
    made = await api.http.post("/requests", data=form, headers=as_user("alan@example.com"))
    assert made.status_code == 303
    request_id = made.headers["location"].split("/")[2].split("?")[0]
    for who, path in [
        ("alan@example.com", f"/requests/{request_id}"),
        ("linus@example.com", "/approvals"),
        ("linus@example.com", f"/requests/{request_id}"),
    ]:
        text = html(await api.http.get(path, headers=as_user(who)))
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and script not in text, path


async def test_a_request_is_seen_only_by_its_requester_approvers_and_admins(api: Api) -> None:
    created = await api.request("alan@example.com", "ledger/payments-api/deploy", "PT1H")
    path = f"/requests/{created['id']}"
    for who, status in [("alan@example.com", 200), ("linus@example.com", 200), ("ada@example.com", 200)]:
        assert (await api.http.get(path, headers=as_user(who))).status_code == status, who
    refused = await api.http.get(path, headers=as_user("ken@example.com"))
    assert refused.status_code == 403 and "only the requester, its approvers and admins" in html(refused)
    admin_page = html(await api.http.get(path, headers=as_user("ada@example.com")))
    assert f"/workflows/access-request-{created['id']}" in admin_page
    assert "Temporal Web UI" not in html(await api.http.get(path, headers=as_user("alan@example.com")))


async def test_deciding_your_own_request_is_refused_as_the_api_refuses_it(api: Api) -> None:
    created = await api.request("alan@example.com", "ledger/payments-api/deploy", "PT1H")
    form = {"decision": "approve", "comment": ""}
    response = await api.http.post(f"/approvals/{created['id']}", data=form, headers=as_user("alan@example.com"))
    assert response.status_code == 403, response.text
    assert (await api.status(created["id"]))["state"] == "pending"


async def test_a_live_region_answers_204_while_nothing_changed(api: Api) -> None:
    created = await api.request("alan@example.com", "ledger/payments-api/deploy", "PT1H")
    alan, path = as_user("alan@example.com"), f"/requests/{created['id']}"
    first = html(await api.http.get(path, headers=alan))
    version = re.search(r"/live\?v=(\w+)", first)
    assert version is not None
    same = await api.http.get(f"{path}/live?v={version[1]}", headers=alan)
    assert same.status_code == 204
    await api.ok("linus@example.com", "POST", f"/api/requests/{created['id']}/approve", {"comment": "ok"})
    await api.wait_for(created["id"], "active")
    changed = await api.http.get(f"{path}/live?v={version[1]}", headers=alan)
    assert changed.status_code == 200 and "state-active" in html(changed)


async def test_an_admin_revokes_a_grant_from_the_permissions_page(api: Api) -> None:
    created = await api.request("katherine@example.com", "ledger/prod-db/read", "PT30M")
    await api.wait_for(created["id"], "active")
    text = html(await api.http.get("/admin/grants?user=katherine@example.com", headers=as_user("ada@example.com")))
    grant_id = re.search(r'action="/admin/grants/(\d+)/revoke"', text)
    assert grant_id is not None
    path = f"/admin/grants/{grant_id[1]}/revoke"
    refused = await api.http.post(path, data={"comment": "no"}, headers=as_user("katherine@example.com"))
    assert refused.status_code == 403
    done = await api.http.post(path, data={"comment": "audit finding"}, headers=as_user("ada@example.com"))
    assert done.status_code == 303
    after = await api.http.get(done.headers["location"], headers=as_user("ada@example.com"))
    assert f"Grant {grant_id[1]} was revoked." in html(after) and "No active grant matches." in after.text
    assert (await api.status(created["id"]))["state"] == "revoked"


# --- the permissions table's filters and pages ----------------------------------------------------------


def test_permissions_filter_and_page_by_keyset(tmp_path: Path) -> None:
    settings: Settings = make_settings(tmp_path, "127.0.0.1:1")
    rows = [
        ("alan@example.com", "ledger/prod-db/read", "jit"),
        ("alan@example.com", "ledger/prod-db/write", "birthright"),
        ("ken@example.com", "ledger/prod-db/read", "external"),
        ("ken@example.com", "ledger/prod-dbx/read", "jit"),  # a sibling resource, not under ledger/prod-db
        ("ken@example.com", "ledger/payments-api/read", "jit"),
    ]
    with session_scope(settings.db_url) as session:
        for user, role, path in rows:
            session.add(Grant(account=user, role=role, user_email=user, path=path, granted_at=NOW))
        session.add(Grant(account="x", role="ledger/prod-db/read", user_email="x", granted_at=NOW, active=False))
        admin = session.get(User, 1)
        assert admin is not None and admin.is_admin
        session.expunge(admin)

    def roles(filters: GrantFilter) -> list[tuple[str | None, str]]:
        return [(g.user, g.role) for g in list_permissions(settings, admin, filters).grants]

    assert roles(GrantFilter(role="ledger/prod-db")) == [
        ("alan@example.com", "ledger/prod-db/read"),
        ("alan@example.com", "ledger/prod-db/write"),
        ("ken@example.com", "ledger/prod-db/read"),
    ]
    assert roles(GrantFilter(user="KEN@example.com", path="jit")) == [
        ("ken@example.com", "ledger/prod-dbx/read"),
        ("ken@example.com", "ledger/payments-api/read"),
    ]
    first = list_permissions(settings, admin, GrantFilter(), limit=2)
    assert len(first.grants) == 2 and first.next_cursor is not None
    rest = list_permissions(settings, admin, GrantFilter(), cursor=first.next_cursor, limit=10)
    assert len(rest.grants) == 3 and rest.next_cursor is None  # the ended grant is not listed


async def test_a_one_time_login_is_shown_once_and_never_cached(api: Api, settings: Settings) -> None:
    created = await api.request("katherine@example.com", "ledger/prod-db/read", "PT30M")
    await api.wait_for(created["id"], "active")
    sealed = credential_cipher(settings).encrypt(b"<s3cret>").decode()
    with session_scope(settings.db_url) as session:
        session.add(Credential(request_id=created["id"], username="lapse_k1", ciphertext=sealed, created_at=NOW))
    path, katherine = f"/access/{created['id']}/credentials", as_user("katherine@example.com")
    assert (await api.http.post(path, headers=as_user("ada@example.com"))).status_code == 403  # not even an admin
    shown = await api.http.post(path, headers=katherine)
    assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
    assert '<code id="password">&lt;s3cret&gt;</code>' in html(shown) and "lapse_k1" in shown.text
    again = await api.http.post(path, headers=katherine)
    assert again.status_code == 410 and "already shown" in html(again) and "s3cret" not in again.text


async def test_the_request_page_shows_a_steps_reminders_and_escalation(
    demo: Settings, pages: httpx.AsyncClient
) -> None:
    from datetime import timedelta

    from access.requests import RequestStatus, StepState, StepStatus
    from access.types import Approver, ApproverKind
    from store.tables import AccessRequest

    opened = NOW - timedelta(hours=9)
    step = StepStatus(
        name="manager",
        approvers=[Approver(kind=ApproverKind.MANAGER)],
        quorum=1,
        eligible=["linus@example.com", "grace@example.com"],
        state=StepState.OPEN,
        opened_at=opened,
        remind_after=timedelta(hours=1),
        remind_every=timedelta(hours=4),
        escalate_after=timedelta(hours=8),
        escalate_to=[Approver(kind=ApproverKind.GROUP, name="security")],
        reminders=2,
        next_reminder_at=opened + timedelta(hours=9),
        escalate_at=opened + timedelta(hours=8),
        escalated_at=opened + timedelta(hours=8),
    )
    status = RequestStatus(
        id="remindedreq",
        requester="alan@example.com",
        role="ledger/payments-api/deploy",
        duration=timedelta(hours=1),
        justification="hotfix",
        policy="manager-approval",
        rule="manager",
        created_at=opened,
        steps=[step],
    )
    with session_scope(demo.db_url) as session:
        session.add(
            AccessRequest(
                id=status.id,
                requester=status.requester,
                role=status.role,
                state=status.state.value,
                created_at=status.created_at,
                status=status.model_dump(mode="json"),
            )
        )

    page = html(await pages.get("/requests/remindedreq", headers=as_user("alan@example.com")))

    assert "Reminded 2 times." in page and "Next reminder" in page
    assert "Escalated" in page and "group:security" in page
