"""The grants ledger's one counting rule: access is held per account and role, by however many grants.

A target is called to grant on the first active grant of an account and role, and to revoke only
when the last one ends — whatever paths (``jit``, ``birthright``, ``external``) the grants came by.
"""

from __future__ import annotations

from sqlmodel import Session, col, func, or_, select

from access.tables import Grant


def active_grants(
    session: Session, account: str, role: str, *, besides_request: str | None = None, path_not: str | None = None
) -> int:
    """Active grants of ``role`` to ``account``: all of them, or all but request ``besides_request``'s own,
    or all but those of path ``path_not``. Call under ``lock(session, account, role)``."""
    query = (
        select(func.count())
        .select_from(Grant)
        .where(Grant.account == account, Grant.role == role, col(Grant.active).is_(True))
    )
    if besides_request is not None:
        query = query.where(or_(col(Grant.request_id).is_(None), Grant.request_id != besides_request))
    if path_not is not None:
        query = query.where(Grant.path != path_not)
    return int(session.exec(query).one())
