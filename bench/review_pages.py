"""Reviewing benchmark: a reviewer's page of 50 items among a 100,000-item campaign, and a bulk decision of 1,000.

Builds the app DB directly in bulk (the items a campaign's snapshot would hold: 100,000 over 500 reviewers, the
bench's reviewer holding ``--mine`` of them, holders among 5,000 users), on SQLite and on a real PostgreSQL
(``harness.postgres``), runs ``ANALYZE`` (a database in use has its statistics), then measures the server time,
through the app over ASGI (no network), of

1. ``GET /api/reviews/items`` (50, grouped by person), a page deep in the list (``after=``), grouped by role;
2. the ``/reviews`` page (the same 50, rendered);
3. a bulk decision: ``POST /api/reviews/items/draft`` of 1,000 items with one comment, then
   ``POST /api/reviews/items/submit`` (1,000 decisions and their audit events; no workflow is told here).

Targets (issue 11): a page p95 ≤ 100 ms; the bulk decision ≤ 2 s to record. Run from the project root::

    .venv/bin/python -m bench.review_pages                        # 100,000 items
    .venv/bin/python -m bench.review_pages --items 5000 --mine 2000 --backends sqlite   # a quick check
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

from access.reviews import ReviewDefinition
from access.types import Approver, ApproverKind
from bench.pages import app_db, time_get
from starter.api.app import create_app
from store.db import migrate, session_scope
from store.settings import Settings
from store.tables import ReviewCampaign, ReviewItem, User

REVIEWER = "reviewer@example.com"
CAMPAIGN = "bench-20270101T090000"
PAGE = 50
BULK = 1000
TARGET_PAGE_P95_MS = 100.0
TARGET_BULK_S = 2.0
REVIEWERS = 500
USERS = 5000
BATCH = 5000


class NoTemporal:
    def __getattr__(self, name: str) -> Any:
        from temporalio.service import RPCError, RPCStatusCode

        raise RPCError("no Temporal behind the benchmark", RPCStatusCode.UNAVAILABLE, b"")


def build(url: str, *, items: int, mine: int, seed: int) -> None:
    migrate(url)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    definition = ReviewDefinition(
        name="bench", reviewers=[Approver(kind=ApproverKind.MANAGER)], fallback=[Approver(kind=ApproverKind.MANAGER)]
    )
    with session_scope(url) as session:
        users = [{"email": REVIEWER, "name": "The Reviewer", "active": True, "is_admin": False, "source": "file"}]
        users += [
            {"email": f"user{n}@example.com", "name": f"User {n}", "manager_email": REVIEWER, "active": n % 50 != 0}
            | {"is_admin": False, "source": "file"}
            for n in range(USERS)
        ]
        session.execute(insert(User), users)
        session.add(
            ReviewCampaign(
                id=CAMPAIGN,
                definition="bench",
                body=definition.model_dump(mode="json"),
                state="open",
                started_by="bench",
                started_at=now,
                deadline=now + timedelta(days=14),
                items=items,
                reviewers=REVIEWERS,
            )
        )
    mine_at = set(rng.sample(range(items), mine))
    paths = ("jit", "birthright", "external")
    for start in range(0, items, BATCH):
        rows = []
        for n in range(start, min(items, start + BATCH)):
            holder = f"user{rng.randrange(USERS)}@example.com"
            path = paths[n % 3]
            rows.append(
                {
                    "campaign_id": CAMPAIGN,
                    "grant_id": n + 1,
                    "user_email": holder,
                    "account": holder,
                    "role": f"pg/db{n % 40}/role{n % 25}",
                    "path": path,
                    "policy": "baseline" if path == "birthright" else None,
                    "request_id": f"req{n}" if path == "jit" else None,
                    "justification": "<script>alert(1)</script> on call" if path == "jit" else "",
                    "granted_at": now - timedelta(days=rng.randrange(400)),
                    "manager_email": REVIEWER,
                    "holder_active": True,
                    "reviewer": REVIEWER if n in mine_at else f"reviewer{n % REVIEWERS}@example.com",
                    "fallback": [],
                    "state": "open",
                    "draft_comment": "",
                    "comment": "",
                    "proof": {},
                }
            )
        with session_scope(url) as session:
            session.execute(insert(ReviewItem), rows)
    with session_scope(url) as session:  # the statistics a database in use would have
        session.execute(text("ANALYZE"))


HEADERS = {"X-Forwarded-Email": REVIEWER}


def _items(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["items"]) == PAGE


def _page(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text[:300]
    assert response.text.count('name="items"') == PAGE and "<script>alert" not in response.text


async def measure(url: str, data_dir: Path, calls: int) -> dict[str, Any]:
    settings = Settings(
        data_dir=data_dir, database_url=url, auth="proxy", trusted_proxies=["127.0.0.1"], codec_key=None
    )
    app = create_app(settings, client=NoTemporal())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://lapse.bench", timeout=60) as http:
        first = (await http.get("/api/reviews/items", params={"limit": PAGE}, headers=HEADERS)).json()
        deep = first["next_after"]
        for _ in range(20):  # some way into the list
            deep = (
                await http.get("/api/reviews/items", params={"limit": PAGE, "after": deep}, headers=HEADERS)
            ).json()["next_after"]
        results = {
            "api_first_page": await time_get(
                http, f"/api/reviews/items?limit={PAGE}", calls, headers=HEADERS, check=_items
            ),
            "api_deep_page": await time_get(
                http, f"/api/reviews/items?limit={PAGE}&after={deep}", calls, headers=HEADERS, check=_items
            ),
            "api_by_role": await time_get(
                http, f"/api/reviews/items?limit={PAGE}&group=role", calls, headers=HEADERS, check=_items
            ),
            "page_first": await time_get(http, "/reviews", calls, headers=HEADERS, check=_page),
        }
        with session_scope(url, write=False) as session:
            chosen = list(
                session.exec(
                    select(ReviewItem.id)
                    .where(ReviewItem.reviewer == REVIEWER)
                    .order_by(col(ReviewItem.id))
                    .limit(BULK)
                )
            )
        body = {"items": chosen, "decision": "revoke", "comment": "left the team"}
        started = time.perf_counter()
        drafted = await http.post("/api/reviews/items/draft", json=body, headers=HEADERS)
        draft_s = time.perf_counter() - started
        assert drafted.json() == {"drafted": BULK}, drafted.text[:300]
        started = time.perf_counter()
        submitted = await http.post("/api/reviews/items/submit", json={"items": chosen}, headers=HEADERS)
        submit_s = time.perf_counter() - started
        assert submitted.json()["decided"] == BULK, submitted.text[:300]
        results["bulk_decision"] = {
            "items": BULK,
            "draft_ms": round(draft_s * 1000, 1),
            "submit_ms": round(submit_s * 1000, 1),
            "total_s": round(draft_s + submit_s, 3),
        }
    return results


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "items": args.items,
        "reviewers": REVIEWERS,
        "mine": args.mine,
        "page": PAGE,
        "calls": args.calls,
        "measured": "server time: each call through the app over ASGI (httpx.ASGITransport), no network",
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }
    for name in args.backends:
        data_dir = Path(tempfile.mkdtemp(prefix=f"lapse-bench-reviews-{name}-"))
        try:
            with app_db(name, data_dir) as url:
                started = time.perf_counter()
                await asyncio.to_thread(build, url, items=args.items, mine=args.mine, seed=args.seed)
                measured = await measure(url, data_dir, args.calls)
                measured["build_s"] = round(time.perf_counter() - started, 1)
                results[name] = measured
                print(f"{name}: {json.dumps(measured)}", flush=True)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    results["targets"] = {
        name: {
            "page_p95_ms": max(results[name][k]["p95_ms"] for k in ("api_first_page", "api_deep_page", "page_first")),
            "page_target_ms": TARGET_PAGE_P95_MS,
            "bulk_s": results[name]["bulk_decision"]["total_s"],
            "bulk_target_s": TARGET_BULK_S,
        }
        for name in args.backends
    }
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--mine", type=int, default=5_000, help="items of the bench's reviewer")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument(
        "--out", type=Path, default=None, help="the JSON (default bench/results-review-pages-<date>.json)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    figures = asyncio.run(main(arguments))
    out = arguments.out or Path(__file__).parent / f"results-review-pages-{date.today().isoformat()}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures["targets"], indent=2))
