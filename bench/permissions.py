"""Permissions page benchmark: ``GET /admin/grants`` over 1,000,000 grants held by 100,000 users.

Builds a grants ledger in bulk (SQLite: ``executemany`` in one transaction, cached under ``build/``;
PostgreSQL: ``COPY`` into a throwaway cluster from ``harness/``), then measures the page's server time through
the ASGI app (``httpx.ASGITransport``, an admin signed in through the SSO proxy's header): each filter alone, a
few combinations, each sort both ways, and a page 20 cursors deep. Each case is called ``--calls`` times after a
warm-up; p50 and p95 per case, in milliseconds. The target: every case's p95 at most 100 ms on both databases.

The ledger: four integrations of five resources of five roles, drawn with a skew (a few roles hold most
grants, some hold very few, as in a real estate); every path (60% birthright, 25% jit with an end in the next
30 days, 15% external, 1 in 10 of those on an account no user matches); granted over the past year.

Run from the project root::

    .venv/bin/python -m bench.permissions                            # 1,000,000 grants, 100,000 users
    .venv/bin/python -m bench.permissions --grants 20000 --users 2000  # a quick check
    .venv/bin/python -m bench.permissions --db sqlite --explain        # and print the query plans
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import event, insert

from harness.postgres import PostgresServer
from starter.api.app import create_app
from store.db import MIGRATIONS, engine_for, migrate, session_scope
from store.settings import Settings
from store.tables import User

ROOT = Path(__file__).parents[1]
CACHE = ROOT / "build" / "bench-permissions"
ADMIN = "ada@example.com"
TARGET_P95_MS = 100.0
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
"""The ledger's "now": fixed, so a cached DB and the cases agree on what "expiring before" means."""
INTEGRATIONS = ["ledger", "warehouse", "crm", "payroll"]
RESOURCES = [f"res-{n}" for n in range(5)]
ROLE_NAMES = ["read", "write", "deploy", "admin", "audit"]
COLUMNS = ["account", "role", "user_email", "path", "request_id", "policy", "active", "granted_at", "expires_at"]


def roles() -> list[str]:
    return [f"{i}/{r}/{n}" for i in INTEGRATIONS for r in RESOURCES for n in ROLE_NAMES]


def role_weights() -> list[float]:
    """Skewed: the n-th role is drawn in proportion to 1/(n+1)^1.1, so the last few hold well under 0.1% each."""
    return [1 / (n + 1) ** 1.1 for n in range(len(roles()))]


def email(n: int) -> str:
    return f"user{n:06d}@example.com"


def grant_rows(*, grants: int, users: int, seed: int) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    paths, weights = roles(), role_weights()
    chosen = rng.choices(paths, weights=weights, k=grants)
    for n in range(grants):
        user = rng.randrange(users)
        granted_at = NOW - timedelta(seconds=rng.randrange(365 * 86400))
        kind = rng.random()
        if kind < 0.60:
            yield (
                email(user),
                chosen[n],
                email(user),
                "birthright",
                None,
                f"policy-{n % 40:02d}",
                True,
                granted_at,
                None,
            )
        elif kind < 0.85:
            expires_at = NOW + timedelta(seconds=rng.randrange(60, 30 * 86400))
            granted_at = max(granted_at, NOW - timedelta(days=30))
            yield (email(user), chosen[n], email(user), "jit", f"bench{n:07d}", None, True, granted_at, expires_at)
        elif rng.random() < 0.1:
            yield (f"svc-{n % 5000:04d}", chosen[n], None, "external", None, None, True, granted_at, None)
        else:
            yield (email(user), chosen[n], email(user), "external", None, None, True, granted_at, None)


def _sqlite_time(value: datetime | None) -> str | None:
    """How SQLAlchemy's DateTime stores a moment in SQLite (UTC, no zone)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if value is not None else None


def build(url: str, *, grants: int, users: int, seed: int) -> float:
    """Migrate an empty app DB and fill it: the admin, ``users`` users and ``grants`` grants. Seconds taken."""
    started = time.perf_counter()
    # The ledger is loaded before migration 0011 makes its indexes: building an index over a full table is far
    # faster than keeping fifteen up to date through a million inserts.
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0010")
    with session_scope(url) as session:
        session.execute(
            insert(User),
            [{"email": ADMIN, "name": "Ada", "active": True, "is_admin": True, "source": "file"}]
            + [{"email": email(n), "name": f"User {n}", "active": True, "is_admin": False} for n in range(users)],
        )
    engine = engine_for(url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if url.startswith("sqlite"):
            rows = [
                (*row[:6], int(row[6]), _sqlite_time(row[7]), _sqlite_time(row[8]))
                for row in grant_rows(grants=grants, users=users, seed=seed)
            ]
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("BEGIN")
            cursor.executemany(
                f"INSERT INTO \"grant\" ({', '.join(COLUMNS)}, phase) VALUES ({', '.join('?' * len(COLUMNS))}, 'held')",
                rows,
            )
            cursor.execute("COMMIT")
        else:
            with cursor.copy(f'COPY "grant" ({", ".join(COLUMNS)}) FROM STDIN') as copy:  # type: ignore[attr-defined]
                for row in grant_rows(grants=grants, users=users, seed=seed):
                    copy.write_row(row)
            raw.commit()
    finally:
        raw.close()
    migrate(url)
    raw = engine.raw_connection()
    try:
        if url.startswith("sqlite"):
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")  # readers need not search a big WAL
        else:
            raw.cursor().execute('ANALYZE "grant"')  # as autovacuum soon would: the planner needs it
            raw.commit()
    finally:
        raw.close()
    return time.perf_counter() - started


def cases(*, users: int, seed: int) -> dict[str, list[dict[str, str]]]:
    """Each case: the query strings it cycles through (one for most; 30 users for the user filter)."""
    rng = random.Random(seed + 1)
    paths = roles()
    common, rare = paths[0], paths[-1]
    soon = (NOW + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    later = (NOW + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M")
    some_users = [email(rng.randrange(users)) for _ in range(30)]
    one: dict[str, dict[str, str]] = {
        "no filter": {},
        "integration": {"integration": "ledger"},
        "resource (common)": {"resource": "ledger/res-0"},
        "resource (rare)": {"resource": "payroll/res-4"},
        "role exact (common)": {"role": common},
        "role exact (rare)": {"role": rare},
        "role prefix": {"role": "crm/res-2"},
        "path jit": {"path": "jit"},
        "path birthright": {"path": "birthright"},
        "path external": {"path": "external"},
        "expiring before (1 day)": {"expiring_before": soon},
        "expiring before (20 days)": {"expiring_before": later},
        "integration + path": {"integration": "warehouse", "path": "external"},
        "resource + path, by until": {"resource": "ledger/res-1", "path": "jit", "sort": "until"},
        "rare role + external, newest first": {"role": rare, "path": "external", "sort": "since", "order": "desc"},
        "role + expiring before, by user": {"role": common, "expiring_before": later, "sort": "user"},
        "integration + expiring, until desc": {
            "integration": "crm",
            "expiring_before": soon,
            "sort": "until",
            "order": "desc",
        },
        "external, by user desc": {"path": "external", "sort": "user", "order": "desc"},
        "rare resource + jit + expiring, by role": {
            "resource": "payroll/res-4",
            "path": "jit",
            "expiring_before": later,
            "sort": "role",
        },
    }
    for sort in ("since", "until", "user", "role"):
        for order in ("asc", "desc"):
            one[f"sort {sort} {order}"] = {"sort": sort, "order": order}
    found = {name: [query] for name, query in one.items()}
    found["user"] = [{"user": u} for u in some_users]
    found["user + path, by until desc"] = [
        {"user": u, "path": "birthright", "sort": "until", "order": "desc"} for u in some_users
    ]
    return found


DEEP = {
    "deep: page 20, since asc": {},
    "deep: page 20, until asc": {"sort": "until"},
    "deep: page 20, user desc": {"sort": "user", "order": "desc"},
    "deep: page 20, external by role": {"path": "external", "sort": "role"},
}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Plans:
    """With ``--explain``: the ledger queries one call of each case runs, and their plans (``EXPLAIN QUERY PLAN``
    on SQLite, ``EXPLAIN`` on PostgreSQL), printed and kept with the results."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[str, Any]] = []
        event.listen(engine_for(url, writer=False), "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if ("FROM grant" in statement or 'FROM "grant"' in statement) and not statement.startswith("EXPLAIN"):
            self.seen.append((statement, parameters))

    def explain(self) -> list[str]:
        found, self.seen = self.seen, []
        plans = []
        with engine_for(self.url, writer=False).connect() as connection:
            for statement, parameters in found:
                prefix = "EXPLAIN QUERY PLAN " if self.url.startswith("sqlite") else "EXPLAIN "
                rows = connection.exec_driver_sql(prefix + statement, parameters).all()
                lines = [str(row[-1]) for row in rows]
                counts = {line: lines.count(line) for line in lines}  # a merge of many ranges: each step once
                plans.append("\n".join(f"{line} (x{n})" if n > 1 else line for line, n in counts.items()))
        return plans


async def measure(
    url: str, data_dir: Path, *, calls: int, users: int, seed: int, explain: bool = False
) -> dict[str, Any]:
    plans = Plans(url) if explain else None
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=data_dir, database_url=url, auth="proxy", trusted_proxies=["127.0.0.1"]
    )
    app = create_app(settings, client=None)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    headers = {"X-Forwarded-Email": ADMIN}
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://lapse.bench", headers=headers) as http:

        async def time_one(query: dict[str, str]) -> tuple[float, httpx.Response]:
            started = time.perf_counter()
            response = await http.get(f"/admin/grants?{urlencode(query)}")
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{query}: {response.status_code} {response.text[:500]}")
            return elapsed, response

        async def run(name: str, queries: list[dict[str, str]]) -> None:
            if plans is not None:
                plans.seen.clear()
            for query in queries[:2]:
                await time_one(query)  # warm-up
            shown = plans.explain()[:2] if plans is not None else []
            times, rows = [], 0
            for n in range(max(calls, len(queries))):
                elapsed, response = await time_one(queries[n % len(queries)])
                times.append(elapsed)
                rows = response.text.count('name="grant_id" value=')
            results[name] = {
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(percentile(times, 95), 1),
                "max_ms": round(max(times), 1),
                "calls": len(times),
                "rows_on_page": rows,
            }
            if shown:
                results[name]["plans"] = shown
            print(
                f"  {name:45s} p50 {results[name]['p50_ms']:7.1f} ms  p95 {results[name]['p95_ms']:7.1f} ms", flush=True
            )
            for plan in shown:
                print("      " + plan.replace("\n", "\n      "), flush=True)

        for name, queries in cases(users=users, seed=seed).items():
            await run(name, queries)
        for name, query in DEEP.items():
            page = dict(query)
            for _ in range(19):  # follow the "Next page" link 19 times: the 20th page
                _, response = await time_one(page)
                found = response.text.split('rel="next"')[0].rsplit('href="', 1)[-1].split('"')[0]
                page = {k: v[0] for k, v in parse_qs(urlparse(found.replace("&amp;", "&")).query).items()}
                assert "cursor" in page, f"{name}: fewer than 20 pages"
            await run(name, [page])
    return results


def postgres_url(server: PostgresServer) -> str:
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE lapse_bench")
    return f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/lapse_bench"


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "benchmark": "permissions page",
        "date": datetime.now(UTC).date().isoformat(),
        "grants": args.grants,
        "users": args.users,
        "calls_per_case": args.calls,
        "target_p95_ms": TARGET_P95_MS,
        "databases": {},
    }
    for db in args.db.split(","):
        print(f"{db}: {args.grants:,} grants, {args.users:,} users", flush=True)
        data_dir = Path(tempfile.mkdtemp(prefix="lapse-bench-permissions-"))
        server: PostgresServer | None = None
        built_s: float | None = None
        try:
            if db == "sqlite":
                CACHE.mkdir(parents=True, exist_ok=True)
                path = CACHE / f"sqlite-{args.grants}-{args.users}-{args.seed}.db"
                url = f"sqlite:///{path}"
                if not path.exists() or args.rebuild:
                    path.unlink(missing_ok=True)
                    built_s = build(url, grants=args.grants, users=args.users, seed=args.seed)
                else:
                    migrate(url)  # a cached DB: brought to the code's schema, indexes included
            else:
                server = PostgresServer().start()
                url = postgres_url(server)
                built_s = build(url, grants=args.grants, users=args.users, seed=args.seed)
            if built_s is not None:
                print(f"  built in {built_s:.1f} s", flush=True)
            measured = await measure(
                url, data_dir, calls=args.calls, users=args.users, seed=args.seed, explain=args.explain
            )
            worst = max(case["p95_ms"] for case in measured.values())
            results["databases"][db] = {
                "build_s": round(built_s, 1) if built_s is not None else "cached",
                "worst_p95_ms": worst,
                "meets_target": worst <= TARGET_P95_MS,
                "cases": measured,
            }
            print(f"  worst p95: {worst} ms (target {TARGET_P95_MS} ms)", flush=True)
            engine_for(url).dispose()
            engine_for(url, writer=False).dispose()
        finally:
            if server is not None:
                server.stop()
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grants", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=30, help="timed calls per case (default 30)")
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both (comma-separated)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached SQLite DB")
    parser.add_argument("--explain", action="store_true", help="print (and keep) each case's query plans")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results-permissions-<date>.json")
    return parser.parse_args()


def _stop(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # so that the PostgreSQL cluster is stopped on the way out


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    arguments = parse_args()
    outcome = asyncio.run(main(arguments))
    out = arguments.out or ROOT / "bench" / f"results-permissions-{outcome['date']}.json"
    out.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"written to {out}")
