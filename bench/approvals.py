"""Approvals benchmark: an approver with 10,000 open decisions among 100,000 pending requests.

Builds the app DB directly in bulk (no Temporal: the rows a worker would have recorded, the approvals inbox
derived from each status by ``store.approval_inbox.deciders`` as the recording does), on SQLite and on a
real PostgreSQL (``harness.postgres``), then measures the server time of

1. ``GET /api/approvals`` (the first page: 100 requests), and a page deep in the list (``?after=``);
2. the ``/approvals`` page (the first page of cards, each with its requester's manager, the role's
   sensitivity, the requester's current access and recent requests on the resource);

each through the app over ASGI (``httpx.ASGITransport``: no network), signed in by the SSO proxy's header.
For comparison it also times what ``/api/approvals`` did before the inbox: read every pending and active
request and ask each status in Python.

Run from the project root::

    .venv/bin/python -m bench.approvals                                   # 100,000 requests, 10,000 open
    .venv/bin/python -m bench.approvals --requests 2000 --open 200        # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, text
from sqlmodel import col, select

from access.requests import Decision, RequestState, RequestStatus, StepState, StepStatus
from access.types import Approver, ApproverKind
from bench.pages import app_db, time_get
from starter.api.app import create_app
from store.approval_inbox import deciders
from store.db import engine_for, migrate, session_scope
from store.settings import Settings
from store.tables import AccessRequest, ApprovalInbox, Grant, Integration, Resource, Role, User

APPROVER = "approver@example.com"
TARGET_P95_MS = 100.0
OTHER_APPROVERS = 500
MANAGERS = 200
RESOURCES = 20
ROLES_PER_RESOURCE = 10
SENSITIVITIES = ("low", "medium", "high", "critical")
BATCH = 5_000


class NoTemporal:
    """The benchmark reads only the app DB: anything that reaches for Temporal is a mistake, said loudly."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the approvals benchmark touched Temporal ({name})")


def _status(
    request_id: str, requester: str, role: str, at: datetime, eligible: list[str], decided: bool
) -> dict[str, Any]:
    """A pending request's status as its workflow records it: one open step decided by ``eligible``."""
    step = StepStatus(
        name="owners",
        approvers=[Approver(kind=ApproverKind.RESOURCE_OWNER)],
        quorum=2 if decided else 1,
        eligible=eligible,
        state=StepState.OPEN,
        opened_at=at,
        # Decided already by the approver, the step needs one more approval: someone else's to give.
        decisions=[Decision(approver=APPROVER, approved=True, comment="fine by me", at=at)] if decided else [],
    )
    status = RequestStatus(
        id=request_id,
        requester=requester,
        role=role,
        duration=timedelta(hours=2),
        justification=f"ticket INC-{request_id[-5:]}: <script>alert(1)</script> needs a look",
        policy="owners",
        rule="owner approval",
        created_at=at,
        steps=[step],
    )
    return status.model_dump(mode="json")


def build(url: str, *, requests: int, open_: int, requesters: int, seed: int) -> dict[str, Any]:
    """The organisation, ``requests`` pending requests (``open_`` of them the approver's to decide, spread
    evenly in time; a few more they decided already) and the requesters' current grants."""
    rng = random.Random(seed)
    migrate(url)
    started = time.perf_counter()
    now = datetime.now(UTC)
    with session_scope(url) as session:
        session.execute(insert(User), [{"email": APPROVER, "name": "The Approver", "active": True}])
        session.execute(
            insert(User),
            [{"email": f"manager{m:03d}@example.com", "name": f"Manager {m}", "active": True} for m in range(MANAGERS)]
            + [{"email": f"approver{a:03d}@example.com", "name": f"Approver {a}"} for a in range(OTHER_APPROVERS)],
        )
        session.execute(
            insert(User),
            [
                {
                    "email": f"user{u:05d}@example.com",
                    "name": f"User {u}",
                    "manager_email": f"manager{u % MANAGERS:03d}@example.com",
                    "active": True,
                }
                for u in range(requesters)
            ],
        )
        integration = Integration(name="ledger", kind="ledger")
        session.add(integration)
        session.flush()
        paths: list[str] = []
        for r in range(RESOURCES):
            resource = Resource(integration_id=integration.id or 0, name=f"app-{r:02d}")
            session.add(resource)
            session.flush()
            for n in range(ROLES_PER_RESOURCE):
                path = f"ledger/app-{r:02d}/role-{n}"
                paths.append(path)
                session.add(
                    Role(
                        resource_id=resource.id or 0,
                        name=f"role-{n}",
                        path=path,
                        description=f"Role {n} of app {r}",
                        sensitivity=SENSITIVITIES[n % len(SENSITIVITIES)],
                    )
                )
    every = max(1, requests // open_)
    decided_every = every * 10 + 1
    made = open_theirs = 0
    for start in range(0, requests, BATCH):
        rows, inbox = [], []
        for i in range(start, min(start + BATCH, requests)):
            request_id = f"r{i:09d}"
            requester = f"user{rng.randrange(requesters):05d}@example.com"
            role = rng.choice(paths)
            at = now - timedelta(seconds=(requests - i) * 5)
            others = [f"approver{rng.randrange(OTHER_APPROVERS):03d}@example.com" for _ in range(2)]
            theirs = i % every == 0 and open_theirs < open_
            decided = not theirs and i % decided_every == 1
            eligible = [APPROVER, *others] if theirs or decided else others
            status = _status(request_id, requester, role, at, eligible, decided)
            rows.append(
                {
                    "id": request_id,
                    "requester": requester,
                    "role": role,
                    "state": RequestState.PENDING.value,
                    "created_at": at,
                    "status": status,
                }
            )
            for person in deciders(RequestStatus.model_validate(status)):
                inbox.append({"request_id": request_id, "approver": person, "created_at": at})
            open_theirs += theirs
            made += 1
        with session_scope(url) as session:
            session.execute(insert(AccessRequest), rows)
            session.execute(insert(ApprovalInbox), inbox)
    with session_scope(url) as session:
        # What the requesters hold now: a grant each on some role, and older, ended requests for it.
        grants = [
            {
                "account": f"user{u:05d}@example.com",
                "user_email": f"user{u:05d}@example.com",
                "role": rng.choice(paths),
                "path": rng.choice(("jit", "birthright", "external")),
                "active": True,
                "granted_at": now - timedelta(days=1),
                "expires_at": now + timedelta(hours=rng.randrange(1, 48)),
                "phase": "held",
            }
            for u in range(requesters)
        ]
        for chunk in range(0, len(grants), BATCH):
            session.execute(insert(Grant), grants[chunk : chunk + BATCH])
    if url.startswith("postgresql"):
        with engine_for(url).connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    else:
        with engine_for(url).begin() as connection:
            connection.execute(text("ANALYZE"))
    with session_scope(url, write=False) as session:
        mine = len(session.exec(select(ApprovalInbox.request_id).where(ApprovalInbox.approver == APPROVER)).all())
    assert mine == open_theirs, (mine, open_theirs)
    return {"requests": made, "open_for_approver": mine, "build_s": round(time.perf_counter() - started, 1)}


def _api_page(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert 0 < len(response.json()) <= 100, response.headers


def _cards(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text[:500]
    assert 0 < response.text.count('class="approval"') <= 25, "a page of cards"
    assert "&lt;script&gt;" in response.text and "<script>alert" not in response.text


def python_filter(url: str) -> tuple[int, float]:
    """What ``/api/approvals`` did before the inbox: every pending and active request, asked in Python."""
    started = time.perf_counter()
    states = [RequestState.PENDING.value, RequestState.ACTIVE.value]
    query = select(AccessRequest).where(col(AccessRequest.state).in_(states)).order_by(col(AccessRequest.created_at))
    with session_scope(url, write=False) as session:
        found = 0
        for row in session.exec(query):
            found += RequestStatus.model_validate(row.status).awaits_decision_from(APPROVER)
    return found, time.perf_counter() - started


async def measure(url: str, data_dir: Path, calls: int, deep: str) -> dict[str, Any]:
    settings = Settings(
        data_dir=data_dir, database_url=url, auth="proxy", trusted_proxies=["127.0.0.1"], codec_key=None
    )
    app = create_app(settings, client=NoTemporal())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://lapse.bench") as http:
        results = {
            "api_first_page": await time_get(
                http, "/api/approvals", calls, headers={"X-Forwarded-Email": APPROVER}, check=_api_page
            ),
            "api_deep_page": await time_get(
                http, f"/api/approvals?after={deep}", calls, headers={"X-Forwarded-Email": APPROVER}, check=_api_page
            ),
            "page_first": await time_get(
                http, "/approvals", calls, headers={"X-Forwarded-Email": APPROVER}, check=_cards
            ),
            "page_deep": await time_get(
                http, f"/approvals?after={deep}", calls, headers={"X-Forwarded-Email": APPROVER}, check=_cards
            ),
        }
    found, took = await asyncio.to_thread(python_filter, url)
    results["before_inbox_python_filter"] = {"found": found, "one_call_ms": round(took * 1000, 1)}
    return results


async def main(args: argparse.Namespace) -> dict[str, Any]:
    requesters = args.requesters or max(1, args.requests // 5)
    results: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "requests": args.requests,
        "open_for_approver": args.open,
        "requesters": requesters,
        "calls": args.calls,
        "api_page_size": 100,
        "page_cards": 25,
        "measured": "server time: each call through the app over ASGI (httpx.ASGITransport), no network",
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }
    for name in args.backends:
        data_dir = Path(tempfile.mkdtemp(prefix=f"lapse-bench-approvals-{name}-"))
        try:
            with app_db(name, data_dir) as url:
                built = build(url, requests=args.requests, open_=args.open, requesters=requesters, seed=args.seed)
                print(f"{name}: built {built}", flush=True)
                with session_scope(url, write=False) as session:
                    # A cursor half-way down the approver's list: keyset paging costs the same there.
                    deep = session.exec(
                        select(ApprovalInbox.request_id)
                        .where(ApprovalInbox.approver == APPROVER)
                        .order_by(col(ApprovalInbox.created_at), col(ApprovalInbox.request_id))
                        .offset(args.open // 2)
                        .limit(1)
                    ).one()
                measured = await measure(url, data_dir, args.calls, deep)
                print(f"{name}: {json.dumps(measured)}", flush=True)
                results[name] = {**built, **measured}
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    results["targets"] = {
        f"{name}_{what}_p95_ms": {
            "measured": results[name][what]["p95_ms"],
            "target": TARGET_P95_MS,
            "ok": results[name][what]["p95_ms"] <= TARGET_P95_MS,
        }
        for name in args.backends
        for what in ("api_first_page", "page_first")
    }
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000, help="pending requests in all")
    parser.add_argument("--open", type=int, default=10_000, help="of them, the approver's to decide")
    parser.add_argument("--requesters", type=int, default=None, help="default: one for every 5 requests")
    parser.add_argument("--calls", type=int, default=60, help="timed calls of each kind (after 3 to warm up)")
    parser.add_argument("--backends", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the JSON (default bench/results-approvals-<date>.json)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    figures = asyncio.run(main(arguments))
    out = arguments.out or Path(__file__).parent / f"results-approvals-{date.today().isoformat()}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures["targets"], indent=2))
    print(f"written to {out}")
