"""Every input the API takes is bounded and validated into a 4xx problem naming the field (finding 15)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from access.limits import MAX_BODY_BYTES, MAX_ROLE_PATH, MAX_TEXT
from starter import cli
from store.settings import Settings
from tests.api.answers import problem
from tests.conftest import Api, load_into

ADA = "ada@example.com"
ALAN = "alan@example.com"
DEPLOY = "ledger/payments-api/deploy"
READ = "ledger/prod-db/read"


def _create(duration: Any = "PT1H", justification: str = "INC-1", role: str = DEPLOY) -> dict[str, Any]:
    return {"role": role, "duration": duration, "justification": justification}


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize("duration", [1e20, "99999999999999999999", "P3000000D"])
async def test_f15_huge_number_duration_is_422(api: Api, duration: Any) -> None:
    detail = problem(await api.call(ALAN, "POST", "/api/requests", _create(duration)), 422, "duration")
    assert "too long" in detail and "P3660D" in detail
    assert await api.ok(ALAN, "GET", "/api/requests") == []


async def test_f15_extension_by_3000000_days_is_422(api: Api) -> None:
    created = await api.request(ALAN, READ, "PT1H", "look")
    await api.wait_for(created["id"], "active")
    body = {"duration": "P3000000D", "justification": "longer"}
    detail = problem(await api.call(ALAN, "POST", f"/api/requests/{created['id']}/extend", body), 422, "duration")
    assert "'P3000000D'" in detail
    assert (await api.status(created["id"]))["state"] == "active"


@pytest.mark.parametrize(("duration", "says"), [("PT0.000001S", "fraction"), ("PT1.9S", "fraction"), (1.5, "fraction")])
async def test_f15_fractional_seconds_are_refused_not_truncated(api: Api, duration: Any, says: str) -> None:
    detail = problem(await api.call(ALAN, "POST", "/api/requests", _create(duration)), 422, "duration")
    assert says in detail and str(duration) in detail


# --- body size --------------------------------------------------------------------------------


async def test_f15_3mb_justification_is_413_before_it_is_parsed(api: Api) -> None:
    response = await api.call(ALAN, "POST", "/api/requests", _create(justification="x" * 3_000_000))
    detail = problem(response, 413, "body")
    assert str(MAX_BODY_BYTES) in detail
    assert await api.ok(ALAN, "GET", "/api/requests") == []


async def test_f15_chunked_body_without_length_is_413_too(api: Api) -> None:
    payload = json.dumps(_create(justification="x" * (2 * MAX_BODY_BYTES))).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 8192):
            yield payload[start : start + 8192]

    response = await api.http.post(
        "/api/requests",
        content=chunks(),
        headers={"X-Forwarded-Email": ALAN, "Content-Type": "application/json"},
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    problem(response, 413, "body")


async def test_a_body_under_the_limit_is_read_whole(api: Api) -> None:
    payload = json.dumps(_create(duration="P2D", justification="x" * 1000)).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 100):
            yield payload[start : start + 100]

    response = await api.http.post(
        "/api/requests", content=chunks(), headers={"X-Forwarded-Email": ALAN, "Content-Type": "application/json"}
    )
    assert "longer than the P1D" in problem(response, 422, "duration")  # parsed: the policy judged it


# --- text fields --------------------------------------------------------------------------------


async def test_f15_justification_over_max_text_is_422(api: Api) -> None:
    response = await api.call(ALAN, "POST", "/api/requests", _create(justification="x" * (MAX_TEXT + 1)))
    assert str(MAX_TEXT) in problem(response, 422, "justification")


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/requests/abc/approve", {"comment": "x" * (MAX_TEXT + 1)}, "comment"),
        ("POST", "/api/requests/abc/deny", {"comment": "ok\x1b[2J"}, "comment"),
        ("POST", "/api/requests/abc/cancel", {"comment": "\x00"}, "comment"),
        ("POST", "/api/requests/abc/revoke", {"comment": "x" * (MAX_TEXT + 1)}, "comment"),
        ("POST", "/api/requests/abc/extend", {"duration": "PT1H", "justification": "\x07"}, "justification"),
        ("POST", "/api/grants/1/revoke", {"comment": "x" * (MAX_TEXT + 1)}, "comment"),
        ("POST", "/api/grants/1/revoke", {"comment": "\x1b]0;pwned\x07"}, "comment"),
        ("POST", "/api/requests", _create(role="x" * (MAX_ROLE_PATH + 1)), "role"),
        ("POST", "/api/requests", _create(role="ledger/prod-db/read\n"), "role"),
        ("POST", "/api/requests", _create(justification="evil\x1b[31m"), "justification"),
        ("POST", "/api/integrations", {"name": "ok", "kind": "ledger", "description": "x" * 3000}, "description"),
        ("POST", "/api/integrations", {"name": "ok", "kind": "ledger", "config": {"k": "\x00"}}, "config"),
        ("POST", "/api/birthright/policies", {"name": "p", "groups": ["a\tb"], "roles": [READ]}, "groups.0"),
        ("POST", "/api/birthright/policies", {"name": "p", "groups": ["g"] * 501, "roles": [READ]}, "groups"),
        ("POST", "/api/birthright/policies/order", {"names": ["x" * 201]}, "names.0"),
    ],
)
async def test_f15_oversized_or_unprintable_text_is_422_naming_the_field(
    api: Api, method: str, path: str, body: Any, field: str
) -> None:
    detail = problem(await api.call(ADA, method, path, body), 422, field)
    assert detail.startswith(f"{field}: ")


async def test_tabs_and_newlines_are_allowed_in_free_text(api: Api) -> None:
    created = await api.request(ALAN, DEPLOY, "PT1H", "INC-7:\n\tdeploy the fix")
    assert created["justification"] == "INC-7:\n\tdeploy the fix"


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/requests/%00", {}, "request_id"),
        ("/api/requests/" + "x" * 300, {}, "request_id"),
        ("/api/audit", {"target": "a\x00b"}, "target"),
        ("/api/audit", {"actor": "x" * 400}, "actor"),
        ("/api/integrations/%1b", {}, "name"),
        ("/api/birthright/policies/%00", {}, "name"),
    ],
)
async def test_f15_path_and_query_parameters_are_bounded(api: Api, path: str, params: Any, field: str) -> None:
    problem(await api.call(ADA, "GET", path, **params), 422, field)


@pytest.mark.parametrize("grant_id", [0, 2**31, 10**30])
async def test_f15_grant_ids_out_of_range_are_422(api: Api, grant_id: int) -> None:
    problem(await api.call(ADA, "POST", f"/api/grants/{grant_id}/revoke", {}), 422, "grant_id")


async def test_caller_header_is_bounded(api: Api) -> None:
    problem(await api.call("a" * 400 + "@example.com", "GET", "/api/requests"), 401, "X-Forwarded-Email")


async def test_lone_surrogate_in_a_connector_setting_is_422(api: Api) -> None:
    raw = b'{"name": "surrogate", "kind": "ledger", "config": {"note": "\\ud800"}}'
    response = await api.http.post(
        "/api/integrations", content=raw, headers={"X-Forwarded-Email": ADA, "Content-Type": "application/json"}
    )
    assert "Unicode" in problem(response, 422, "config")


async def test_f15_invalid_json_names_the_body(api: Api) -> None:
    response = await api.http.post(
        "/api/requests", content=b"{not json", headers={"X-Forwarded-Email": ALAN, "Content-Type": "application/json"}
    )
    problem(response, 422, "body")


# --- emails compare case-insensitively -----------------------------------------------------------


async def test_f15_named_approver_written_with_capitals_can_approve(api: Api, settings: Settings) -> None:
    load_into(
        settings,
        {
            "approval_workflows": [
                {
                    "name": "named",
                    "rules": [
                        {
                            "name": "radia",
                            "steps": [{"name": "radia", "approvers": [{"kind": "user", "name": "Radia@Example.COM"}]}],
                            "max_duration": "PT1H",
                        }
                    ],
                }
            ],
            "assignments": [{"workflow": "named", "scope": "ledger/billing-reports/viewer"}],
        },
    )
    created = await api.request(ALAN, "ledger/billing-reports/viewer", "PT1H", "numbers")
    assert created["steps"][0]["eligible"] == ["radia@example.com"]
    assert [r["id"] for r in await api.ok("Radia@Example.com", "GET", "/api/approvals")] == [created["id"]]
    await api.ok(" RADIA@example.com", "POST", f"/api/requests/{created['id']}/approve", {"comment": "ok"})
    await api.wait_for(created["id"], "active")


def test_f15_org_file_emails_are_kept_in_lower_case() -> None:
    from store.org import RoleEntry, UserEntry

    user = UserEntry(email=" Ada@Example.com", manager="Grace@EXAMPLE.com")
    assert (user.email, user.manager) == ("ada@example.com", "grace@example.com")
    assert RoleEntry(name="r", owners=["Frances@Example.com"]).owners == ["frances@example.com"]


# --- the CLI prints what others wrote with control characters escaped ---------------------------


def test_f15_cli_escapes_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    status = {
        "id": "abc",
        "state": "expired",
        "role": READ,
        "duration": "PT1H",
        "requester": "alan@example.com",
        "ended_by": "mallory@example.com",
        "end_reason": "done\x1b[2J\x1b[31m\nabc  active  ledger/prod-db/admin\u202e",
        "steps": [],
    }
    cli._show_request(cli.printable(status))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    assert out.count("\n") == 2  # the request's line and its end: no line forged by the reason
    assert "done\\x1b[2J\\x1b[31m\\nabc" in out
