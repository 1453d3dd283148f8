"""On-call conditions read from PagerDuty and Opsgenie: ``when.on_call: [pagerduty:P123]`` follows who is on call.

The policy itself on plain data (no I/O); the reader against fake providers (real local HTTP servers speaking
their documented endpoints, ``tests/notify/fake_oncall.py``); the organisation file's check; and requests through
the API and the real workflows: the engineer on call is granted at once, someone else is not, a change of who is
on call changes the decision once the cache has passed, and a provider that is down sends the request to the
normal rule, audited once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from access.on_call import Rotation, parse_rotation
from access.policy import describe_options, evaluate_policy, on_call_refs
from access.types import ApprovalPolicy, PolicyContext, Requester, RoleFacts
from activities import oncall
from activities.oncall import FAILED, RESTORED, OnCallReader, on_call_context
from starter.api.security import proxy_csrf_token
from store.db import session_scope
from store.org import OrgError
from store.settings import Settings
from store.tables import AuditEvent
from tests.conftest import Api, _dispose_engines, load_into, make_settings
from tests.notify.fake_oncall import FakeOpsgenie, FakePagerDuty
from tests.support import eventually

ALAN = "alan@example.com"
BARBARA = "barbara@example.com"
KEN = "ken@example.com"
DENNIS = "dennis@example.com"
LINUS = "linus@example.com"
TOKEN = "pd-test-key-6f1c0a"
GENIE_KEY = "og-test-key-93ab7e"
DEPLOY = "ledger/payments-api/deploy"
P123 = "pagerduty:P123"


# --- the policy, on plain data ---------------------------------------------------------------------------

ON_CALL_DEPLOYS: dict[str, Any] = {
    "name": "on-call deploys",
    "rules": [
        {"name": "on call", "when": {"on_call": [P123]}, "max_duration": "PT1H"},
        {"name": "manager", "steps": [{"name": "manager", "approvers": [{"kind": "manager"}]}], "max_duration": "PT8H"},
    ],
}


def context(on_call: Sequence[str] = (), groups: Sequence[str] = ()) -> PolicyContext:
    requester = Requester(email=ALAN, manager=LINUS, groups=list(groups), on_call=list(on_call))
    return PolicyContext(requester=requester, role=RoleFacts(path=DEPLOY, owners=[DENNIS]))


def test_the_rule_applies_to_whoever_the_provider_says_is_on_call() -> None:
    policy = ApprovalPolicy.model_validate(ON_CALL_DEPLOYS)
    on_call = evaluate_policy(policy, context(on_call=[P123]), duration=timedelta(minutes=30), justification="INC-7")
    assert (on_call.rule, on_call.steps, on_call.on_call) == ("on call", [], [P123])
    off_call = evaluate_policy(policy, context(), duration=timedelta(minutes=30), justification="INC-7")
    assert (off_call.rule, off_call.steps[0].eligible, off_call.on_call) == ("manager", [LINUS], [])
    assert [o.rule for o in describe_options(policy, context(on_call=[P123]))] == ["on call", "manager"]
    assert [o.rule for o in describe_options(policy, context())] == ["manager"]


def test_a_provider_reference_is_never_met_through_a_group_nor_a_group_through_the_provider() -> None:
    policy = ApprovalPolicy.model_validate(
        {
            "name": "mixed",
            "rules": [
                {"name": "rota", "when": {"on_call": [P123, "oncall-platform"]}, "max_duration": "PT1H"},
                {"name": "manager", "steps": [{"approvers": [{"kind": "manager"}]}], "max_duration": "PT8H"},
            ],
        }
    )

    def rule(ctx: PolicyContext) -> str:
        return evaluate_policy(policy, ctx, duration=timedelta(hours=1), justification="x").rule

    assert rule(context(groups=[P123])) == "manager"  # a namesake group does not put anyone on call
    assert rule(context(on_call=["oncall-platform"])) == "manager"
    assert rule(context(groups=["oncall-platform"])) == "rota"  # the group rotation as before
    assert rule(context(on_call=[P123])) == "rota"


def test_only_the_rules_the_requesters_groups_leave_in_play_need_asking() -> None:
    policy = ApprovalPolicy.model_validate(
        {
            "name": "teams",
            "rules": [
                {
                    "name": "payments",
                    "when": {"groups": ["payments"], "on_call": ["opsgenie:Payments"]},
                    "max_duration": "PT1H",
                },
                {"name": "platform", "when": {"groups": ["platform"], "on_call": [P123]}, "max_duration": "PT1H"},
                {
                    "name": "anyone",
                    "when": {"on_call": ["pagerduty:service:PSVC1", "oncall-platform"]},
                    "max_duration": "PT1H",
                },
                {"name": "manager", "steps": [{"approvers": [{"kind": "manager"}]}], "max_duration": "PT8H"},
            ],
        }
    )
    assert on_call_refs(policy, context(groups=["platform"])) == [P123, "pagerduty:service:PSVC1"]
    assert on_call_refs(policy, context()) == ["pagerduty:service:PSVC1"]
    assert (
        on_call_refs(
            ApprovalPolicy.model_validate({**ON_CALL_DEPLOYS, "rules": ON_CALL_DEPLOYS["rules"][1:]}), context()
        )
        == []
    )
    assert on_call_refs(None, context()) == []


@pytest.mark.parametrize(
    ("ref", "rotation"),
    [
        ("pagerduty:P123", Rotation("pagerduty", "schedule", "P123")),
        ("pagerduty:schedule:P123", Rotation("pagerduty", "schedule", "P123")),
        ("pagerduty:service:PSVC1", Rotation("pagerduty", "service", "PSVC1")),
        ("opsgenie:Platform Primary", Rotation("opsgenie", "schedule", "Platform Primary")),
    ],
)
def test_provider_references_name_a_rotation(ref: str, rotation: Rotation) -> None:
    assert parse_rotation(ref) == rotation


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("pagerduty:", "names no PagerDuty schedule"),
        ("pagerduty:service:", "names no PagerDuty service"),
        ("pagerduty:team:T1", "write pagerduty:<schedule id> or pagerduty:service:<service id>"),
        ("pagerduty:P 1", "is not a PagerDuty schedule id"),
        ("opsgenie: ", "names no Opsgenie schedule"),
    ],
)
def test_malformed_provider_references_say_what_is_wrong(ref: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_rotation(ref)


# --- the reader, against fake providers ------------------------------------------------------------------


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty(token=TOKEN) as fake:
        fake.users.update({"PALAN": ALAN, "PBARB": BARBARA, "PKEN": KEN, "PDEN": DENNIS})
        fake.schedules["P123"] = ["PKEN", "PDEN", "PALAN"]  # alan on the second page
        yield fake


@pytest.fixture
def opsgenie() -> Iterator[FakeOpsgenie]:
    with FakeOpsgenie(key=GENIE_KEY) as fake:
        fake.schedules["Platform Primary"] = [BARBARA.upper()]
        yield fake


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPSE_PAGERDUTY_KEY", TOKEN)
    monkeypatch.setenv("LAPSE_OPSGENIE_KEY", GENIE_KEY)


def on_call_section(pagerduty: FakePagerDuty, opsgenie: FakeOpsgenie, *, cache: str = "PT1S") -> dict[str, Any]:
    return {
        "pagerduty": {"token_env": "LAPSE_PAGERDUTY_KEY", "base_url": pagerduty.url},
        "opsgenie": {"key_env": "LAPSE_OPSGENIE_KEY", "base_url": opsgenie.url},
        "cache": cache,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def app_only(tmp_path: Path) -> Iterator[Settings]:
    """An app DB with the demo organisation (no Temporal needed)."""
    settings = make_settings(tmp_path, "127.0.0.1:1")
    yield settings
    _dispose_engines(settings.db_url)


@pytest.fixture
def offline(app_only: Settings, pagerduty: FakePagerDuty, opsgenie: FakeOpsgenie, keys: None) -> Settings:
    """The demo app DB with the fakes as its ``on_call`` providers."""
    load_into(app_only, {"on_call": on_call_section(pagerduty, opsgenie, cache="PT1M")})
    return app_only


def audited(settings: Settings, action: str) -> list[AuditEvent]:
    with session_scope(settings.db_url, write=False) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == action).order_by(col(AuditEvent.id))))


def test_a_schedule_is_read_page_by_page_with_the_key_and_the_users_emails(
    offline: Settings, pagerduty: FakePagerDuty
) -> None:
    reader = OnCallReader()
    assert reader.on_call(offline, ALAN, [P123, "oncall-platform"]) == [P123]
    assert reader.on_call(offline, BARBARA, [P123]) == []
    oncalls = [call for call in pagerduty.calls if call.startswith("/oncalls")]
    assert len(oncalls) == 2  # three people, two a page: ``more`` then the next ``offset``
    assert "schedule_ids%5B%5D=P123" in oncalls[0] and "earliest=true" in oncalls[0] and "offset=2" in oncalls[1]
    assert sum(call.startswith("/users/") for call in pagerduty.calls) == 3  # once each, then cached


def test_a_service_is_its_escalation_policys_first_level(offline: Settings, pagerduty: FakePagerDuty) -> None:
    pagerduty.services["PSVC1"] = "PEP1"
    pagerduty.policies["PEP1"] = [(1, "PBARB"), (2, "PALAN")]
    reader = OnCallReader()
    assert reader.on_call(offline, BARBARA, ["pagerduty:service:PSVC1"]) == ["pagerduty:service:PSVC1"]
    assert reader.on_call(offline, ALAN, ["pagerduty:service:PSVC1"]) == []  # second level: not on call for it
    assert any("escalation_policy_ids%5B%5D=PEP1" in call for call in pagerduty.calls)


def test_an_opsgenie_schedule_is_read_by_name(offline: Settings, opsgenie: FakeOpsgenie) -> None:
    assert OnCallReader().on_call(offline, BARBARA, ["opsgenie:Platform Primary"]) == ["opsgenie:Platform Primary"]
    assert OnCallReader().on_call(offline, ALAN, ["opsgenie:Platform Primary"]) == []
    assert opsgenie.calls[0].startswith("/v2/schedules/Platform%20Primary/on-calls?")


def test_answers_are_shared_for_the_cache_and_fetched_once_at_a_time(
    offline: Settings, pagerduty: FakePagerDuty
) -> None:
    clock = Clock()
    reader = OnCallReader(clock=clock)
    pagerduty.delay = 0.2  # long enough for every thread to arrive while the first one fetches
    answers: list[list[str]] = []
    threads = [threading.Thread(target=lambda: answers.append(reader.on_call(offline, ALAN, [P123]))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [[P123]] * 8

    def oncalls() -> int:
        return sum(call.startswith("/oncalls") for call in pagerduty.calls)

    assert oncalls() == 2  # one fetch (two pages) for eight requesters
    pagerduty.delay = 0
    pagerduty.schedules["P123"] = ["PBARB"]
    clock.now += 59
    assert reader.on_call(offline, ALAN, [P123]) == [P123] and oncalls() == 2  # the cache (PT1M) still stands
    clock.now += 2
    assert reader.on_call(offline, ALAN, [P123]) == [] and reader.on_call(offline, BARBARA, [P123]) == [P123]


def test_a_failing_provider_is_nobody_on_call_audited_once_per_streak_without_its_key(
    offline: Settings, pagerduty: FakePagerDuty, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    reader = OnCallReader(clock=clock)
    monkeypatch.setenv("LAPSE_PAGERDUTY_KEY", "a-wrong-key-0042")  # the fake echoes what it got in its 401
    assert reader.on_call(offline, ALAN, [P123]) == []
    clock.now += oncall.FAILURE_HOLD + 1
    pagerduty.down = True
    assert reader.on_call(offline, ALAN, [P123]) == []  # asked again, still failing: the same streak
    failed = audited(offline, FAILED)
    assert [(e.target, e.actor) for e in failed] == [(P123, "lapse")]
    assert "answered 401" in failed[0].reason and "check the API key" in failed[0].reason
    assert "a-wrong-key-0042" not in failed[0].reason and "[secret]" in failed[0].reason
    monkeypatch.setenv("LAPSE_PAGERDUTY_KEY", TOKEN)
    pagerduty.down = False
    clock.now += oncall.FAILURE_HOLD + 1
    assert reader.on_call(offline, ALAN, [P123]) == [P123]
    assert [e.target for e in audited(offline, RESTORED)] == [P123]


def test_a_slow_provider_times_out_to_nobody(
    offline: Settings, pagerduty: FakePagerDuty, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oncall, "TIMEOUT", 0.3)
    pagerduty.delay = 1.0
    assert OnCallReader().on_call(offline, ALAN, [P123]) == []
    assert "did not answer within 0.3 s" in audited(offline, FAILED)[0].reason


def test_no_provider_is_asked_when_no_rule_in_play_names_one(offline: Settings, pagerduty: FakePagerDuty) -> None:
    policy = ApprovalPolicy.model_validate(
        {
            "name": "p",
            "rules": [{"name": "r", "when": {"groups": ["payments"], "on_call": [P123]}, "max_duration": "PT1H"}],
        }
    )
    unchanged = context(groups=["platform"])
    assert on_call_context(offline, unchanged, policy) is unchanged
    assert on_call_context(offline, unchanged, None) is unchanged
    assert pagerduty.calls == []


def test_a_provider_the_section_does_not_set_up_is_nobody(app_only: Settings, keys: None) -> None:
    settings = app_only  # no on_call section at all
    assert OnCallReader().on_call(settings, ALAN, [P123, "opsgenie:Ops"]) == []
    assert {e.reason for e in audited(settings, FAILED)} == {
        "the on_call section configures no pagerduty",
        "the on_call section configures no opsgenie",
    }


# --- the organisation file's check -----------------------------------------------------------------------


def workflow(*on_call: str) -> dict[str, Any]:
    return {"name": "rota", "rules": [{"name": "on call", "when": {"on_call": list(on_call)}, "max_duration": "PT1H"}]}


def test_the_org_file_refuses_malformed_references_and_providers_not_set_up(app_only: Settings) -> None:
    settings = app_only
    with pytest.raises(OrgError) as malformed:
        load_into(
            settings,
            {"approval_workflows": [workflow("pagerduty:")], "on_call": {"pagerduty": {"token_env": "LAPSE_PD"}}},
        )
    assert "workflow rota, rule on call: 'pagerduty:' names no PagerDuty schedule" in str(malformed.value)
    with pytest.raises(OrgError) as unset:
        load_into(settings, {"approval_workflows": [workflow("opsgenie:Ops", P123)]})
    said = str(unset.value)
    assert "rule on call: 'opsgenie:Ops' names opsgenie, but the on_call section sets up no opsgenie" in said
    assert "'pagerduty:P123' names pagerduty" in said
    load_into(settings, {"on_call": {"pagerduty": {"token_env": "LAPSE_PD"}}})
    load_into(settings, {"approval_workflows": [workflow(P123)]})  # the stored section sets PagerDuty up


# --- requests through the API and the workflows ----------------------------------------------------------


@pytest.fixture
def on_call_deploys(settings: Settings, pagerduty: FakePagerDuty, opsgenie: FakeOpsgenie, keys: None) -> Settings:
    load_into(
        settings,
        {
            "approval_workflows": [ON_CALL_DEPLOYS],
            "assignments": [{"workflow": "on-call deploys", "scope": DEPLOY}],
            "on_call": on_call_section(pagerduty, opsgenie),
        },
    )
    return settings


async def verdict(api: Api, settings: Settings, who: str) -> str:
    form = {"role": DEPLOY, "duration": "PT30M", "justification": "INC-7"}
    headers = {"X-Forwarded-Email": who, "X-CSRF-Token": proxy_csrf_token(settings, who)}
    response = await api.http.post("/requests/preview", data=form, headers=headers)
    assert response.status_code == 200, response.text
    return response.text


async def test_the_engineer_on_call_is_granted_at_once_and_nobody_else(api: Api, on_call_deploys: Settings) -> None:
    alan = await api.request(ALAN, DEPLOY, "PT30M")
    alan = await api.wait_for(alan["id"], "active")
    assert (alan["rule"], alan["steps"]) == ("on call", [])
    barbara = await api.request(BARBARA, DEPLOY, "PT30M")
    assert barbara["state"] == "pending" and barbara["rule"] == "manager"
    assert barbara["steps"][0]["eligible"] == [LINUS]
    catalog = {entry["role"]: entry for entry in await api.ok(ALAN, "GET", "/api/catalog")}
    assert [option["approval"] for option in catalog[DEPLOY]["options"]] == [["automatic"], ["1 of manager"]]


async def test_a_change_of_who_is_on_call_changes_the_decision_after_the_cache(
    api: Api, on_call_deploys: Settings, pagerduty: FakePagerDuty
) -> None:
    text = await verdict(api, on_call_deploys, ALAN)
    assert "Granted without approval" in text and "You are on call now (pagerduty:P123)" in text
    assert "Needs approval" in await verdict(api, on_call_deploys, BARBARA)
    pagerduty.schedules["P123"] = ["PBARB"]  # the rotation moves on: barbara is on call now
    await eventually(
        lambda: verdict(api, on_call_deploys, BARBARA),
        until=lambda text: "Granted without approval" in text,
        what="barbara's request to be granted at once once the cache (PT1S) has passed",
    )
    assert "Needs approval" in await verdict(api, on_call_deploys, ALAN)
    barbara = await api.request(BARBARA, DEPLOY, "PT30M")
    assert (await api.wait_for(barbara["id"], "active"))["rule"] == "on call"


async def test_pagerduty_down_sends_the_request_to_the_normal_rule_and_is_audited(
    api: Api, on_call_deploys: Settings, pagerduty: FakePagerDuty
) -> None:
    pagerduty.down = True
    first = await api.request(ALAN, DEPLOY, "PT30M")
    second = await api.request(ALAN, DEPLOY, "PT20M")
    for request in (first, second):
        assert request["state"] == "pending" and request["rule"] == "manager"
    failed = audited(on_call_deploys, FAILED)
    assert [(e.target, e.details["requester"]) for e in failed] == [(P123, ALAN)]
    assert "PagerDuty answered 503" in failed[0].reason
    pagerduty.down = False
    await eventually(
        lambda: verdict(api, on_call_deploys, ALAN),
        until=lambda text: "Granted without approval" in text,
        what="the on-call rule to apply again once PagerDuty answers",
    )
    assert [e.target for e in audited(on_call_deploys, RESTORED)] == [P123]
