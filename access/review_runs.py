"""A review campaign's run: what its workflow and activities pass each other (ids, times and counts, never items).

The items of a campaign live in the app DB (``store.tables.ReviewItem``): a campaign of 100,000 items keeps a
history of a few hundred events per run, and continues as new carrying only :class:`CampaignRun`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from access.reviews import CampaignState, DefaultDecision, RevokeWhen
from access.types import Model


class CampaignPlan(Model):
    """A campaign's times and rules, fixed when it starts (from the definition as it was then)."""

    campaign_id: str
    started_at: datetime
    deadline: datetime
    reminders: list[datetime]
    """When to remind, earliest first."""
    reminder_labels: list[str]
    """What each reminder is called in the audit log (``P3D before the deadline``)."""
    default: DefaultDecision
    escalation_deadline: timedelta
    revoke: RevokeWhen


class Phase(StrEnum):
    SNAPSHOT = "snapshot"
    OPEN = "open"
    ESCALATED = "escalated"
    CLOSING = "closing"
    """Defaults applied; decisions being carried out."""
    SETTLING = "settling"
    """Closed; waiting for the revokes it asked for to be done, to record their proof."""


class CampaignRun(Model):
    """Where a campaign's run is: what continue-as-new hands on."""

    plan: CampaignPlan
    phase: Phase = Phase.SNAPSHOT
    snapshot_after: int = 0
    """Grants up to this id are snapshotted."""
    reminders_sent: int = 0
    """Reminders (by position in ``plan.reminders``) already sent or skipped."""
    next_sweep: datetime | None = None
    escalation_deadline: datetime | None = None
    close_by: str | None = None
    """Who closed it early (an admin), once asked."""
    submitted: bool = False
    """Decisions were submitted since revokes were last carried out (``revoke: at_once``)."""
    act_after: int = 0
    """Closing: items up to this id are carried out."""
    settle_wait: timedelta = timedelta(seconds=1)
    settle_at: datetime | None = None
    """While open: when to look again at revokes carried out at once (None: none outstanding)."""
    exceptions: bool = False
    """A birthright exception was made: the birthright sync must run."""


class ReviewCampaignInput(Model):
    """A campaign's run. From the schedule only ``definition`` is set: the run names the campaign and starts
    it as a child ``review-<campaign>``; from ``start_campaign`` the campaign id too; continued as new, ``run``."""

    definition: str
    started_by: str = "schedule"
    campaign_id: str | None = None
    run: CampaignRun | None = None


class CampaignRef(Model):
    campaign_id: str


class BeginCampaignInput(Model):
    campaign_id: str
    definition: str
    started_by: str
    started_at: datetime
    """The run's own clock: its deadline and reminders are timers on that clock."""


class SnapshotInput(Model):
    campaign_id: str
    after_grant: int
    limit: int


class SnapshotResult(Model):
    last_grant: int
    """The last grant id looked at (whether in scope or not)."""
    items: int
    more: bool


class OpenedCampaign(Model):
    state: CampaignState
    items: int
    reviewers: int


class ReminderInput(Model):
    campaign_id: str
    label: str


class SweepResult(Model):
    to_fallback: int = 0
    """Open items whose reviewer left, handed to the fallback."""
    already_gone: int = 0


class DefaultInput(Model):
    campaign_id: str
    default: DefaultDecision
    escalation_deadline: datetime | None = None
    """For ``escalate``: the escalated items' new deadline."""
    closing_early: str | None = None
    """An admin closed the campaign early (``escalate`` then keeps, as an escalation that ran out would)."""


class DefaultResult(Model):
    kept: int = 0
    revoked: int = 0
    escalated: int = 0


class ActInput(Model):
    campaign_id: str
    after_id: int = 0
    limit: int
    closing: bool = False
    """At close: also settle every kept item (``kept``)."""


class ActResult(Model):
    last_id: int | None = None
    more: bool = False
    revokes: int = 0
    exceptions: int = 0
    """Birthright grants that became exceptions on their policy (the birthright sync takes them away)."""


class SettleInput(Model):
    campaign_id: str
    limit: int


class SettleResult(Model):
    settled: int = 0
    pending: int = 0
    """Revokes asked for and not yet done."""
    birthright_pending: bool = False


class CloseInput(Model):
    campaign_id: str
    by: str


class CloseNowInput(Model):
    by: str


class CampaignResult(Model):
    campaign_id: str
    state: CampaignState
