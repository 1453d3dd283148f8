"""Grants outside a request's run: an admin's revoke of a birthright or external grant, and the
expiry backstop."""

from __future__ import annotations

from datetime import timedelta

from access.types import Model

# --- an admin's revoke of a birthright or external grant ----------------------------------


class LedgerRevokeInput(Model):
    grant_id: int
    actor: str
    comment: str = ""


class LedgerRevokeResult(Model):
    role: str
    account: str
    path: str
    still_held: bool
    """Another active grant still covers the account and role, so access stays."""
    returns_on_sync: bool
    """A birthright grant: the next birthright sync grants it again while its policy applies."""


# --- the expiry backstop ------------------------------------------------------------------


class BackstopInput(Model):
    """A run of the expiry backstop; ``after_id`` and ``rounds`` are set when it continues as new."""

    grace: timedelta = timedelta(minutes=2)
    """How long past its end a grant may stay before the backstop steps in."""
    after_id: int = 0
    """Grants up to this id were looked at by an earlier round of this run."""
    rounds: int = 0


class FindOverdueInput(Model):
    grace: timedelta
    after_id: int
    limit: int


class OverdueGrant(Model):
    """A JIT grant past its end (or stuck mid-grant or mid-revoke) whose request run will not revoke it."""

    grant_id: int
    request_id: str
    reason: str
    """Why its run will not: gone, ended, or alive but holding the grant past its end."""


class OverdueFound(Model):
    grants: list[OverdueGrant] = []
    last_id: int | None = None
    """The last grant id looked at; None when there was none."""
    more: bool = False
    """More grants may be overdue beyond ``last_id``."""


class BackstopResult(Model):
    """What one backstop run did: counts, and the request ids whose revoke is failing (at most a few)."""

    revoked: int = 0
    still_held: int = 0
    """Ended in the ledger, but another active grant still covers the account and role."""
    failing: list[str] = []
    rounds: int = 0
    error: str | None = None
