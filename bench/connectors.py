"""Connector benchmark: grant+revoke round trips per connector, and discovery of a large target.

Starts its own PostgreSQL, slapd and scim2-server (the test suite's server classes), seeds each
with ``--accounts`` accounts and ``--roles`` roles (each account in ``--memberships`` roles on
average), then measures:

1. **Round trips**: ``--round-trips`` sequential ``grant`` + ``revoke`` pairs of one role for one
   account, through the connector objects (ledger, postgres, ldap, scim), on the seeded targets.
   Each call opens its own connection, as in production; the cost of opening one alone is
   measured too, to show how much of a round trip it is.
2. **Discovery**: ``discover()`` + ``list_grants()`` alone, then the discovery activity end to end
   into a fresh SQLite app DB (holding one user per account, so accounts link), a first run
   (every grant new) and a second (nothing changed). Each runs in a fresh interpreter so its
   peak RSS is its own.

Run from the project root::

    .venv/bin/python -m bench.connectors --accounts 1000 --roles 20 --round-trips 50   # quick
    .venv/bin/python -m bench.connectors                                               # 10,000 x 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, date, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from sqlalchemy import insert

from access.connectors import Target
from activities.connectors import BUILT_IN
from activities.connectors.ledger import LedgerConnector
from store.db import migrate, session_scope
from store.tables import Integration, User

if TYPE_CHECKING:
    # The servers load only in the parent: spawned children stay lean.
    from harness.ldap import LdapServer
    from harness.postgres import PostgresServer
    from harness.scim import ScimServer

ROLE_PREFIX = "app_"
BENCH_ACCOUNT = "bench_rt"
"""The account the round trips grant and revoke; it holds nothing else."""
DOMAIN = "example.com"
CONNECTORS = ("ledger", "postgres", "ldap", "scim")
DISCOVERY_TARGETS = ("postgres", "ldap", "scim")
SECRET_ENV = {"postgres": "LAPSE_BENCH_PG_DSN", "ldap": "LAPSE_BENCH_LDAP_PASSWORD", "scim": "LAPSE_BENCH_SCIM_TOKEN"}
"""The connectors read their secrets from these variables (spawned children inherit them)."""


def account_name(index: int) -> str:
    return f"user{index:05d}"


def role_name(index: int) -> str:
    return f"{ROLE_PREFIX}role_{index:03d}"


def memberships(accounts: int, roles: int, average: int, seed: int) -> dict[str, list[str]]:
    """Members of each role: every account is in 1 to ``2 * average - 1`` distinct roles, evenly drawn."""
    rng = random.Random(seed)
    names = [role_name(r) for r in range(roles)]
    members: dict[str, list[str]] = {name: [] for name in names}
    for a in range(accounts):
        for name in rng.sample(names, min(roles, rng.randint(1, 2 * average - 1))):
            members[name].append(account_name(a))
    return members


# --- seeding the targets ----------------------------------------------------------------------


def seed_postgres(server: PostgresServer, members: Mapping[str, list[str]], accounts: int) -> dict[str, Any]:
    """NOLOGIN roles with the prefix, LOGIN roles for the accounts, and the memberships, in one batch."""
    statements = [
        f"DO $$ BEGIN FOR i IN 0..{accounts - 1} LOOP "
        "EXECUTE format('CREATE ROLE %I LOGIN', 'user' || lpad(i::text, 5, '0')); END LOOP; END $$",
        f"CREATE ROLE {BENCH_ACCOUNT} LOGIN",
    ]
    for name, accounts_in in members.items():
        statements.append(f"CREATE ROLE {name} NOLOGIN")
        if accounts_in:
            statements.append(f"GRANT {name} TO {', '.join(accounts_in)}")
    with psycopg.connect(server.dsn(), autocommit=True) as connection:
        with connection.transaction():
            for statement in statements:
                connection.execute(sql.SQL(statement))  # type: ignore[arg-type]  # our own generated names
        connection.execute("ANALYZE")
        version = connection.execute("SHOW server_version").fetchone()
    return {"server": f"PostgreSQL {version[0] if version else '?'}"}


def seed_ldap(server: LdapServer, members: Mapping[str, list[str]], accounts: int) -> dict[str, Any]:
    """inetOrgPersons with mail and groupOfNames with their members, from one LDIF through ldapadd."""
    ldif = server.dir / "seed.ldif"
    with ldif.open("w") as out:
        for uid in [*(account_name(a) for a in range(accounts)), BENCH_ACCOUNT]:
            out.write(
                f"dn: uid={uid},{server.people}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
                f"mail: {uid}@{DOMAIN}\n\n"
            )
        for name, accounts_in in members.items():
            # groupOfNames needs a member: an empty role gets the bench account (revoked at once by the run).
            member_dns = [f"uid={uid},{server.people}" for uid in accounts_in or [BENCH_ACCOUNT]]
            out.write(f"dn: cn={name},{server.groups}\nobjectClass: groupOfNames\ncn: {name}\n")
            out.write("".join(f"member: {dn}\n" for dn in member_dns) + "\n")
    command = ["ldapadd", "-x", "-H", server.url, "-D", server.admin_dn, "-w", server.admin_password, "-f", str(ldif)]
    subprocess.run(command, check=True, capture_output=True)
    version = subprocess.run(["/usr/sbin/slapd", "-VV"], capture_output=True, text=True).stderr.split("$")
    return {"server": version[1].strip() if len(version) > 1 else "OpenLDAP slapd"}


def seed_scim(server: ScimServer, members: Mapping[str, list[str]], accounts: int) -> dict[str, Any]:
    """Users through Bulk requests (1,000 each), then one POST per group with its members."""
    names = [*(account_name(a) for a in range(accounts)), BENCH_ACCOUNT]
    server.create_users((f"{name}@{DOMAIN}", f"{name}@{DOMAIN}") for name in names)
    ids: dict[str, str] = {}
    start = 1
    while True:
        page = server.http.get("/Users", params={"startIndex": start, "count": 1000, "attributes": "userName"})
        page.raise_for_status()
        found = page.json().get("Resources", [])
        for user in found:
            ids[user["userName"].partition("@")[0]] = user["id"]
        if not found:
            break
        start += len(found)
    for name, accounts_in in members.items():
        server.create_group(name, [ids[uid] for uid in accounts_in])
    return {"server": "scim2-server (in-memory, " + _version("scim2-server") + ")"}


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{distribution} {version(distribution)}"
    except PackageNotFoundError:
        return distribution


# --- the connectors ---------------------------------------------------------------------------


def connector_config(kind: str, servers: Mapping[str, Any]) -> dict[str, Any]:
    """The integration configuration pointing at the benchmark's server (secrets by env var)."""
    if kind == "postgres":
        return {"dsn_env": SECRET_ENV["postgres"], "role_prefix": ROLE_PREFIX, "resource": "bench", "insecure": True}
    if kind == "ldap":
        ldap: LdapServer = servers["ldap"]
        return {
            "url": ldap.url,
            "bind_dn": ldap.admin_dn,
            "password_env": SECRET_ENV["ldap"],
            "insecure": True,  # the benchmark's servers are plaintext on loopback
            "users_base": ldap.people,
            "groups_base": ldap.groups,
            "placeholder_member": f"cn=nobody,{ldap.base}",
        }
    if kind == "scim":
        scim: ScimServer = servers["scim"]
        return {"base_url": scim.base_url, "token_env": SECRET_ENV["scim"], "insecure": True}
    return {}


def bench_account(kind: str, servers: Mapping[str, Any]) -> str:
    if kind == "ldap":
        return f"uid={BENCH_ACCOUNT},{servers['ldap'].people}"
    if kind == "scim":
        return f"{BENCH_ACCOUNT}@{DOMAIN}"
    return BENCH_ACCOUNT


def open_session(connector: Any) -> Callable[[], AbstractContextManager[Any]] | None:
    """The connector's own connection set-up (a private helper; benchmarks may look inside)."""
    for name in ("_connect", "_session"):
        if hasattr(connector, name):
            return getattr(connector, name)  # type: ignore[no-any-return]
    if hasattr(connector, "_directory"):
        return connector._directory.connect  # type: ignore[no-any-return]
    return None


def _ms(values: Sequence[float], p: float) -> float | None:
    from bench.lifecycle import percentile

    value = percentile(values, p)
    return None if value is None else value * 1000


def measure_round_trips(connector: Any, account: str, target: Target, *, count: int, warmup: int) -> dict[str, Any]:
    """``count`` sequential grant+revoke pairs, and as many connection set-ups alone."""
    for _ in range(warmup):
        connector.grant(account, target, None)
        connector.revoke(account, target)
    trips, grants, revokes = [], [], []
    cpu_started = time.process_time()
    started = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        connector.grant(account, target, None)
        t1 = time.perf_counter()
        connector.revoke(account, target)
        t2 = time.perf_counter()
        trips.append(t2 - t0)
        grants.append(t1 - t0)
        revokes.append(t2 - t1)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    connects: list[float] = []
    session = open_session(connector)
    if session is not None:
        for _ in range(count):
            t0 = time.perf_counter()
            with session():
                pass
            connects.append(time.perf_counter() - t0)
    connect_p50 = _ms(connects, 50)
    trip_p50 = _ms(trips, 50)
    return {
        "round_trips": count,
        "seconds": elapsed,
        "per_second": count / elapsed if elapsed > 0 else None,
        "round_trip_ms": {"p50": trip_p50, "p95": _ms(trips, 95), "max": max(trips) * 1000},
        "grant_ms_p50": _ms(grants, 50),
        "revoke_ms_p50": _ms(revokes, 50),
        "connect_ms_p50": connect_p50,
        # This process's CPU time over the wall time: the client's share; the rest is waiting on the server.
        "client_cpu_share": cpu / elapsed if elapsed > 0 else None,
        # Two connections per round trip (one per call), as a share of its median.
        "connect_share": (2 * connect_p50 / trip_p50) if connect_p50 is not None and trip_p50 else None,
        "target": target.path,
    }


# --- discovery (each measurement in a fresh interpreter) -------------------------------------


def _status_mib(field: str) -> float:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) / 1024 if match else float("nan")


def _reset_peak_rss() -> float:
    """Start the peak RSS afresh from the RSS now (Linux ≥ 4.0); returns that RSS, MiB.

    ``getrusage``'s ru_maxrss cannot be reset and survives fork and exec, so a spawned child
    would report the benchmark process's own peak; the kernel's VmHWM can be reset.
    """
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def _memory(before: float) -> dict[str, float]:
    peak = _status_mib("VmHWM")
    return {"rss_before_mib": before, "peak_rss_mib": peak, "peak_over_before_mib": peak - before}


def discover_alone(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """``discover()`` + ``list_grants()``: what the connector costs before the app DB is touched."""
    connector = BUILT_IN[kind](config)
    before = _reset_peak_rss()
    t0 = time.perf_counter()
    found = connector.discover()
    t1 = time.perf_counter()
    held = list(connector.list_grants(found.roles))
    t2 = time.perf_counter()
    return {
        "discover_s": t1 - t0,
        "list_grants_s": t2 - t1,
        "seconds": t2 - t0,
        "roles": len(found.roles),
        "grants": len(held),
        **_memory(before),
    }


def discover_activity(db_url: str, integration: str) -> dict[str, Any]:
    """The discovery activity end to end, in an activity environment (it heartbeats)."""
    from temporalio.testing import ActivityEnvironment

    from access.discovery import IntegrationInput
    from activities.discovery import DiscoveryActivities

    activities = DiscoveryActivities(db_url)
    before = _reset_peak_rss()
    t0 = time.perf_counter()
    result = ActivityEnvironment().run(activities.discover_integration, IntegrationInput(integration=integration))
    elapsed = time.perf_counter() - t0
    return {
        "seconds": elapsed,
        "result": result.model_dump(mode="json", exclude={"drift"}),
        **_memory(before),
    }


def in_fresh_process(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run in a spawned interpreter, so its heap holds nothing from earlier measurements."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def prepare_app_db(path: Path, kind: str, config: dict[str, Any], accounts: int) -> str:
    """A migrated SQLite app DB with the integration and one user per seeded account."""
    url = f"sqlite:///{path}"
    migrate(url)
    with session_scope(url) as session:
        session.add(Integration(name=kind, kind=kind, config=config))
        rows = [{"email": f"{account_name(a)}@{DOMAIN}", "name": account_name(a)} for a in range(accounts)]
        session.execute(insert(User), rows)
    return url


def measure_discovery(kind: str, config: dict[str, Any], work: Path, accounts: int) -> dict[str, Any]:
    alone = in_fresh_process(discover_alone, kind, config)
    url = prepare_app_db(work / f"app-{kind}.db", kind, config, accounts)
    first = in_fresh_process(discover_activity, url, kind)
    second = in_fresh_process(discover_activity, url, kind)
    return {"connector_alone": alone, "activity_first_run": first, "activity_second_run": second}


# --- report ---------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _rss(run: Mapping[str, Any]) -> str:
    return f"{run['peak_rss_mib']:.0f} ({run['rss_before_mib']:.0f})"


def _ms_text(value: float | None) -> str:
    """Milliseconds to three significant digits, so the ledger's microseconds still show."""
    if value is None:
        return "-"
    if value < 0.1:
        return f"{value * 1000:.2g} µs"
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def report(figures: dict[str, Any]) -> str:
    config = figures["config"]
    lines = [
        f"Connectors: {config['accounts']:,} accounts x {config['roles']} roles, "
        f"{figures['memberships']:,} memberships; {config['cpus']} CPUs, Python {config['python']}",
        "",
        f"Round trips (grant + revoke, sequential, n = {config['round_trips']}, on the seeded targets)",
        f"  {'connector':<10} {'trips/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'grant p50':>10} {'revoke p50':>11} "
        f"{'connect p50':>12} {'2 connects/p50':>15} {'client CPU':>11}",
    ]
    for kind, trip in figures["round_trips"].items():
        share, cpu = trip["connect_share"], trip["client_cpu_share"]
        # The CPU share of a run lasting a few milliseconds (the ledger's) is clock noise.
        cpu_text = f"{cpu:.0%}" if cpu is not None and trip["seconds"] >= 0.1 else "-"
        lines.append(
            f"  {kind:<10} {_f(trip['per_second'], 0):>9} {_ms_text(trip['round_trip_ms']['p50']):>8} "
            f"{_ms_text(trip['round_trip_ms']['p95']):>8} {_ms_text(trip['grant_ms_p50']):>10} "
            f"{_ms_text(trip['revoke_ms_p50']):>11} {_ms_text(trip['connect_ms_p50']):>12} "
            f"{'-' if share is None else f'{share:.0%}':>15} {cpu_text:>11}"
        )
    lines += [
        "",
        "Discovery (seconds; RSS = peak RSS in MiB of a fresh interpreter while doing only that, "
        "and in brackets its RSS just before)",
        f"  {'target':<10} {'discover':>9} {'list_grants':>12} {'alone':>7} {'RSS':>10}   "
        f"{'activity 1st':>12} {'RSS':>10} {'recorded':>9}   {'activity 2nd':>12} {'RSS':>10}",
    ]
    for kind, found in figures["discovery"].items():
        alone, first, second = found["connector_alone"], found["activity_first_run"], found["activity_second_run"]
        lines.append(
            f"  {kind:<10} {_f(alone['discover_s'], 2):>9} {_f(alone['list_grants_s'], 2):>12} "
            f"{_f(alone['seconds'], 2):>7} {_rss(alone):>10}   "
            f"{_f(first['seconds'], 2):>12} {_rss(first):>10} "
            f"{first['result']['external_found']:>9,}   {_f(second['seconds'], 2):>12} "
            f"{_rss(second):>10}"
        )
    lines.append("")
    lines.append("Seeding (not measured above): " + ", ".join(f"{k} {v:.1f} s" for k, v in figures["seed_s"].items()))
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.connectors",
        description="Benchmark the connectors: grant+revoke round trips per second, and discovery of a large "
        "PostgreSQL, LDAP and SCIM target. Starts its own servers in temp directories.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--accounts", type=int, default=10_000, help="accounts seeded in each target")
    parser.add_argument("--roles", type=int, default=100, help="roles (groups) seeded in each target")
    parser.add_argument("--memberships", type=int, default=5, help="roles per account, on average")
    parser.add_argument("--round-trips", type=int, default=300, help="grant+revoke pairs per connector")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured round trips first")
    parser.add_argument(
        "--connectors", nargs="+", choices=CONNECTORS, default=list(CONNECTORS), help="connectors to benchmark"
    )
    parser.add_argument(
        "--discovery",
        nargs="*",
        choices=DISCOVERY_TARGETS,
        default=list(DISCOVERY_TARGETS),
        help="targets whose discovery is measured (none: skip)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed for the memberships")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).parent / f"results-connectors-{date.today().isoformat()}.json",
        help="where to write the figures",
    )
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.roles < 1 or args.memberships < 1 or args.round_trips < 1:
        parser.error("--accounts, --roles, --memberships and --round-trips must be at least 1")
    if args.accounts > 99_999:
        parser.error("--accounts is at most 99,999 (account names have five digits)")
    return args


def start_servers(kinds: set[str], stack: ExitStack) -> dict[str, Any]:
    from harness.ldap import LdapServer
    from harness.postgres import PostgresServer
    from harness.scim import ScimServer

    servers: dict[str, Any] = {}
    if "postgres" in kinds:
        pg = PostgresServer().start()
        stack.callback(pg.stop)
        servers["postgres"] = pg
        os.environ[SECRET_ENV["postgres"]] = pg.dsn()
    if "ldap" in kinds:
        ldap = LdapServer().start()
        stack.callback(ldap.stop)
        servers["ldap"] = ldap
        os.environ[SECRET_ENV["ldap"]] = ldap.admin_password
    if "scim" in kinds:
        scim = ScimServer().start()
        stack.callback(scim.stop)
        servers["scim"] = scim
        os.environ[SECRET_ENV["scim"]] = scim.token
    return servers


SEEDERS: dict[str, Callable[[Any, Mapping[str, list[str]], int], dict[str, Any]]] = {
    "postgres": seed_postgres,
    "ldap": seed_ldap,
    "scim": seed_scim,
}


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    kinds = (set(args.connectors) | set(args.discovery)) - {"ledger"}
    members = memberships(args.accounts, args.roles, args.memberships, args.seed)
    role = role_name(0)
    figures: dict[str, Any] = {
        "memberships": sum(len(m) for m in members.values()),
        "seed_s": {},
        "servers": {},
        "round_trips": {},
        "discovery": {},
    }
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="lapse-bench-connectors-") as temp:
        work = Path(temp)
        say(f"starting {', '.join(sorted(kinds)) or 'no'} servers…")
        servers = start_servers(kinds, stack)
        for kind in sorted(kinds):
            say(f"seeding {kind}: {args.accounts:,} accounts, {args.roles} roles, {figures['memberships']:,} members…")
            t0 = time.perf_counter()
            figures["servers"][kind] = SEEDERS[kind](servers[kind], members, args.accounts)["server"]
            figures["seed_s"][kind] = time.perf_counter() - t0
        for kind in args.connectors:
            say(f"round trips: {kind}, {args.round_trips} grant+revoke pairs…")
            connector = BUILT_IN[kind](connector_config(kind, servers)) if kind != "ledger" else LedgerConnector()
            resource_name = {"postgres": "bench", "ldap": "groups", "scim": "app"}.get(kind, "bench")
            target = Target(integration=kind, resource=resource_name, role=role, config={})
            account = bench_account(kind, servers)
            figures["round_trips"][kind] = measure_round_trips(
                connector, account, target, count=args.round_trips, warmup=args.warmup
            )
        for kind in args.discovery:
            say(f"discovery: {kind} (connector alone, then the activity twice)…")
            figures["discovery"][kind] = measure_discovery(kind, connector_config(kind, servers), work, args.accounts)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = datetime.now(UTC)
    figures = run(args, say)
    figures["config"] = {
        "accounts": args.accounts,
        "roles": args.roles,
        "memberships_per_account": args.memberships,
        "round_trips": args.round_trips,
        "warmup": args.warmup,
        "seed": args.seed,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "started_at": started.isoformat(),
        "command": "python -m bench.connectors " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(report(figures), flush=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nfigures written to {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    # Spawned children unpickle functions by module name: run main from the importable module.
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench.connectors import main as _main

    sys.exit(_main())
