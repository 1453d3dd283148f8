"""Who is told what, when a request moves: the notices an audit event makes, and the channels they go by.

Plain rules, no I/O. A request's run records its status and audit events in one transaction (the
``record_request`` activity); the same transaction turns those events into notices, one per person and
channel, in the notification outbox (``store.notifications``). Delivery reads the outbox with retries, so a
chat outage delays a message and never a grant or a revoke, and a notice's ``key`` makes each one sent once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from access.durations import format_duration
from access.requests import ExtensionState, RequestStatus, StepState, StepStatus
from access.types import AuditEntry, Model


class Channel(StrEnum):
    SLACK = "slack"
    """A direct message to the person (found by email), or a post in a configured channel."""
    TEAMS = "teams"
    """An Adaptive Card through a Teams Workflows webhook (a channel or chat, not a person); link-out only."""
    EMAIL = "email"
    """Plain text and HTML, with links to the request's page; a link never decides by itself."""
    WEBHOOK = "webhook"
    """Signed JSON for a SIEM or ticketing system: every event, no person."""


PERSONAL_CHANNELS = (Channel.SLACK, Channel.EMAIL)
"""The channels that reach one person; a user's preference picks among the configured ones."""


class NoticeKind(StrEnum):
    """What a notice says; the value is the event name webhooks carry (``lapse.<kind>``)."""

    DECISION_NEEDED = "decision_needed"
    """A step (of a request or of an extension) opened and this person may decide it."""
    REMINDER = "reminder"
    """The step is still open: a reminder to those who may decide it."""
    ESCALATED = "escalated"
    """Nobody decided the step in time: the fallback approvers may now decide it too."""
    DECIDED = "decided"
    """Someone approved or denied: the requester is told, and the other approvers' messages are updated."""
    GRANTED = "granted"
    """The access is there, until when, and how to use it."""
    EXPIRING_SOON = "expiring_soon"
    """The grant ends soon: extend it, or let it go."""
    ENDED = "ended"
    """The request or its grant ended (expired, revoked, cancelled, denied, timed out, failed)."""
    TROUBLE = "trouble"
    """For admins: a provisioning failed, or a revoke keeps failing (the request is ``revoking``)."""
    BREAK_GLASS = "break_glass"
    """Emergency access was granted without approval: loud, to the security group and skipped approvers."""
    BREAK_GLASS_REVIEW = "break_glass_review"
    """An emergency grant waits for its post-hoc review (or was condemned, or went unreviewed)."""
    REVIEW_ASSIGNED = "review_assigned"
    """A review campaign gave this person items to review."""
    REVIEW_REMINDER = "review_reminder"
    """A review campaign's deadline nears and this person has items open."""
    TEST = "test"
    """An admin's test of a channel or destination (the admin Notifications page): no request behind it."""


class Notice(Model):
    """One thing to tell one person (or, with no recipient, a channel: webhooks and Teams), about one event."""

    key: str
    """Unique per event, kind and recipient, and the same when the event is recorded again: a notice is queued,
    and sent, once. For a request: ``<request id>:<record seq>:<action>:<kind>:<recipient>`` (an expiring-soon
    warning: ``ends-<the end>`` in place of the seq)."""
    kind: NoticeKind
    recipient: str | None
    """An email, or None for a broadcast (webhooks, configured Slack or Teams channels)."""
    subject: str
    """The request's id (``req-…``) or the campaign's."""
    role: str = ""
    requester: str = ""
    actor: str = ""
    """Who caused the event (an approver, an admin, ``lapse``)."""
    action: str
    """The audit action the notice comes from (``step.opened``, ``grant.expiring_soon``…)."""
    text: str
    """One plain sentence a person reads first; channels add links and buttons around it."""
    at: datetime
    details: dict[str, Any] = {}
    """What a channel may need besides: ``expires_at``, ``state``, ``step``, ``comment``, ``reauthenticate``
    (deciding needs a recent sign-in: chat buttons only link), ``approved``…"""


# --- the expiring-soon warning -------------------------------------------------------------

DEFAULT_WARNING = timedelta(minutes=15)
WARNING_SHARE = 10
"""By default the warning comes 15 minutes before the end, or at 10% of the grant when that is shorter."""
NO_WARNING_UNDER = timedelta(minutes=10)
"""Grants shorter than this get no warning: there is no time to act on one."""


def warning_lead(duration: timedelta, configured: timedelta | None = None) -> timedelta | None:
    """How long before a grant of ``duration`` ends its holder is warned; None: no warning.

    By default 15 minutes or 10% of the grant, whichever is shorter. ``configured`` (the organisation's
    ``expiry_warning``) replaces that rule, though never more than half the grant. No grant under 10 minutes
    is warned: there is no time to act on it.
    """
    if duration < NO_WARNING_UNDER:
        return None
    lead = min(configured, duration / 2) if configured is not None else min(DEFAULT_WARNING, duration / WARNING_SHARE)
    return lead if lead > timedelta(0) else None


def warning_due(
    granted_at: datetime, expires_at: datetime, configured: timedelta | None, *, now: datetime
) -> timedelta | None:
    """The lead of the warning a grant held from ``granted_at`` to ``expires_at`` is due for at ``now``; None:
    none is due (too short a grant, not yet in its warning window, or already ended). The 10% rule reads the
    grant's length as it is now, extensions included."""
    lead = warning_lead(expires_at - granted_at, configured)
    if lead is None or not expires_at - lead <= now < expires_at:
        return None
    return lead


def expiry_notices(status: RequestStatus, event: AuditEntry) -> list[Notice]:
    """The notices of a ``grant.expiring_soon`` event, keyed by the end it warns of (its ``expires_at``), not by
    a bookkeeping step: whichever worker's scan finds the grant, one end's warning is queued once."""
    tag = "ends-" + str(event.details["expires_at"])
    return _notices(status, event, tag, (), decided_by_person=False)


# --- the rules: which audit events tell whom what ------------------------------------------

_ASKING = {
    "step.opened": NoticeKind.DECISION_NEEDED,
    "step.reminded": NoticeKind.REMINDER,
    "step.escalated": NoticeKind.ESCALATED,
}
_DECISIONS = {"request.approved", "request.denied", "extension.approved", "extension.denied"}
_ENDINGS = {"grant.expired", "grant.revoked", "request.cancelled", "request.timed_out", "request.failed"}
_TROUBLE = {"request.failed", "grant.revoke_failing"}


def needs_admins(events: Sequence[AuditEntry]) -> bool:
    """Whether any of ``events`` tells the admins (so the caller looks them up only then)."""
    return any(event.action in _TROUBLE for event in events)


def notices_for(
    status: RequestStatus, events: Sequence[AuditEntry], seq: int, admins: Sequence[str] = ()
) -> list[Notice]:
    """The notices a request's recorded step makes: ``events`` were written with ``status`` as bookkeeping step
    ``seq`` of its run, so the keys are the same each time that step is recorded.

    Each event that notifies makes one notice per person it concerns (never the person who caused it) and one
    broadcast (no recipient) that shared destinations filter by kind. Events that notify nobody (a request
    created, a step's approvers resolved again) make none: the step they come with says what matters.
    """
    notices: list[Notice] = []
    keys: set[str] = set()
    decisions = sum(1 for e in events if e.action in _DECISIONS and e.actor != "lapse")
    for event in events:
        for notice in _notices(status, event, str(seq), admins, decided_by_person=decisions > 0):
            key, n = notice.key, 1
            while key in keys:  # the same action twice in one step (rare): each keeps its own key
                n += 1
                key = f"{notice.key}#{n}"
            keys.add(key)
            notices.append(notice if key == notice.key else notice.model_copy(update={"key": key}))
    return notices


def _notices(
    status: RequestStatus, event: AuditEntry, tag: str, admins: Sequence[str], *, decided_by_person: bool
) -> list[Notice]:
    action, actor = event.action, event.actor
    requester = status.requester
    told: list[tuple[NoticeKind, str]] = []
    updates: list[str] = []
    """People told nothing new whose earlier prompts must be updated (``update_only``: chat channels only)."""
    broadcast: NoticeKind | None = None
    step = _step(status, action, event.details.get("step"))
    if action in _ASKING:
        broadcast = _ASKING[action]
        decided = {d.approver for d in step.decisions} if step is not None else set()
        eligible = event.details.get("eligible") or (step.eligible if step is not None else [])
        told = [(broadcast, person) for person in eligible if person != requester and person not in decided]
    elif action in _DECISIONS:
        if actor == "lapse":  # a rule needing no approval, or the round's end after the decision that ended it
            broadcast = None if decided_by_person else NoticeKind.DECIDED
        else:
            broadcast = NoticeKind.DECIDED
            told = [(NoticeKind.DECIDED, requester)] if actor != requester else []
            if step is not None and step.state is not StepState.OPEN:
                # The step is over: the other approvers' messages say so, and lose their buttons.
                told += [(NoticeKind.DECIDED, p) for p in step.eligible if p not in (actor, requester)]
            # The decider's own prompt loses its buttons too (they decided here or anywhere else).
            updates = [actor]
    elif action == "grant.provisioned":
        broadcast = NoticeKind.GRANTED
        told = [(broadcast, requester)]
    elif action == "grant.expiring_soon":
        broadcast = NoticeKind.EXPIRING_SOON
        told = [(broadcast, requester)]
    elif action in _ENDINGS or action in _TROUBLE:
        broadcast = NoticeKind.TROUBLE if action in _TROUBLE else NoticeKind.ENDED
        if action in _ENDINGS and actor != requester:
            told = [(NoticeKind.ENDED, requester)]
        if action in _TROUBLE:
            told += [(NoticeKind.TROUBLE, admin) for admin in admins]
        if action in _ENDINGS:
            # Ended while someone could still decide (cancelled, timed out, a grant ended with its extension
            # pending): their prompts say so, and lose their buttons.
            updates = [p for p in _still_asked(status) if p != requester]
    if broadcast is None and not told and not updates:
        return []
    details = _details(status, event, step)
    made: list[Notice] = []
    for kind, person in _unique(told):
        made.append(_notice(status, event, tag, kind, person, details))
    told_people = {person for _, person in told}
    only_updated = {**details, "update_only": True}
    for person in dict.fromkeys(updates):
        if person not in told_people:
            made.append(_notice(status, event, tag, broadcast or NoticeKind.ENDED, person, only_updated))
    if broadcast is not None:
        made.append(_notice(status, event, tag, broadcast, None, details))
    return made


def _notice(
    status: RequestStatus,
    event: AuditEntry,
    tag: str,
    kind: NoticeKind,
    recipient: str | None,
    details: dict[str, Any],
) -> Notice:
    return Notice(
        key=f"{status.id}:{tag}:{event.action}:{kind.value}:{recipient or '*'}",
        kind=kind,
        recipient=recipient,
        subject=status.id,
        role=status.role,
        requester=status.requester,
        actor=event.actor,
        action=event.action,
        text=_text(status, event, kind, recipient),
        at=event.at or status.created_at,
        details=details,
    )


def _still_asked(status: RequestStatus) -> list[str]:
    """Who was asked to decide a step that never got its decision (of the request or of an extension)."""
    rounds = [status.steps, *(x.steps for x in status.extensions)]
    asked = [s for steps in rounds for s in steps if s.state in (StepState.OPEN, StepState.EXPIRED)]
    return [person for step in asked for person in step.eligible]


def _step(status: RequestStatus, action: str, name: Any) -> StepStatus | None:
    """The step an event is about: of the request's round, or of its latest extension's."""
    if action.startswith("extension."):
        rounds = [status.extensions[-1].steps] if status.extensions else []
    elif action.startswith("request."):
        rounds = [status.steps]
    else:  # a step's own event: the round open now, the extension's while one is pending
        pending = [x.steps for x in status.extensions if x.state is ExtensionState.PENDING]
        rounds = [*pending[-1:], status.steps]
    for steps in rounds:
        for step in steps:
            if step.name == name:
                return step
    return None


def _details(status: RequestStatus, event: AuditEntry, step: StepStatus | None) -> dict[str, Any]:
    details: dict[str, Any] = {
        "state": status.state.value,
        "workflow": status.policy,
        "duration": format_duration(status.duration),
        "justification": status.justification,
        "reauthenticate": status.reauthenticate_within is not None,
    }
    if status.expires_at is not None:
        details["expires_at"] = status.expires_at.isoformat()
    for name in ("step", "approvals", "quorum", "account", "credentials", "expires_at", "shared", "escalated_to"):
        if name in event.details:
            details[name] = event.details[name]
    if event.reason:
        details["comment"] = event.reason
    if event.action in _DECISIONS:
        details["approved"] = event.action.endswith(".approved")
    if event.action.startswith("extension.") or (step is not None and all(s is not step for s in status.steps)):
        pending = status.extensions[-1] if status.extensions else None
        details["extension"] = True
        if pending is not None:
            details["extension_duration"] = format_duration(pending.duration)
            details["extension_justification"] = pending.justification
    return details


def _text(status: RequestStatus, event: AuditEntry, kind: NoticeKind, recipient: str | None) -> str:
    """One plain sentence; the channels' own words (``activities.notify.messages``) build on the details."""
    who, role, actor, why = status.requester, status.role, event.actor, event.reason
    extension = event.action.startswith("extension.")
    match kind:
        case NoticeKind.DECISION_NEEDED | NoticeKind.REMINDER | NoticeKind.ESCALATED:
            pending = [x for x in status.extensions if x.state is ExtensionState.PENDING]
            asks = (
                f"{who} asks to extend {role} by {format_duration(pending[-1].duration)}"
                if pending
                else f"{who} asks for {role} for {format_duration(status.duration)}"
            )
            lead = {
                NoticeKind.DECISION_NEEDED: "",
                NoticeKind.REMINDER: "Still waiting for a decision: ",
                NoticeKind.ESCALATED: "Nobody decided in time, so it is yours too: ",
            }[kind]
            return f"{lead}{asks}."
        case NoticeKind.DECIDED:
            verb = "approved" if event.action.endswith(".approved") else "denied"
            what = "extension of" if extension else "request for"
            by = "Lapse" if actor == "lapse" else actor
            return f"{by} {verb} {who}'s {what} {role}" + (f": {why}" if why else ".")
        case NoticeKind.GRANTED:
            return f"{who} now has {role}{_until(status.expires_at)}."
        case NoticeKind.EXPIRING_SOON:
            ends = event.details.get("expires_at") or (status.expires_at.isoformat() if status.expires_at else "")
            return f"{who}'s access to {role} ends soon ({_shown_time(ends)}): extend it or let it go."
        case NoticeKind.TROUBLE:
            if event.action == "grant.revoke_failing":
                return f"Revoking {role} from {who} keeps failing; Lapse keeps trying: {why}"
            return f"Granting {role} to {who} failed: {why}"
        case _:
            ending = {
                "grant.expired": f"{who}'s access to {role} has expired.",
                "grant.revoked": f"{actor} revoked {who}'s access to {role}" + (f": {why}" if why else "."),
                "request.cancelled": f"{actor} cancelled {who}'s request for {role}" + (f": {why}" if why else "."),
                "request.timed_out": f"{who}'s request for {role} timed out: {why}",
                "request.failed": f"{who}'s request for {role} failed: {why}",
            }
            return ending.get(event.action, f"{who}'s request for {role} ended.")


def _until(expires_at: datetime | None) -> str:
    return f" until {_shown_time(expires_at.isoformat())}" if expires_at is not None else ""


def _shown_time(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


def _unique(told: list[tuple[NoticeKind, str]]) -> list[tuple[NoticeKind, str]]:
    return list(dict.fromkeys(told))
