"""The grants ledger's one counting rule: access is held per account and role, by however many grants.

A target is called to grant on the first active grant of an account and role, and to revoke only
when the last one ends — whatever paths (``jit``, ``birthright``, ``external``) the grants came by.

No target is called inside a DB transaction (one slow target would hold every writer up). A grant
or revoke is three steps, each idempotent: *claim* (one short transaction under the account and
role's lock: record the intent as the grant's ``phase``), *call* the target with no transaction
open, *record* the outcome (a second short transaction). A crash between steps leaves the phase,
and the retry repeats the call (granting what is there, or revoking what is gone, is success).

Why overlapping grants stay right although calls are no longer under the lock:

- A revoke calls the target only when, at its claim, no other active grant of the account and role
  is ``held`` or ``provisioning``; otherwise it ends its row in the claim and calls nothing. So a
  ``revoking`` row means "access is going away and nobody else needs it".
- A grant that finds a ``revoking`` row of its account and role does not claim: it waits (a
  retryable error) until that revoke is recorded, then calls the target itself. So a revoke's call
  never lands after a grant that needed the access, and a grant is never lost to a revoke.
- A grant that finds another ``held`` row (and no revoke in flight) shares it: no call, held at once.
  One that finds only ``provisioning`` rows calls too (idempotent): their call may still fail.
- Claims are serialised (``lock``: an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite),
  so each claim sees every earlier one.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, func, or_, select

from store.tables import Grant

PROVISIONING = "provisioning"
"""Claimed for a grant: the target is being (or may have been) called; the grant counts as covering."""
HELD = "held"
"""The target has it (or it was shared with another grant that the target has)."""
REVOKING = "revoking"
"""Claimed for a revoke of the last grant of its account and role: the target is being called."""
IN_FLIGHT = (PROVISIONING, REVOKING)


def active_grants(
    session: Session,
    account: str,
    role: str,
    *,
    besides_request: str | None = None,
    besides_grant: int | None = None,
    path_not: str | None = None,
    phases: tuple[str, ...] = (HELD, PROVISIONING),
) -> int:
    """Active grants of ``role`` to ``account`` that cover it (not being revoked): all of them, or all but
    request ``besides_request``'s own or grant ``besides_grant``, or all but those of path ``path_not``.
    Call under ``lock(session, account, role)``."""
    query = (
        select(func.count())
        .select_from(Grant)
        .where(
            Grant.account == account,
            Grant.role == role,
            col(Grant.active).is_(True),
            col(Grant.phase).in_(phases),
        )
    )
    if besides_request is not None:
        query = query.where(or_(col(Grant.request_id).is_(None), Grant.request_id != besides_request))
    if besides_grant is not None:
        query = query.where(Grant.id != besides_grant)
    if path_not is not None:
        query = query.where(Grant.path != path_not)
    return int(session.exec(query).one())


def revoke_in_flight(session: Session, account: str, role: str, *, besides_grant: int | None = None) -> bool:
    """Whether another grant of ``role`` to ``account`` is being revoked in the target: a grant waits for it."""
    return active_grants(session, account, role, besides_grant=besides_grant, phases=(REVOKING,)) > 0


def end(session: Session, grant: Grant, now: datetime) -> None:
    """End a grant in the ledger (the target was revoked, or another grant still covers it)."""
    grant.active = False
    grant.ended_at = now
    session.add(grant)


def claim_revoke(session: Session, grant: Grant, now: datetime) -> bool:
    """Claim an active grant's revoke, under its account and role's lock: True when the target must be
    called (it is the last grant: now ``revoking``), False when another grant still covers the account and
    role (the grant is ended here, nothing to call). A grant already ``revoking`` (an earlier attempt
    claimed it) must be called again."""
    if grant.phase == REVOKING:
        return True
    if active_grants(session, grant.account, grant.role, besides_grant=grant.id):
        end(session, grant, now)
        return False
    grant.phase = REVOKING
    grant.phase_at = now
    session.add(grant)
    return True
