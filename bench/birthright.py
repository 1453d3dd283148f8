"""Birthright benchmark: plan and apply at 50,000 users x 500 groups x 200 policies on the ledger connector.

Builds a fresh SQLite app DB in a temporary directory, then measures:

1. **Pure plan**: reading the plan's inputs from the app DB, and ``plan_birthright`` alone.
2. **Plan activity**: ``plan_birthright_sync`` with its DB reads and the bulk write of the items.
3. **Full sync**: a Temporal dev server and ``python -m worker`` (as ``lapse run`` starts them); the
   schedule is created and triggered, and the run applies every item through the ledger connector.
   Apply throughput is items / (finished - planned).
4. **Incremental sync**: 100 membership changes written to the app DB, then trigger → finished.

Peak memory: this process's (the pure plan and plan activity) and the worker's (VmHWM).

Run from the project root::

    .venv/bin/python -m bench.birthright                        # 50,000 x 500 x 200
    .venv/bin/python -m bench.birthright --users 5000 --groups 100 --policies 40   # a smaller check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import shutil
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select
from sqlmodel import col
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from access import names
from access.syncs import SyncInput
from activities.birthright import BirthrightActivities
from bench.lifecycle import Stack, free_port
from starter.services.syncs import ensure_sync_schedules, trigger_sync
from starter.stack import WORKER_COMMAND, port_open, stop_all, temporal_server_command
from store import catalog
from store.db import migrate, session_scope
from store.settings import Settings
from store.tables import BirthrightItem, BirthrightPolicy, Group, Integration, Membership, Resource, Role, User
from store.temporal import data_converter

TARGET_PLAN_S = 5.0
TARGET_INCREMENTAL_S = 10.0
ADMIN = "ada@example.com"


def build_org(url: str, *, users: int, groups: int, policies: int, roles: int, per_user: int, seed: int) -> None:
    """Users in ``per_user`` random groups each; policies of 1-3 groups and 1-3 ledger roles."""
    rng = random.Random(seed)
    migrate(url)
    with session_scope(url) as session:
        session.execute(
            insert(User),
            [{"email": ADMIN, "name": "Admin", "active": True, "is_admin": True, "source": "file"}]
            + [
                {"email": f"user{n:05d}@example.com", "name": f"User {n}", "active": True, "is_admin": False}
                for n in range(users)
            ],
        )
        session.execute(insert(Group), [{"name": f"group-{g:03d}", "description": ""} for g in range(groups)])
        user_ids = list(session.execute(select(col(User.id)).where(col(User.email) != ADMIN)).scalars())
        group_ids = list(session.execute(select(col(Group.id))).scalars())
        rows = [{"user_id": u, "group_id": g} for u in user_ids for g in rng.sample(group_ids, per_user)]
        for start in range(0, len(rows), 20_000):
            session.execute(insert(Membership), rows[start : start + 20_000])
        integration = Integration(name="ledger", kind="ledger")
        session.add(integration)
        session.flush()
        resources = [Resource(integration_id=integration.id, name=f"app-{r:02d}") for r in range(roles // 10)]  # type: ignore[arg-type]
        session.add_all(resources)
        session.flush()
        paths = []
        for n in range(roles):
            resource_ = resources[n % len(resources)]
            path = f"ledger/{resource_.name}/role-{n:03d}"
            paths.append(path)
            session.add(Role(resource_id=resource_.id, name=f"role-{n:03d}", path=path))  # type: ignore[arg-type]
        group_names = [f"group-{g:03d}" for g in range(groups)]
        for n in range(policies):
            session.add(
                BirthrightPolicy(
                    name=f"policy-{n:03d}",
                    position=n,
                    groups=rng.sample(group_names, rng.randint(1, 3)),
                    roles=rng.sample(paths, rng.randint(1, 3)),
                )
            )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure_plan(url: str) -> dict[str, Any]:
    started = time.perf_counter()
    with session_scope(url, write=False) as session:
        inputs = catalog.birthright_inputs(session)
    read_s = time.perf_counter() - started
    tracemalloc.start()
    started = time.perf_counter()
    plan = inputs.plan()
    plan_s = time.perf_counter() - started
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    started = time.perf_counter()
    plan = inputs.plan()  # untraced: tracemalloc slows allocation-heavy code several times
    plan_untraced_s = time.perf_counter() - started
    return {
        "memberships": sum(len(m) for m in inputs.members.values()),
        "desired_grants": len(plan.add),
        "read_inputs_s": round(read_s, 3),
        "pure_plan_s": round(plan_untraced_s, 3),
        "pure_plan_traced_s": round(plan_s, 3),
        "pure_plan_traced_peak_mib": round(traced_peak / 2**20, 1),
        "read_plus_pure_plan_s": round(read_s + plan_untraced_s, 3),
    }


def measure_plan_activity(url: str) -> dict[str, Any]:
    activities = BirthrightActivities(url)
    started = time.perf_counter()
    planned = ActivityEnvironment().run(activities.plan_birthright_sync, SyncInput(reason="bench"))
    elapsed = time.perf_counter() - started
    with session_scope(url) as session:  # the real sync plans again; leave it a clean slate
        session.execute(delete(BirthrightItem))
    return {"plan_activity_s": round(elapsed, 3), "items": planned.add + planned.remove + planned.relabel}


async def wait_finished(client: Client, url: str, since: datetime, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
    from store.tables import SyncState

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(url, write=False) as session:
            state = session.get(SyncState, names.BIRTHRIGHT_SYNC)
        if state and state.started_at and state.started_at >= since and state.finished_at:
            if state.error:
                raise RuntimeError(f"the sync failed: {state.error}")
            return {"started_at": state.started_at, "finished_at": state.finished_at, "summary": state.summary}
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no birthright sync finished within {timeout:.0f}s")


async def run_sync(client: Client, url: str, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
    since = datetime.now(UTC)
    started = time.perf_counter()
    await trigger_sync(client, names.BIRTHRIGHT_SYNC)
    state = await wait_finished(client, url, since, timeout)
    end_to_end = time.perf_counter() - started
    summary = state["summary"]
    planned_at = datetime.fromisoformat(summary["planned_at"])
    apply_s = (state["finished_at"] - planned_at).total_seconds()
    items = summary["added"] + summary["removed"] + summary["relabelled"] + summary["failed"]
    return {
        "end_to_end_s": round(end_to_end, 3),
        "plan_s": round((planned_at - state["started_at"]).total_seconds(), 3),
        "apply_s": round(apply_s, 3),
        "items": items,
        "added": summary["added"],
        "removed": summary["removed"],
        "relabelled": summary["relabelled"],
        "failed": summary["failed"],
        "apply_items_per_s": round(items / apply_s, 1) if apply_s > 0 else None,
    }


def change_memberships(url: str, count: int, seed: int) -> None:
    """Half removals, half additions, of random users in random groups."""
    rng = random.Random(seed)
    with session_scope(url) as session:
        rows: list[tuple[int, int]] = [
            (u, g) for u, g in session.execute(select(col(Membership.user_id), col(Membership.group_id)))
        ]
        group_ids = list(session.execute(select(col(Group.id))).scalars())
        for user_id, group_id in rng.sample(rows, count // 2):
            session.execute(
                delete(Membership).where(col(Membership.user_id) == user_id, col(Membership.group_id) == group_id)
            )
        existing = set(rows)
        added = 0
        while added < count - count // 2:
            user_id, _ = rng.choice(rows)
            group_id = rng.choice(group_ids)
            if (user_id, group_id) not in existing:
                existing.add((user_id, group_id))
                session.execute(insert(Membership).values(user_id=user_id, group_id=group_id))
                added += 1


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="lapse-bench-birthright-"))
    stack = Stack(data_dir)
    settings: Settings = stack.settings
    url = settings.db_url
    results: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "users": args.users,
        "groups": args.groups,
        "policies": args.policies,
        "roles": args.roles,
        "groups_per_user": args.per_user,
    }
    try:
        started = time.perf_counter()
        build_org(
            url,
            users=args.users,
            groups=args.groups,
            policies=args.policies,
            roles=args.roles,
            per_user=args.per_user,
            seed=args.seed,
        )
        results["build_org_s"] = round(time.perf_counter() - started, 1)
        print(f"organisation built in {results['build_org_s']} s", flush=True)
        results["plan"] = measure_plan(url)
        print("pure plan:", results["plan"], flush=True)
        results["plan_activity"] = measure_plan_activity(url)
        print("plan activity:", results["plan_activity"], flush=True)
        results["bench_peak_rss_mib"] = round(peak_rss_mib(), 1)

        settings.temporal_ui_port = free_port()
        host, _, port = settings.temporal_address.rpartition(":")
        server = stack._start("temporal", temporal_server_command(settings))
        stack._wait(lambda: port_open(host, int(port)), "the Temporal dev server", server)
        worker = stack._start("worker", WORKER_COMMAND)
        stack._wait(lambda: "worker polling" in stack.log("worker"), "the worker", worker)
        # The worker seals and checks payloads with the data dir's codec key: so must this client.
        client = await Client.connect(settings.temporal_address, data_converter=data_converter(settings))
        await ensure_sync_schedules(client, settings)

        results["full_sync"] = await run_sync(client, url, timeout=args.timeout)
        print("full sync:", results["full_sync"], flush=True)
        results["worker_peak_rss_mib"] = vm_hwm_mib(worker.pid)

        results["unchanged_sync"] = await run_sync(client, url, timeout=args.timeout)
        print("unchanged sync:", results["unchanged_sync"], flush=True)

        change_memberships(url, args.changes, args.seed + 1)
        results["incremental_sync"] = await run_sync(client, url, timeout=args.timeout)
        results["incremental_sync"]["membership_changes"] = args.changes
        print("incremental sync:", results["incremental_sync"], flush=True)
        results["worker_peak_rss_mib"] = vm_hwm_mib(worker.pid)
    finally:
        stop_all([p for _, p in reversed(stack.children)])
        if args.keep:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    results["targets"] = {
        "full_plan_s": {
            "measured": results["plan_activity"]["plan_activity_s"],
            "target": TARGET_PLAN_S,
            "ok": results["plan_activity"]["plan_activity_s"] <= TARGET_PLAN_S,
        },
        "incremental_end_to_end_s": {
            "measured": results["incremental_sync"]["end_to_end_s"],
            "target": TARGET_INCREMENTAL_S,
            "ok": results["incremental_sync"]["end_to_end_s"] <= TARGET_INCREMENTAL_S,
        },
    }
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--roles", type=int, default=400, help="ledger roles the policies draw from")
    parser.add_argument("--per-user", type=int, default=5, help="groups each user is in")
    parser.add_argument("--changes", type=int, default=100, help="membership changes before the incremental run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for one sync")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    figures = asyncio.run(main(arguments))
    text = json.dumps(figures, indent=2, default=str)
    print(text)
    if arguments.out:
        arguments.out.write_text(text + "\n")
