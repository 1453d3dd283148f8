"""Access review benchmark: start a campaign of 100,000 items (snapshot + reviewer resolution) on a real stack.

Builds a fresh app DB (SQLite in a temporary directory, and a database on a throwaway PostgreSQL): 50,000 users
(each with a manager), 100,000 active grants over 400 ledger roles (birthright, external and JIT), and a
definition over all of them reviewed by the holder's manager, then the role's owners, with a fallback. A Temporal
dev server and ``python -m worker`` (as ``lapse run`` starts them) run the campaign;
``review_runs.start_campaign`` answers once its items are snapshotted.

Measures: the preview (``store.review_scope.preview``) in this process; the start (start → snapshot taken, the
campaign open); the worker's peak memory (VmHWM) after the start and after closing early, which applies the
default to all 100,000 items and carries them out. Each backend is run ``--repeat`` times, each time on a fresh
app DB and stack, and the medians are reported (the machine is shared: the load average is recorded per run).

Run from the project root::

    .venv/bin/python -m bench.reviews                                       # 100,000 items, both backends, 3 runs
    .venv/bin/python -m bench.reviews --grants 10000 --repeat 1 --backends sqlite     # a smaller check

``--out`` never overwrites the figures of a larger run with a smaller one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlmodel import col
from temporalio.client import Client

from access import names
from access.reviews import ReviewDefinition
from bench.birthright import peak_rss_mib, vm_hwm_mib
from bench.lifecycle import Stack, free_port
from bench.pages import app_db
from starter.services import review_runs
from starter.stack import WORKER_COMMAND, port_open, temporal_server_command
from store import review_scope
from store.db import migrate, session_scope
from store.settings import Settings
from store.tables import Grant, Integration, Resource, ReviewCampaign, ReviewDefinitionRow, Role, RoleOwner, User
from store.temporal import data_converter

TARGET_START_S = 10.0
TARGET_WORKER_MIB = 500.0
ADMIN = "ada@example.com"
NAME = "bench"


def build(url: str, *, users: int, grants: int, roles: int, seed: int) -> None:
    rng = random.Random(seed)
    migrate(url)
    now = datetime.now(UTC)
    with session_scope(url) as session:
        managers = [f"manager{n:04d}@example.com" for n in range(max(1, users // 20))]
        rows = [{"email": ADMIN, "name": "Admin", "active": True, "is_admin": True, "source": "file"}]
        rows += [{"email": m, "name": m, "active": True, "manager_email": ADMIN} for m in managers]
        rows += [
            {"email": f"user{n:05d}@example.com", "name": f"User {n}", "active": rng.random() > 0.02,
             "manager_email": rng.choice(managers) if rng.random() > 0.01 else None}
            for n in range(users)
        ]  # fmt: skip
        session.execute(insert(User), rows)
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
        session.flush()
        owner_ids = list(session.execute(select(col(User.id)).where(col(User.email).in_(managers[:50]))).scalars())
        role_ids = list(session.execute(select(col(Role.id))).scalars())
        session.execute(insert(RoleOwner), [{"role_id": r, "user_id": rng.choice(owner_ids)} for r in role_ids])
        holders = [f"user{n:05d}@example.com" for n in range(users)]
        pairs: set[tuple[str, str]] = set()
        while len(pairs) < grants:
            pairs.add((rng.choice(holders), rng.choice(paths)))
        grant_rows = []
        for user, role in sorted(pairs):
            path = rng.choice(["birthright", "birthright", "external", "jit"])
            grant_rows.append(
                {
                    "account": user,
                    "role": role,
                    "user_email": user,
                    "path": path,
                    "policy": "baseline" if path == "birthright" else None,
                    "active": True,
                    "granted_at": now - timedelta(days=rng.randint(1, 400)),
                    "expires_at": now + timedelta(days=30) if path == "jit" else None,
                    "phase": "held",
                }
            )
        for start in range(0, len(grant_rows), 20_000):
            session.execute(insert(Grant), grant_rows[start : start + 20_000])
        definition = ReviewDefinition.model_validate(
            {
                "name": NAME,
                "reviewers": [{"kind": "manager"}, {"kind": "resource_owner"}],
                "fallback": [{"kind": "user", "name": ADMIN}],
                "deadline": "P14D",
            }
        )
        session.add(
            ReviewDefinitionRow(name=NAME, body=definition.model_dump(mode="json"), updated_by=ADMIN, updated_at=now)
        )


def measure_preview(url: str) -> dict[str, Any]:
    with session_scope(url, write=False) as session:
        row = session.execute(select(ReviewDefinitionRow).where(col(ReviewDefinitionRow.name) == NAME)).scalar_one()
        definition = ReviewDefinition.model_validate(row.body)
        started = time.perf_counter()
        preview = review_scope.preview(session, definition)
        took = time.perf_counter() - started
    return {"preview_s": round(took, 2), "items": preview.items, "reviewers": preview.reviewers,
            "to_fallback": preview.to_fallback}  # fmt: skip


def campaign(url: str, campaign_id: str) -> ReviewCampaign | None:
    with session_scope(url, write=False) as session:
        return session.get(ReviewCampaign, campaign_id)


async def measure_once(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run on a fresh app DB of ``backend`` and a fresh stack: build, preview, start, close early."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"lapse-bench-reviews-{backend}-"))
    results: dict[str, Any] = {"load_average_at_start": [round(load, 2) for load in os.getloadavg()]}
    stack = Stack(data_dir)
    try:
        with app_db(backend, data_dir) as url:
            settings: Settings = stack.settings
            settings.database_url = url
            stack.overrides["LAPSE_DATABASE_URL"] = url
            started = time.perf_counter()
            await asyncio.to_thread(build, url, users=args.users, grants=args.grants, roles=args.roles, seed=args.seed)
            results["build_s"] = round(time.perf_counter() - started, 1)
            print(f"{backend}: organisation and grants built in {results['build_s']} s", flush=True)
            results["preview"] = measure_preview(url)
            print(f"{backend}: preview:", results["preview"], flush=True)

            settings.temporal_ui_port = free_port()
            host, _, port = settings.temporal_address.rpartition(":")
            server = stack._start("temporal", temporal_server_command(settings))
            stack._wait(lambda: port_open(host, int(port)), "the Temporal dev server", server)
            worker = stack._start("worker", WORKER_COMMAND)
            stack._wait(lambda: "worker polling" in stack.log("worker"), "the worker", worker)
            client = await Client.connect(settings.temporal_address, data_converter=data_converter(settings))
            settings.submit_timeout = timedelta(seconds=args.timeout)
            results["worker_rss_before_mib"] = vm_hwm_mib(worker.pid)

            results["load_average_before_start"] = [round(load, 2) for load in os.getloadavg()]
            started = time.perf_counter()
            campaign_id = await review_runs.start_campaign(client, settings, NAME, started_by=ADMIN)
            results["start_s"] = round(time.perf_counter() - started, 2)
            opened = campaign(url, campaign_id)
            assert opened is not None
            results["campaign"] = {"id": campaign_id, "state": opened.state, "items": opened.items,
                                   "reviewers": opened.reviewers}  # fmt: skip
            assert opened.items == results["preview"]["items"], "the snapshot holds what the preview counted"
            results["worker_peak_rss_after_start_mib"] = vm_hwm_mib(worker.pid)
            print(f"{backend}: start:", results["start_s"], "s", results["campaign"], flush=True)

            started = time.perf_counter()
            await review_runs.close_now(client, settings, campaign_id, by=ADMIN)
            await client.get_workflow_handle(names.review_workflow_id(campaign_id)).result()
            results["close_early_s"] = round(time.perf_counter() - started, 2)
            results["worker_peak_rss_mib"] = vm_hwm_mib(worker.pid)
            print(f"{backend}: closed early (default keep for every item):", results["close_early_s"], "s", flush=True)
            stack.stop()  # before the app DB goes (PostgreSQL: its server stops with ``app_db``)
    finally:
        stack.stop()
        if args.keep:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return results


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs of one backend and their medians (the worker's peak: the highest)."""
    return {
        "runs": runs,
        "start_s": statistics.median(r["start_s"] for r in runs),
        "preview_s": statistics.median(r["preview"]["preview_s"] for r in runs),
        "close_early_s": statistics.median(r["close_early_s"] for r in runs),
        "worker_peak_rss_mib": max(r["worker_peak_rss_mib"] or 0 for r in runs),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "users": args.users,
        "grants": args.grants,
        "roles": args.roles,
        "repeat": args.repeat,
        "bench_peak_rss_mib": 0.0,
    }
    for backend in args.backends:
        results[backend] = summarise([await measure_once(backend, args) for _ in range(args.repeat)])
        results["bench_peak_rss_mib"] = round(peak_rss_mib(), 1)
    results["targets"] = {
        backend: {
            "start_s": {"median": results[backend]["start_s"], "target": TARGET_START_S,
                        "ok": results[backend]["start_s"] <= TARGET_START_S},
            "worker_peak_mib": {"measured": results[backend]["worker_peak_rss_mib"], "target": TARGET_WORKER_MIB,
                                "ok": results[backend]["worker_peak_rss_mib"] <= TARGET_WORKER_MIB},
        }
        for backend in args.backends
    }  # fmt: skip
    return results


def refuse_to_shrink(out: Path, args: argparse.Namespace) -> None:
    """A smaller run (a quick check) never overwrites the figures of a larger one."""
    if not out.exists():
        return
    try:
        kept = json.loads(out.read_text())
    except ValueError:
        return
    if kept.get("grants", 0) > args.grants or kept.get("users", 0) > args.users:
        raise SystemExit(
            f"{out} holds a run of {kept.get('grants')} grants; this one has {args.grants}: "
            "name another --out for a smaller run"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--grants", type=int, default=100_000)
    parser.add_argument("--roles", type=int, default=400)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--repeat", type=int, default=3, help="runs per backend, each on a fresh stack (medians)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the start")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.out is not None:
        refuse_to_shrink(arguments.out, arguments)
    figures = asyncio.run(main(arguments))
    print(json.dumps(figures["targets"], indent=2))
    if arguments.out is not None:
        arguments.out.write_text(json.dumps(figures, indent=2) + "\n")
