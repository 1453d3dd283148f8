"""The request activities alone: no target is called inside an app DB transaction, and overlapping
grants and revokes of one account and role stay right although their calls are not under a lock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from access.connectors import Target
from access.requests import GrantInput, RecordInput, RequestStatus, RevokeInput
from access.syncs import BirthrightBatchInput, SyncInput
from access.types import AuditEntry
from activities.birthright import BirthrightActivities
from activities.connectors import BUILT_IN
from activities.requests import RequestActivities
from store.db import session_scope
from store.ledger import HELD, PROVISIONING
from store.settings import Settings
from store.tables import AccessRequest, AuditEvent, BirthrightPolicy, Grant
from tests.conftest import FakeTarget

READ = "ledger/prod-db/read"
KATHERINE = "katherine@example.com"


@dataclass
class SlowTarget(FakeTarget):
    """Says when a grant or revoke has reached it; revokes block until ``revoke_gate`` is set."""

    granting: threading.Event = field(default_factory=threading.Event)
    revoking: threading.Event = field(default_factory=threading.Event)
    revoke_gate: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.revoke_gate.set()

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> None:
        self.granting.set()
        super().grant(account, target, expires_at)

    def revoke(self, account: str, target: Target) -> None:
        self.revoking.set()
        self.revoke_gate.wait(timeout=30)
        super().revoke(account, target)


def _activities(settings: Settings, target: FakeTarget) -> RequestActivities:
    return RequestActivities(settings.db_url, connectors={**BUILT_IN, "ledger": target.connector})


def _grant_input(request_id: str) -> GrantInput:
    return GrantInput(request_id=request_id, requester=KATHERINE, role=READ, duration=timedelta(minutes=30))


def _in_thread(run: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            run()
        except BaseException as error:  # SystemExit too: reported to the test
            errors.append(error)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, errors


def _grants(settings: Settings) -> dict[str, str]:
    """Each request's grant: its phase while active, else ``ended``."""
    with session_scope(settings.db_url, write=False) as session:
        return {g.request_id or "": g.phase if g.active else "ended" for g in session.exec(select(Grant))}


def test_f11_slow_target_does_not_block_other_writers(settings: Settings) -> None:
    target = SlowTarget()
    activities = _activities(settings, target)
    target.grant_gate.clear()  # the target takes its time (up to 30 s) to grant
    granting, grant_errors = _in_thread(
        lambda: ActivityEnvironment().run(activities.provision_grant, _grant_input("a"))
    )
    try:
        assert target.granting.wait(timeout=10)
        now = datetime.now(UTC)
        other = RequestStatus(
            id="b",
            requester="alan@example.com",
            role=READ,
            duration=timedelta(minutes=5),
            justification="",
            policy="read-only",
            rule="short",
            created_at=now,
        )
        recording, record_errors = _in_thread(
            lambda: ActivityEnvironment().run(activities.record_request, RecordInput(status=other, events=[]))
        )
        recording.join(timeout=5)
        assert not recording.is_alive(), "another request could not be recorded while a target was granting"
        assert record_errors == []
        assert _grants(settings) == {"a": PROVISIONING}  # claimed before the call
    finally:
        target.grant_gate.set()
        granting.join(timeout=35)
    assert grant_errors == []
    with session_scope(settings.db_url, write=False) as session:
        assert session.get(AccessRequest, "b") is not None
    assert _grants(settings) == {"a": HELD}
    assert (KATHERINE, READ) in target.held


def test_grant_waits_for_a_revoke_in_flight_and_is_not_lost_to_it(settings: Settings) -> None:
    target = SlowTarget()
    activities = _activities(settings, target)
    ActivityEnvironment().run(activities.provision_grant, _grant_input("a"))
    target.revoke_gate.clear()  # the revoke of the last grant is under way in the target
    revoke = RevokeInput(request_id="a", requester=KATHERINE, role=READ)
    revoking, revoke_errors = _in_thread(lambda: ActivityEnvironment().run(activities.revoke_grant, revoke))
    try:
        assert target.revoking.wait(timeout=10)
        # A new grant of the same account and role now must not be made before that revoke lands.
        with pytest.raises(ApplicationError) as refused:
            ActivityEnvironment().run(activities.provision_grant, _grant_input("b"))
        assert refused.value.type == "RevokeInFlight" and not refused.value.non_retryable
    finally:
        target.revoke_gate.set()
        revoking.join(timeout=35)
    assert revoke_errors == []
    ActivityEnvironment().run(activities.provision_grant, _grant_input("b"))  # the activity's retry
    assert (KATHERINE, READ) in target.held
    assert [c[0] for c in target.calls] == ["grant", "revoke", "grant"]
    assert _grants(settings) == {"a": "ended", "b": HELD}


def test_a_revoke_while_another_grant_is_being_made_leaves_the_target_alone(settings: Settings) -> None:
    target = SlowTarget()
    activities = _activities(settings, target)
    target.grant_gate.clear()  # two grants of the same account and role, both reaching the target
    threads = []
    for request_id in ("a", "b"):
        target.granting.clear()
        threads.append(
            _in_thread(partial(ActivityEnvironment().run, activities.provision_grant, _grant_input(request_id)))
        )
        assert target.granting.wait(timeout=10)
    try:
        # "a" is taken back while "b" is still being made: "b" will need the access, so no revoke.
        result = ActivityEnvironment().run(
            activities.revoke_grant, RevokeInput(request_id="a", requester=KATHERINE, role=READ)
        )
        assert result.still_held
    finally:
        target.grant_gate.set()
        for thread, _ in threads:
            thread.join(timeout=35)
    assert [errors for _, errors in threads] == [[], []]
    assert (KATHERINE, READ) in target.held
    assert [c[0] for c in target.calls] == ["grant", "grant"]
    assert _grants(settings) == {"a": "ended", "b": HELD}


class CrashingTarget(SlowTarget):
    crash: bool = True

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> None:
        if self.crash:
            raise SystemExit("worker killed mid-call")
        super().grant(account, target, expires_at)


def test_a_crash_between_claim_and_record_converges_on_retry(settings: Settings) -> None:
    target = CrashingTarget()
    activities = _activities(settings, target)
    with pytest.raises(SystemExit):
        ActivityEnvironment().run(activities.provision_grant, _grant_input("a"))
    assert _grants(settings) == {"a": PROVISIONING}
    target.crash = False
    result = ActivityEnvironment().run(activities.provision_grant, _grant_input("a"))
    assert not result.shared and (KATHERINE, READ) in target.held
    assert _grants(settings) == {"a": HELD}


def test_birthright_apply_calls_the_target_outside_any_transaction(settings: Settings) -> None:
    target = SlowTarget()
    birthright = BirthrightActivities(settings.db_url, connectors={**BUILT_IN, "ledger": target.connector})
    with session_scope(settings.db_url) as session:
        session.add(BirthrightPolicy(name="finance", position=0, groups=["finance"], roles=[READ]))
    run = ActivityEnvironment().run(birthright.plan_birthright_sync, SyncInput()).run
    target.grant_gate.clear()
    batch = BirthrightBatchInput(run=run, after_seq=0, limit=10)
    applying, apply_errors = _in_thread(partial(ActivityEnvironment().run, birthright.apply_birthright_batch, batch))
    try:
        assert target.granting.wait(timeout=10)
        writing, write_errors = _in_thread(partial(_record_other_request, settings))
        writing.join(timeout=5)
        assert not writing.is_alive(), "the app DB stayed locked while a birthright grant reached the target"
        assert write_errors == []
    finally:
        target.grant_gate.set()
        applying.join(timeout=35)
    assert apply_errors == []
    assert (KATHERINE, READ) in target.held


def _record_other_request(settings: Settings) -> None:
    now = datetime.now(UTC)
    status = RequestStatus(
        id="other",
        requester="alan@example.com",
        role=READ,
        duration=timedelta(minutes=5),
        justification="",
        policy="read-only",
        rule="short",
        created_at=now,
    )
    activities = RequestActivities(settings.db_url)
    ActivityEnvironment().run(activities.record_request, RecordInput(status=status, events=[]))


def test_a_grant_that_fails_for_good_is_taken_back_before_the_failure(settings: Settings) -> None:
    target = SlowTarget(permanent_grant_error="the role is read-only in the target")
    activities = _activities(settings, target)
    with pytest.raises(ApplicationError) as failed:
        ActivityEnvironment().run(activities.provision_grant, _grant_input("a"))
    assert failed.value.non_retryable
    assert _grants(settings) == {"a": "ended"}  # no row left claiming access nobody will revoke
    assert [c[0] for c in target.calls] == ["revoke"]  # idempotent: whatever reached the target is gone
    with session_scope(settings.db_url, write=False) as session:
        actions = [e.action for e in session.exec(select(AuditEvent).where(AuditEvent.target == "access-request-a"))]
    assert actions == ["grant.taken_back"]


def test_the_built_in_ledger_grants_and_revokes_in_one_step_counting_overlaps(settings: Settings) -> None:
    # The ledger row is the grant itself: no target to call, so no row waits in a provisioning or revoking
    # phase; overlapping grants of one account and role still end one at a time.
    activities = RequestActivities(settings.db_url)
    env = ActivityEnvironment()
    first = env.run(activities.provision_grant, _grant_input("ledger-one"))
    second = env.run(activities.provision_grant, _grant_input("ledger-two"))
    assert (first.shared, second.shared) == (False, True)
    assert _grants(settings) == {"ledger-one": HELD, "ledger-two": HELD}

    one = env.run(activities.revoke_grant, RevokeInput(request_id="ledger-one", requester=KATHERINE, role=READ))
    assert one.still_held is True
    assert _grants(settings) == {"ledger-one": "ended", "ledger-two": HELD}
    two = env.run(activities.revoke_grant, RevokeInput(request_id="ledger-two", requester=KATHERINE, role=READ))
    assert two.still_held is False
    assert _grants(settings) == {"ledger-one": "ended", "ledger-two": "ended"}


def test_a_grant_waiting_on_its_target_heartbeats_so_a_dead_worker_is_noticed(settings: Settings) -> None:
    # The workflow gives these activities a short heartbeat timeout: a worker killed mid-grant is retried
    # after a few seconds, not after the two-minute start-to-close timeout.
    target = FakeTarget()
    target.grant_gate.clear()
    threading.Timer(2.5, target.grant_gate.set).start()
    env = ActivityEnvironment()
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    env.run(_activities(settings, target).provision_grant, _grant_input("slow-one"))

    assert len(beats) >= 2
    assert (KATHERINE, READ) in target.held


def test_a_bookkeeping_step_replayed_after_a_worker_died_is_audited_once(settings: Settings) -> None:
    # The worker committed the step, then died before the workflow task completed: the replay runs the
    # local activity again with the same step number.
    status = RequestStatus(
        id="replayed",
        requester=KATHERINE,
        role=READ,
        duration=timedelta(minutes=5),
        justification="",
        policy="read-only",
        rule="quick look",
        created_at=datetime.now(UTC),
    )
    events = [AuditEntry(actor=KATHERINE, action="request.created", target="access-request-replayed")]
    activities = _activities(settings, FakeTarget())
    env = ActivityEnvironment()
    for _ in range(2):
        env.run(activities.record_request, RecordInput(status=status, events=events, seq=1))
    env.run(activities.record_request, RecordInput(status=status, events=events, seq=2))

    with session_scope(settings.db_url, write=False) as session:
        audited = session.exec(select(AuditEvent).where(AuditEvent.target == "access-request-replayed")).all()
        assert session.get(AccessRequest, "replayed").recorded_seq == 2  # type: ignore[union-attr]
    assert len(audited) == 2  # steps 1 and 2, not step 1 twice


def test_the_clock_starts_when_the_target_granted_not_when_the_grant_was_claimed(settings: Settings) -> None:
    # A target that takes its time (an outage, a retry): the grant still gets its whole duration.
    target = FakeTarget()
    target.grant_gate.clear()
    threading.Timer(1.5, target.grant_gate.set).start()
    asked = datetime.now(UTC)

    result = ActivityEnvironment().run(_activities(settings, target).provision_grant, _grant_input("late-one"))

    assert result.granted_at >= asked + timedelta(seconds=1.4)
    assert result.expires_at == result.granted_at + timedelta(minutes=30)
    with session_scope(settings.db_url, write=False) as session:
        grant = session.exec(select(Grant).where(Grant.request_id == "late-one")).one()
    assert (grant.granted_at, grant.expires_at) == (result.granted_at, result.expires_at)
