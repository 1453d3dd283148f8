"""Pages of the grants ledger's active grants in any order, each read through an index (the permissions table).

Every page is a keyset range, (sort key, id) after the last row shown, over an index that gives the rows in
that order with the filters' equalities in front of it (``Grant``'s ``ix_grant_held_*``, migration 0011):
``(key, id)``, ``(path, key, id)`` and ``(role, path, key, id)``. A filter on a set of roles (an integration,
a resource, a role prefix) reads each (role, path) range for its first rows and keeps the first of them all,
so neither a common nor a rare role, nor rows clustered at one end of the order, make a page scan the
ledger. Rows without a key (standing grants by "until", unlinked accounts by "user") come last, by id.

"Expiring before" is a range on another column than the order's: a small range is read whole and sorted,
a large one is filtered while the order's index over the grants that end at all is walked, each end read in the
index (``ix_grant_ending_*``). PostgreSQL's planner makes these choices from its statistics; SQLite has none, so
this module makes them for it (a capped count, and expressions that keep it off the indexes it must not take).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, String, and_, bindparam, func, or_, text
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlmodel import Session, col, select

from access.grants import GrantPath
from store.tables import Grant

NULLABLE = {"expires_at", "user_email"}
"""Sort keys some rows have none of."""
PROBE = 10_000
"""An "expiring before" range smaller than this is read whole and sorted."""
MAX_RANGES = 150
"""(role, path) ranges read for one page at most; a role filter matching more roles filters a walk instead."""


@dataclass(frozen=True)
class LedgerFilter:
    user: str | None = None
    scopes: tuple[str, ...] = ()
    """Role paths or their starts, in whole parts: a role matches one when it is it or lies under it."""
    path: str | None = None
    expiring_before: datetime | None = None


@dataclass
class Position:
    """Where a page ended: the last row's key (None among the rows without one) and id."""

    standing: bool
    key: Any
    id: int


def read_page(
    session: Session, found: LedgerFilter, *, key: str, descending: bool, after: Position | None, limit: int
) -> list[Grant]:
    """Up to ``limit`` active grants matching ``found``, ordered by ``key`` then id, after ``after``."""
    postgres = session.get_bind().dialect.name == "postgresql"
    column: Any = col(getattr(Grant, key))
    where: list[ColumnElement[bool]] = [held(postgres)]
    # One person's grants are few: read them by the user index and sort them. SQLite, which cannot know
    # that, is shown no other index to take (an expression over a column, the same value, uses none).
    plain = (lambda c: func.coalesce(c, c)) if found.user and not postgres else (lambda c: c)
    if found.user:
        where.append(col(Grant.user_email) == found.user)
        column = plain(column)
    # "Expiring before" under another order reads no (role, path) ranges: grants on one path may have no end.
    expiring_elsewhere = found.expiring_before is not None and key != "expires_at"
    ranges: list[tuple[str, str]] = []  # (role, path) pairs, each read as its own index range
    paths = [found.path] if found.path else [p.value for p in GrantPath]
    if found.scopes:
        roles = roles_within(session, found.scopes, postgres=postgres)
        if not roles:
            return []
        if found.user is None and not expiring_elsewhere and len(roles) * len(paths) <= MAX_RANGES:
            ranges = [(r, p) for r in roles for p in paths]
        else:
            where.append(plain(col(Grant.role)).in_(roles))
            # Every path, said: (role, path, expires_at) is then a range for each role and path.
            where.append(plain(col(Grant.path)).in_(paths))
    elif found.path:
        where.append(plain(col(Grant.path)) == found.path)
    order: Any = column
    walk: str | None = None
    if found.expiring_before is not None:
        expiring: ColumnElement[bool] = col(Grant.expires_at) < found.expiring_before
        if expiring_elsewhere and not postgres and found.user is None:
            # SQLite has no statistics to weigh the range against the order's index: count, and tell it.
            if _count(session, [*where, expiring], PROBE) < PROBE:
                order = func.coalesce(column, column)  # the same order, which no index gives: read the range
            else:  # walk the order's index over the grants that end, each end read there
                where.append(col(Grant.expires_at).is_not(None))
                walk = f"ix_grant_ending_{key}"
        where.append(expiring)

    rows: list[Grant] = []
    if after is None or not after.standing:
        terms: list[ColumnElement[bool]] = [column.is_not(None)] if key in NULLABLE else []
        if after is not None:
            terms += _beyond(column, after.key, after.id, descending)
        rows = _read(session, [*where, *terms], ranges, order, column, descending, limit, walk=walk)
    excluded = (key == "expires_at" and found.expiring_before is not None) or (key == "user_email" and found.user)
    if key in NULLABLE and len(rows) < limit and not excluded:
        terms = [column.is_(None)]
        if after is not None and after.standing:
            terms.append(col(Grant.id) < after.id if descending else col(Grant.id) > after.id)
        rows += _read(
            session, [*where, *terms], ranges, col(Grant.id), col(Grant.id), descending, limit - len(rows), walk=walk
        )
    return rows


def held(postgres: bool) -> ColumnElement[bool]:
    """Active, said as the partial indexes say it (``store.tables.HELD``), or no database would use them."""
    active = cast(ColumnElement[bool], col(Grant.active))
    return active if postgres else active.is_not(False)


def _beyond(column: Any, key: Any, grant_id: int, descending: bool) -> list[ColumnElement[bool]]:
    """The rows after (key, id) in the page's order; the first term alone bounds the index range."""
    if descending:
        return [column <= key, or_(column < key, and_(column == key, col(Grant.id) < grant_id))]
    return [column >= key, or_(column > key, and_(column == key, col(Grant.id) > grant_id))]


def _read(
    session: Session,
    where: list[ColumnElement[bool]],
    ranges: list[tuple[str, str]],
    order: Any,
    key: Any,
    descending: bool,
    limit: int,
    *,
    walk: str | None = None,
) -> list[Grant]:
    ids = col(Grant.id)
    by = (order.desc(), ids.desc()) if descending else (order, ids)
    if not ranges:
        query = select(Grant).where(*where).order_by(*by).limit(limit)
        if walk is not None:
            return list(session.execute(_indexed_by(query, walk)).scalars().all())
        return list(session.exec(query).all())
    # The first rows of each range, then the first of them all: the database sorts them, in its own collation.
    # One range's query is compiled once and repeated as text with its own role and path: built as a thousand
    # expression objects instead, the statement costs more than it takes to run (and feeds the garbage collector).
    dialect = _NAMED[session.get_bind().dialect.name]
    one: Any = select(ids.label("id"), key.label("k")).where(
        *where, col(Grant.role) == bindparam("range_role", type_=String), col(Grant.path) == bindparam("range_path")
    )
    compiled = one.order_by(*by).limit(limit).compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    arm = str(compiled)
    types = {name: bind.type for name, bind in compiled.binds.items()}
    values: dict[str, Any] = {n: v for n, v in compiled.params.items() if not n.startswith("range_")}
    arms = []
    for n, (role, path) in enumerate(ranges):
        values |= {f"range_role_{n}": role, f"range_path_{n}": path}
        named = arm.replace(":range_role", f":range_role_{n}").replace(":range_path", f":range_path_{n}")
        arms.append(f"SELECT * FROM ({named}) AS range_{n}")
    direction = " DESC" if descending else ""
    merged = f"SELECT id FROM ({' UNION ALL '.join(arms)}) AS firsts ORDER BY k{direction}, id{direction} LIMIT :first"
    binds = [bindparam(n, v, type_=types.get(n, types.get(n.rsplit("_", 1)[0]))) for n, v in values.items()]
    chosen = list(session.connection().execute(text(merged).bindparams(*binds), {"first": limit}).scalars())
    found = {g.id: g for g in session.exec(select(Grant).where(ids.in_(chosen))).all()}
    return [found[i] for i in chosen]


def _indexed_by(query: Select[Any], index: str) -> Any:
    """``query`` on SQLite, told which index to walk (``INDEXED BY``, which SQLAlchemy does not say): with no
    statistics, SQLite takes an index on ``active`` for a selective one, whatever it is told otherwise."""
    compiled = query.compile(dialect=_NAMED["sqlite"], compile_kwargs={"render_postcompile": True})
    sql = str(compiled).replace("FROM grant", f"FROM grant INDEXED BY {index}", 1)
    types = {name: bind.type for name, bind in compiled.binds.items()}
    binds = [
        bindparam(name, value, type_=types.get(name, types.get(name.rsplit("_", 1)[0])))
        for name, value in compiled.params.items()
    ]
    return select(Grant).from_statement(text(sql).bindparams(*binds))


_NAMED = {"sqlite": SQLiteDialect(paramstyle="named"), "postgresql": PGDialect(paramstyle="named")}  # type: ignore[no-untyped-call]
"""Each database's SQL with ``:name`` parameters, as ``text()`` takes them."""


def _count(session: Session, where: list[ColumnElement[bool]], cap: int) -> int:
    capped = select(col(Grant.id)).where(*where).limit(cap).subquery()
    return int(session.exec(select(func.count()).select_from(capped)).one())


def roles_within(session: Session, scopes: tuple[str, ...], *, postgres: bool) -> list[str]:
    """The roles active grants hold that match every scope: the ledger's distinct roles, one index seek each
    (a skip scan of ``ix_grant_held_role``). On SQLite, whose order is byte order, only between the scopes'
    bounds; PostgreSQL's collation may not keep a prefix's roles together, so all are read there."""
    active = "active" if postgres else "active IS NOT 0"
    if postgres:
        low, high = "", None
    else:
        low, high = max(scopes), min(s + "0" for s in scopes)  # "0" follows "/": past every role under s
    bound = "AND found.role < :high" if high is not None else ""
    query = text(
        f"""WITH RECURSIVE found(role) AS (
              SELECT min(role) FROM "grant" WHERE {active} AND role >= :low
              UNION ALL
              SELECT (SELECT min(g.role) FROM "grant" AS g WHERE g.{active} AND g.role > found.role)
              FROM found WHERE found.role IS NOT NULL {bound}
            ) SELECT role FROM found WHERE role IS NOT NULL"""
    )
    values = {"low": low, **({"high": high} if high is not None else {})}
    found = session.connection().execute(query, values).scalars().all()
    return [r for r in found if all(r == s or r.startswith(s + "/") for s in scopes)]
