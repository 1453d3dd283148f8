"""The scheduled syncs: directory (joiners, movers, leavers) and birthright."""

from __future__ import annotations

from access.types import Model

# --- scheduled syncs: directory and birthright --------------------------------------------


class SyncInput(Model):
    """What started a sync run: the schedule, or a trigger (a policy change, a directory change)."""

    reason: str = "schedule"


class BirthrightSyncInput(SyncInput):
    """A birthright sync run; ``run`` and ``after_seq`` are set when it continues as new mid-apply."""

    run: str | None = None
    """The plan being applied (its items are in the app DB); None: plan first."""
    after_seq: int = 0
    """Items up to this sequence number are done."""


class BirthrightPlanned(Model):
    """What the plan activity stored: the run id and counts, never the items (there may be 100,000s)."""

    run: str
    add: int
    remove: int
    relabel: int
    frozen_roles: list[str] = []


class BirthrightBatchInput(Model):
    run: str
    after_seq: int
    limit: int


class BirthrightBatchResult(Model):
    last_seq: int | None
    """The highest sequence number handled; None when nothing was left after ``after_seq``."""
    more: bool = False
    """The batch was full: there may be items after ``last_seq``."""
    applied: int = 0
    failed: int = 0


class BirthrightFinishInput(Model):
    run: str | None
    error: str | None = None
    """Why the run could not complete (the plan or an apply batch failed)."""


class BirthrightSyncResult(Model):
    run: str | None
    added: int = 0
    removed: int = 0
    relabelled: int = 0
    failed: int = 0
    error: str | None = None


# --- the directory sync: joiners, movers, leavers ------------------------------------------


class Joiner(Model):
    """A user the directory sync added, or made active again."""

    email: str
    name: str = ""
    manager: str | None = None
    groups: list[str] = []


class Mover(Model):
    """A user whose groups (those the source manages) changed."""

    email: str
    added: list[str] = []
    removed: list[str] = []


class Leaver(Model):
    """A user the directory sync made inactive: disabled in their source, or gone from it."""

    email: str
    why: str
    """``disabled in <source>`` or ``gone from <source>``."""


class RequestToEnd(Model):
    """An open request of a user who is no longer active: cancelled while pending, revoked once granted."""

    id: str
    requester: str
    state: str
    """The state the app DB last saw; the workflow decides from its own."""


class ApprovalToReresolve(Model):
    """An open request whose open step names approvers who are no longer active."""

    id: str
    left: list[str]


class LeaverWork(Model):
    """What the directory sync asks request workflows to do about people who are no longer active."""

    end: list[RequestToEnd] = []
    reresolve: list[ApprovalToReresolve] = []
    more: bool = False
    """There was more than one run takes on; the next run finds the rest."""


class DirectorySyncResult(Model):
    """What one directory sync found and changed (the lists are capped; the counts are not)."""

    sources: list[str] = []
    """``file`` or the directory integrations' names."""
    users: int = 0
    """Users the sources reported."""
    groups: int = 0
    joined: int = 0
    moved: int = 0
    left: int = 0
    joiners: list[Joiner] = []
    movers: list[Mover] = []
    leavers: list[Leaver] = []
    groups_changed: bool = False
    """A group was added or emptied, or a membership changed: birthright grants may follow."""
    work: LeaverWork = LeaverWork()


class DirectorySyncInput(SyncInput):
    """The schedule starts a run with a plain ``SyncInput``; a run that continues as new passes on its work."""

    work: LeaverWork | None = None
    """Requests still to signal: the run skips the sync and carries on with these."""


class ReresolveInput(Model):
    left: list[str] = []
    """The approvers who left, named in the reason if the step can no longer be decided."""


class TriggerInput(Model):
    schedule_id: str
    """The sync to run now: ``birthright-sync`` or ``directory-sync``."""
