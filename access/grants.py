"""Grants: the paths access comes by, the rule birthright access keeps, and grants outside a request's
run (an admin's revoke of a birthright or external grant, and the expiry backstop)."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from access.connectors import Connector
from access.types import Model


class GrantPath(StrEnum):
    """How a grant came to be; the ledger's ``path`` column holds these values."""

    JIT = "jit"
    """An approved request, for a while."""
    BIRTHRIGHT = "birthright"
    """A birthright policy, for as long as it applies."""
    EXTERNAL = "external"
    """Found in the target by discovery, made outside Lapse."""


def birthright_barred(integration: str, connector: Connector | None) -> str | None:
    """Why birthright access cannot go through ``integration``, or None when it can.

    Birthright access has no end, and a connector that makes a login per grant (ephemeral credentials)
    ties each login to its grant's end. The reason reads after "role x is in ".
    """
    if connector is not None and connector.per_grant_accounts:
        return (
            f"{integration}, which makes a login per grant (ephemeral credentials): "
            "birthright access, which has no end, cannot go through it"
        )
    return None


# --- an admin's revoke of a birthright or external grant ----------------------------------


class LedgerRevokeInput(Model):
    grant_id: int
    actor: str
    comment: str = ""


class LedgerRevokeResult(Model):
    role: str
    account: str
    path: GrantPath
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
