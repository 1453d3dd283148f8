"""The directory sync against a real slapd and the real Temporal dev server: joiners, movers, leavers.

Each LDAP test has OUs of its own and an integration marked as the directory, created through
the API; its people carry the demo organisation's emails, so the demo's approval workflows apply.
The sync runs through its schedule, triggered by the API, as an operator would.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ldap3  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
import yaml
from sqlmodel import col, select
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from access import names
from access.syncs import DirectorySyncInput, DirectorySyncResult, LeaverWork, RequestToEnd, SyncInput, TriggerInput
from harness.ldap import LdapServer
from starter.services.org import checked_connector
from starter.services.syncs import ensure_sync_schedules
from store.db import session_scope
from store.org import DEMO_ORG, OrgFile
from store.org_load import load_org
from store.settings import Settings
from store.tables import Group, Membership, User
from tests.conftest import Api, FakeTarget, clear_sync_schedules
from tests.support import eventually
from workflows import directory as directory_workflow

ADMIN = "ada@example.com"
ALAN, LINUS, BARBARA = "alan@example.com", "linus@example.com", "barbara@example.com"
READ = "ledger/prod-db/read"  # read-only: up to 1h automatic
DEPLOY = "ledger/payments-api/deploy"  # manager-approval: alan's manager is linus
WRITE = "ledger/prod-db/write"  # sensitive: on call -> another member of oncall-platform


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    """The organisation file is a copy of the demo: the file-source test edits it between runs."""
    org_file = tmp_path / "org.yaml"
    org_file.write_text(DEMO_ORG.read_text())
    return {"org_file": org_file}


@pytest_asyncio.fixture
async def syncs(env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[None]:
    """The sync schedules, pointed at this test's task queue (their ids are global on the shared server)."""
    await clear_sync_schedules(env.client)
    await ensure_sync_schedules(env.client, settings)
    yield
    await clear_sync_schedules(env.client)


async def run_sync(api: Api, timeout: float = 30) -> dict[str, Any]:  # noqa: ASYNC109
    """Trigger the directory sync through the API and wait for that run to finish; returns its summary."""
    triggered_at = datetime.now(UTC)
    response = await api.call(ADMIN, "POST", "/api/directory/sync")
    assert response.status_code == 202, response.text
    state = await api.sync_run("directory", triggered_at, within=timeout)
    assert state["error"] is None, state["error"]
    summary: dict[str, Any] = state["summary"]
    return summary


@dataclass
class Directory:
    """One test's corner of the LDAP server, and the integration that reads it."""

    server: LdapServer
    name: str
    people: str
    groups: str

    def dn(self, uid: str) -> str:
        return f"uid={uid},{self.people}"

    def add_user(self, uid: str, *, manager: str | None = None) -> str:
        return self.server.add_user(
            uid,
            base=self.people,
            email=f"{uid}@example.com",
            name=uid.title(),
            manager=self.dn(manager) if manager else None,
        )

    def add_group(self, cn: str, uids: list[str]) -> str:
        return self.server.add_group(cn, [self.dn(uid) for uid in uids], base=self.groups)

    def modify(self, dn: str, changes: dict[str, Any]) -> None:
        with self.server.admin() as connection:
            connection.modify(dn, changes)

    def disable(self, uid: str) -> None:
        self.modify(self.dn(uid), {"employeeType": [(ldap3.MODIFY_REPLACE, ["disabled"])]})

    def delete(self, uid: str) -> None:
        with self.server.admin() as connection:
            connection.delete(self.dn(uid))


@pytest_asyncio.fixture
async def directory(
    api: Api,
    env: WorkflowEnvironment,
    ldap_server: LdapServer,
    monkeypatch: pytest.MonkeyPatch,
    syncs: None,
) -> AsyncIterator[Directory]:
    suffix = uuid.uuid4().hex[:6]
    found = Directory(
        ldap_server, f"corp-{suffix}", ldap_server.add_ou(f"people-{suffix}"), ldap_server.add_ou(f"groups-{suffix}")
    )
    monkeypatch.setenv("LAPSE_TEST_LDAP_PASSWORD", ldap_server.admin_password)
    config = {
        "url": ldap_server.url,
        "bind_dn": ldap_server.admin_dn,
        "password_env": "LAPSE_TEST_LDAP_PASSWORD",
        "insecure": True,  # the test's slapd is plain ldap:// on loopback
        "users_base": found.people,
        "groups_base": found.groups,
        "disabled_attribute": "employeeType",
        "disabled_value": "disabled",
    }
    body = {"name": found.name, "kind": "ldap", "config": config, "directory": True}
    response = await api.call(ADMIN, "POST", "/api/integrations", body)
    assert response.status_code == 201, response.text
    assert response.json()["directory"] is True
    yield found
    with contextlib.suppress(RPCError):
        await env.client.get_schedule_handle(names.discovery_id(found.name)).delete()


def groups_of(settings: Settings, email: str) -> list[str]:
    with session_scope(settings.db_url, write=False) as session:
        return list(
            session.exec(
                select(Group.name).join(Membership).join(User).where(User.email == email).order_by(col(Group.name))
            )
        )


def use_rotation(settings: Settings, rotation: str) -> None:
    """Point the demo's sensitive workflow at another on-call group (policies name groups by reference)."""
    org = OrgFile.read(DEMO_ORG)
    (sensitive,) = [w for w in org.approval_workflows if w.name == "sensitive"]
    body = sensitive.model_dump(mode="json")
    body["rules"][0]["when"]["on_call"] = [rotation]
    body["rules"][0]["steps"][0]["approvers"] = [{"kind": "group", "name": rotation}]
    with session_scope(settings.db_url) as session:
        load_org(session, OrgFile.model_validate({"approval_workflows": [body]}), connectors=checked_connector)


def user(settings: Settings, email: str) -> User:
    with session_scope(settings.db_url, write=False) as session:
        found = session.exec(select(User).where(User.email == email)).one()
        return found


def audit_actions(audit: Any, target: str) -> list[str]:
    return [event.action for event in audit(target)]


async def test_joiners_and_movers_come_from_the_directory(
    api: Api, directory: Directory, settings: Settings, audit: Any
) -> None:
    directory.add_user("linus")
    directory.add_user("ada")  # ada stays the admin the organisation file made her
    directory.add_user("newbie", manager="linus")
    directory.add_group("developers", ["linus", "newbie"])
    reviewers = directory.add_group("reviewers", ["linus"])

    first = await run_sync(api)
    assert first["sources"] == [directory.name]
    assert (first["users"], first["groups"]) == (3, 2)
    # The demo's linus and ada are now the directory's: present already, so not joiners.
    # The directory's groups are its own, shown with their source (``store.groups``).
    assert first["joiners"] == [
        {"email": "newbie@example.com", "name": "Newbie", "manager": LINUS, "groups": [f"{directory.name}:developers"]}
    ]
    newbie = user(settings, "newbie@example.com")
    assert (newbie.manager_email, newbie.active, newbie.source) == (LINUS, True, directory.name)
    assert user(settings, LINUS).source == directory.name
    assert user(settings, ADMIN).is_admin
    assert groups_of(settings, LINUS) == ["developers", "engineering", "platform", "reviewers"]
    assert audit_actions(audit, "newbie@example.com") == ["user.joined"]
    # Users the directory does not list are another source's: nobody left.
    assert first["left"] == 0
    assert user(settings, ALAN).active

    directory.modify(reviewers, {"member": [(ldap3.MODIFY_ADD, [directory.dn("newbie")])]})
    directory.modify(directory.dn("newbie"), {"manager": [(ldap3.MODIFY_REPLACE, [directory.dn("ada")])]})
    second = await run_sync(api)
    assert second["joined"] == 0
    assert second["movers"] == [
        {"email": "newbie@example.com", "added": [f"{directory.name}:reviewers"], "removed": []}
    ]
    assert user(settings, "newbie@example.com").manager_email == ADMIN
    assert groups_of(settings, "newbie@example.com") == ["developers", "reviewers"]

    third = await run_sync(api)
    assert (third["joined"], third["moved"], third["left"], third["groups_changed"]) == (0, 0, 0, False)


async def test_a_disabled_leaver_loses_everything_through_their_requests(
    api: Api, directory: Directory, settings: Settings, target: FakeTarget, audit: Any
) -> None:
    directory.add_user("linus")
    directory.add_user("alan", manager="linus")
    directory.add_group("oncall-platform", ["alan", "linus"])
    await run_sync(api)

    granted = await api.request(ALAN, READ, "PT30M", "")
    await api.wait_for(granted["id"], "active")
    pending = await api.request(ALAN, DEPLOY, "PT1H", "hotfix")
    assert pending["state"] == "pending"
    assert (ALAN, READ) in target.held

    directory.disable("alan")
    summary = await run_sync(api)
    reason = "alan@example.com left the organisation (directory sync)"
    assert summary["leavers"] == [{"email": ALAN, "why": f"disabled in {directory.name}"}]
    assert (summary["requests_to_revoke"], summary["requests_to_cancel"]) == (1, 1)

    revoked = await api.wait_for(granted["id"], "revoked")
    assert (revoked["ended_by"], revoked["end_reason"]) == ("lapse", reason)
    assert (ALAN, READ) not in target.held
    cancelled = await api.wait_for(pending["id"], "cancelled")
    assert (cancelled["ended_by"], cancelled["end_reason"]) == ("lapse", reason)
    assert await api.ok(ADMIN, "GET", "/api/grants", all="true") == []
    assert not user(settings, ALAN).active
    assert (await api.call(ALAN, "GET", "/api/grants")).status_code == 401
    assert "user.left" in audit_actions(audit, ALAN)
    assert audit_actions(audit, names.request_workflow_id(granted["id"]))[-1] == "grant.revoked"

    again = await run_sync(api)  # already gone: not reported twice, nothing left to end
    assert (again["left"], again["requests_to_revoke"], again["requests_to_cancel"]) == (0, 0, 0)
    assert audit_actions(audit, ALAN).count("user.left") == 1

    directory.modify(directory.dn("alan"), {"employeeType": [(ldap3.MODIFY_DELETE, [])]})
    back = await run_sync(api)
    assert [j["email"] for j in back["joiners"]] == [ALAN]
    assert user(settings, ALAN).active


async def test_approvals_waiting_on_a_leaver_move_to_the_others_or_fail(
    api: Api, directory: Directory, settings: Settings
) -> None:
    for uid in ("linus", "barbara"):
        directory.add_user(uid)
    directory.add_user("alan", manager="linus")
    directory.add_group("oncall-platform", ["alan", "barbara", "linus"])
    await run_sync(api)
    use_rotation(settings, f"{directory.name}:oncall-platform")  # the directory's, named by its source

    only_linus = await api.request(ALAN, DEPLOY, "PT1H", "hotfix")  # alan's manager
    assert only_linus["steps"][0]["eligible"] == [LINUS]
    peers = await api.request(ALAN, WRITE, "PT1H", "incident")  # another on-call engineer
    assert peers["steps"][0]["eligible"] == [BARBARA, LINUS]

    directory.delete("linus")
    summary = await run_sync(api)
    assert summary["leavers"] == [{"email": LINUS, "why": f"gone from {directory.name}"}]
    assert summary["approvals_to_reresolve"] == 2

    failed = await api.wait_for(only_linus["id"], "failed")
    assert (
        failed["end_reason"]
        == "step 'manager' needs 1 approval but no eligible approver remains: linus@example.com left"
    )
    moved = await eventually(
        lambda: api.status(peers["id"]),
        until=lambda status: status["steps"][0]["eligible"] != [BARBARA, LINUS],
        what="the peers' step to be resolved again without linus",
    )
    assert (moved["state"], moved["steps"][0]["eligible"]) == ("pending", [BARBARA])
    await api.ok(BARBARA, "POST", f"/api/requests/{peers['id']}/approve", {"comment": "go"})
    await api.wait_for(peers["id"], "active")


async def test_the_organisation_file_is_a_source_too(
    api: Api, settings: Settings, syncs: None, target: FakeTarget
) -> None:
    granted = await api.request(ALAN, READ, "PT30M", "")
    await api.wait_for(granted["id"], "active")
    first = await run_sync(api)
    assert first["sources"] == ["file"]
    assert (first["joined"], first["moved"], first["left"]) == (0, 0, 0)

    assert settings.org_file is not None
    org = yaml.safe_load(settings.org_file.read_text())
    for entry in org["users"]:
        if entry["email"] == ALAN:
            entry["active"] = False
        if entry["email"] == BARBARA:
            entry["groups"] = ["engineering", "platform"]  # off the on-call rotation
    org["users"].append({"email": "joan@example.com", "name": "Joan Clarke", "manager": LINUS, "groups": ["platform"]})
    settings.org_file.write_text(yaml.safe_dump(org))

    summary = await run_sync(api)
    assert summary["leavers"] == [{"email": ALAN, "why": "disabled in file"}]
    assert summary["movers"] == [{"email": BARBARA, "added": [], "removed": ["oncall-platform"]}]
    assert summary["joiners"] == [
        {"email": "joan@example.com", "name": "Joan Clarke", "manager": LINUS, "groups": ["platform"]}
    ]
    revoked = await api.wait_for(granted["id"], "revoked")
    assert revoked["end_reason"] == "alan@example.com left the organisation (directory sync)"
    assert (ALAN, READ) not in target.held

    again = await run_sync(api)
    assert (again["joined"], again["moved"], again["left"]) == (0, 0, 0)


async def test_many_leavers_continue_as_new_and_a_missing_request_is_skipped(
    env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """History stays small: signals go out in batches and the run continues as new with the rest."""
    # The constants are read by the workflow as it runs: no sandbox, so the test's values apply.
    monkeypatch.setattr(directory_workflow, "SIGNAL_BATCH", 2)
    monkeypatch.setattr(directory_workflow, "SIGNALS_PER_RUN", 4)
    ends = [RequestToEnd(id=f"gone-{n}", requester=ALAN, state="active") for n in range(9)]

    @activity.defn(name=names.SYNC_DIRECTORY)
    async def sync_directory(_input: SyncInput) -> DirectorySyncResult:
        return DirectorySyncResult(left=1, work=LeaverWork(end=ends))

    @activity.defn(name=names.TRIGGER_SYNC)
    async def trigger_sync(_input: TriggerInput) -> bool:
        return True

    queue = f"test-{uuid.uuid4().hex[:8]}"
    workflow_id = f"directory-sync-test-{uuid.uuid4().hex[:6]}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[directory_workflow.DirectorySyncWorkflow],
        activities=[sync_directory, trigger_sync],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await env.client.start_workflow(
            directory_workflow.DirectorySyncWorkflow.run, DirectorySyncInput(), id=workflow_id, task_queue=queue
        )
        last = await handle.result()  # follows the chain of runs
    assert [r.id for r in last.work.end] == ["gone-8"]
    runs = [e async for e in env.client.list_workflows(f'WorkflowId="{workflow_id}"')]
    assert len(runs) == 3
    assert sum(1 for r in runs if r.status is WorkflowExecutionStatus.CONTINUED_AS_NEW) == 2


async def test_a_directory_that_would_empty_the_organisation_is_refused(
    api: Api, directory: Directory, settings: Settings
) -> None:
    """A wrong filter or an emptied OU looks like everyone leaving: the run is refused and nothing changes."""
    staff = [f"staff{n}" for n in range(10)]
    for uid in staff:
        directory.add_user(uid)
    first = await run_sync(api)
    assert first["joined"] == 10

    for uid in staff[:3]:  # 3 of 10 (30 %) at once: more than the 20 % a run may take away
        directory.delete(uid)
    triggered_at = datetime.now(UTC)
    assert (await api.call(ADMIN, "POST", "/api/directory/sync")).status_code == 202
    state = await api.sync_run("directory", triggered_at)
    assert "would make 3 of its 10 active users leavers" in state["error"]
    assert all(user(settings, f"{uid}@example.com").active for uid in staff)
