"""/api/notifications/settings, /api/me/notifications, /api/requests/{id}/notifications, and the organisation
file's ``notifications:`` section: who may set what, what is refused and why, what a request's page lists."""

from __future__ import annotations

from typing import Any

from tests.api.answers import problem
from tests.conftest import Api
from tests.support import eventually

ADA, ALAN, LINUS = "ada@example.com", "alan@example.com", "linus@example.com"
SECTION: dict[str, Any] = {
    "email": {"host": "mail.example.com", "sender": "Lapse <lapse@example.com>"},
    "webhooks": [{"name": "siem", "url": "https://siem.example.com/in", "secret_file": "siem-secret"}],
    "expiry_warning": "PT20M",
}


async def test_admins_set_the_organisations_channels_and_it_is_audited(api: Api, audit: Any) -> None:
    demo = (await api.ok(ADA, "GET", "/api/notifications/settings"))["settings"]
    assert demo["email"]["host"] == "127.0.0.1", "the demo's: mail to the local catcher"
    problem(await api.call(ALAN, "GET", "/api/notifications/settings"), 403)
    problem(await api.call(ALAN, "PUT", "/api/notifications/settings", SECTION), 403)

    saved = await api.ok(ADA, "PUT", "/api/notifications/settings", SECTION)
    assert saved["settings"]["email"]["host"] == "mail.example.com" and saved["updated_by"] == ADA
    assert saved["settings"]["webhooks"][0]["secret_file"] == "siem-secret", "a reference is shown as it is"
    assert saved["settings"]["expiry_warning"] == "PT20M"
    events = [e for e in audit("notifications") if e.action == "notifications.updated"]
    assert len(events) == 1 and events[0].details["before"]["email"]["host"] == "127.0.0.1"
    assert events[0].details["after"]["email"]["host"] == "mail.example.com"

    await api.ok(ADA, "PUT", "/api/notifications/settings", SECTION)
    assert len([e for e in audit("notifications") if e.action == "notifications.updated"]) == 1, "no change"


async def test_a_secret_given_by_value_is_refused_without_being_echoed(api: Api) -> None:
    pasted = "xoxb-1234-very-secret"
    body = {"slack": {"token": pasted, "signing_secret_env": "LAPSE_SLACK_SIGNING"}}
    response = await api.call(ADA, "PUT", "/api/notifications/settings", body)
    assert response.status_code == 422 and pasted not in response.text
    bad_env = {"email": {**SECTION["email"], "username": "lapse", "password_env": "HOME"}}
    assert (await api.call(ADA, "PUT", "/api/notifications/settings", bad_env)).status_code == 422


async def test_a_person_chooses_their_channels_among_those_configured(api: Api) -> None:
    await api.ok(ADA, "PUT", "/api/notifications/settings", {})  # nothing configured
    nothing = await api.ok(ALAN, "GET", "/api/me/notifications")
    assert nothing == {"channels": None, "effective": [], "available": [], "defaults": []}
    await api.ok(ADA, "PUT", "/api/notifications/settings", SECTION)
    assert (await api.ok(ALAN, "GET", "/api/me/notifications"))["effective"] == ["email"]

    assert "not configured" in problem(
        await api.call(ALAN, "PUT", "/api/me/notifications", {"channels": ["slack"]}), 422, "channels"
    )
    assert "not a person" in problem(
        await api.call(ALAN, "PUT", "/api/me/notifications", {"channels": ["webhook"]}), 422, "channels"
    )
    none = await api.ok(ALAN, "PUT", "/api/me/notifications", {"channels": []})
    assert none["channels"] == [] and none["effective"] == []
    back = await api.ok(ALAN, "PUT", "/api/me/notifications", {"channels": None})
    assert back["channels"] is None and back["effective"] == ["email"]


async def test_a_requests_notifications_are_listed_for_those_who_may_see_it(api: Api) -> None:
    await api.ok(ADA, "PUT", "/api/notifications/settings", SECTION)
    created = await api.request(ALAN, "ledger/payments-api/deploy", "PT1H")  # linus, his manager, decides
    url = f"/api/requests/{created['id']}/notifications"
    listed = await eventually(lambda: api.ok(ALAN, "GET", url), until=lambda rows: len(rows) == 2, what="2 rows")
    assert {(n["recipient"], n["channel"], n["target"], n["kind"]) for n in listed} == {
        (LINUS, "email", "", "decision_needed"),
        (None, "webhook", "siem", "decision_needed"),
    }
    assert all(n["state"] == "pending" and n["action"] == "step.opened" for n in listed), "no dispatcher here"
    assert len(await api.ok(LINUS, "GET", url)) == 2
    problem(await api.call("grace@example.com", "GET", url), 403)
    problem(await api.call(ALAN, "GET", "/api/requests/nosuchrequest/notifications"), 404)


async def test_the_organisation_file_sets_the_section_and_refuses_a_bad_one_naming_where(api: Api) -> None:
    await api.ok(ADA, "POST", "/api/org", {"notifications": SECTION})
    assert (await api.ok(ADA, "GET", "/api/notifications/settings"))["updated_by"] == "org-file"

    refused = await api.call(ADA, "POST", "/api/org", {"notifications": {"email": {"host": "x"}}})
    assert problem(refused, 422, "notifications.email.sender")
    kept = await api.ok(ADA, "GET", "/api/notifications/settings")
    assert kept["settings"]["email"]["host"] == "mail.example.com", "a refused file changes nothing"
