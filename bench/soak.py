"""Soak benchmark (issue 13): what 100,000 sleeping grants cost the workers and the Temporal server, then a long
steady run on top of them.

Starts its own stack in a throwaway directory (``bench.lifecycle.Stack``: Temporal dev server, worker(s) each on
its own ops port, the API) with the demo organisation plus ``--users`` generated people and enough roles of a
``soak`` ledger integration for every grant to be a distinct person and role, all under an automatic rule (no
approval, up to P30D). Notifications are off (no ``notifications:`` section): the figures are the grants' own.

1. **Sleeping grants** (``--grants``, default 100,000): each a ``--duration`` (P7D) grant requested through the
   API with ``--concurrency`` requests in flight (a 503 from the API's admission is retried after its
   ``Retry-After``), then left to sleep. Measured: the creation rate; each worker's RSS before (after a warm-up)
   and after (once all are active and ``--settle`` seconds have passed), per grant; the workers' sticky cache
   (``temporal_sticky_cache_size``: the SDK keeps up to ``max_cached_workflows``, 1,000 by default, workflows'
   state in memory, evicting the least recently used; an evicted grant is replayed from its history when its
   timer fires); the dev server's SQLite file + WAL per grant; the app DB per grant.
2. **Steady run** (``--soak-seconds``, default 3,600): ``bench.lifecycle``'s lifecycle (request, the manager
   approves, a ledger grant held ``--hold`` s, revoked) at ``--rate`` (5/s), with the sleeping grants still held;
   the revoke lag p99 by window, every error, and the processes' RSS sampled every ``--sample-seconds``.

At the end the stack is stopped and its directory (with the grants) deleted, unless ``--keep``.

    .venv/bin/python -m bench.soak --grants 2000 --soak-seconds 60        # smoke
    .venv/bin/python -m bench.soak --json bench/results-soak-$(date -u +%F).json   # full: ~45 min + 1 h
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func
from sqlmodel import select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench import lifecycle
from bench.lifecycle import _ms, say
from bench.observe import CpuWindow, gauge, rss_bytes, scrape, sqlite_size
from store.db import session_scope
from store.tables import AccessRequest

SOAK_INTEGRATION = "soak"
STICKY_CACHE = "temporal_sticky_cache_size"
SDK_DEFAULT_CACHE = 1000
"""temporalio's ``Worker(max_cached_workflows=...)`` default, which Lapse's worker keeps."""
TARGET_BYTES_PER_GRANT = 1024
MIN_GRANTS_TO_JUDGE = 10_000
"""Grants past a full sticky cache needed to judge the per-grant target."""


# --- the organisation ---------------------------------------------------------------------------------------------


def soak_email(index: int) -> str:
    return f"soak-{index:05d}@example.com"


def soak_role(index: int) -> str:
    return f"{SOAK_INTEGRATION}/app/r{index:04d}"


def soak_org(users: int, roles: int) -> dict[str, Any]:
    """The demo organisation without notifications, plus ``users`` people and ``roles`` automatic roles."""
    org = lifecycle.quiet_demo_org()
    org["users"] += [{"email": soak_email(i), "name": f"Soak {i}", "department": "Soak"} for i in range(users)]
    org["integrations"].append(
        {
            "name": SOAK_INTEGRATION,
            "kind": "ledger",
            "description": "Roles for the soak benchmark's sleeping grants",
            "resources": [
                {"name": "app", "roles": [{"name": f"r{i:04d}", "sensitivity": "low"} for i in range(roles)]}
            ],
        }
    )
    org["approval_workflows"].append(
        {
            "name": "soak-automatic",
            "description": "Automatic, up to 30 days",
            "rules": [{"name": "automatic", "max_duration": "P30D", "justification": False}],
        }
    )
    org["assignments"].append({"workflow": "soak-automatic", "scope": SOAK_INTEGRATION})
    return org


def states(db_url: str) -> dict[str, int]:
    """Requests by state, from the app DB."""
    with session_scope(db_url, write=False) as session:
        rows = session.exec(select(AccessRequest.state, func.count()).group_by(AccessRequest.state)).all()
    return {str(state): int(n) for state, n in rows}


# --- what a running stack holds -----------------------------------------------------------------------------------


def snapshot(stack: lifecycle.Stack) -> dict[str, Any]:
    """RSS of every process, each worker's sticky cache, and the two databases' sizes, now."""
    caches = {name: gauge(scrape(port, stack.metrics_token), STICKY_CACHE) for name, port in stack.ops_ports.items()}
    return {
        "at": time.time(),
        "rss": {name: rss_bytes(process.pid) for name, process in stack.children},
        "sticky_cache": caches,
        "temporal_db": sqlite_size(stack.data_dir / "temporal.db"),
        "app_db": sqlite_size(Path(stack.settings.db_url.removeprefix("sqlite:///"))),
    }


def _workers_rss(snap: dict[str, Any]) -> int:
    return sum(v or 0 for name, v in snap["rss"].items() if name.startswith("worker"))


def _cache(snap: dict[str, Any]) -> float:
    return sum(v or 0 for v in snap["sticky_cache"].values())


# --- 1: sleeping grants -------------------------------------------------------------------------------------------


async def create_grants(
    api: lifecycle.Api,
    indices: range,
    args: argparse.Namespace,
    progress: Callable[[int], None],
) -> dict[str, Any]:
    """Request a grant for each index (person ``i % users``, role ``i // users``), ``--concurrency`` at once."""
    pending = iter(indices)
    created = 0
    retries = 0
    errors: Counter[str] = Counter()
    responses: list[float] = []

    async def one(index: int) -> None:
        nonlocal created, retries
        body = {"role": soak_role(index // args.users), "duration": args.duration, "justification": "soak"}
        while True:
            started = time.monotonic()
            try:
                response = await api.call(soak_email(index % args.users), "POST", "/api/requests", body)
            except httpx.HTTPError as error:
                errors[type(error).__name__] += 1
                return
            if response.status_code == 503 and not _started(response):  # refused at admission: nothing started
                retries += 1
                await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), 2.0))
                continue
            if response.status_code != 201:
                errors[f"{response.status_code}: {response.text[:120]}"] += 1
                return
            responses.append(time.monotonic() - started)
            created += 1
            progress(created)
            return

    async def worker() -> None:
        for index in pending:
            await one(index)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    seconds = time.monotonic() - started
    return {
        "requested": len(indices),
        "created": created,
        "seconds": seconds,
        "rate_per_s": created / seconds if seconds else None,
        "admission_retries_503": retries,
        "errors": dict(errors),
        "create_response_s": lifecycle.distribution(responses),
    }


def _started(response: httpx.Response) -> bool:
    """Whether a 503 names a request that was started all the same (its body has the ``id``)."""
    with contextlib.suppress(ValueError):
        body = response.json()
        return isinstance(body, dict) and "id" in body
    return False


async def wait_settled(db_url: str, most: float) -> dict[str, int]:
    """Until no request is still being started or provisioned (or ``most`` seconds have passed)."""
    deadline = time.monotonic() + most
    while True:
        counts = await asyncio.to_thread(states, db_url)
        if not any(counts.get(s, 0) for s in ("submitted", "pending", "provisioning")) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(2)


async def sleeping_grants(
    stack: lifecycle.Stack, api: lifecycle.Api, args: argparse.Namespace, say: Callable[[str], None]
) -> dict[str, Any]:
    warmup = min(args.warmup_grants, args.grants)
    say(f"warm-up: {warmup} grants…")
    await create_grants(api, range(warmup), args, lambda _n: None)
    await wait_settled(stack.settings.db_url, 120)
    await asyncio.sleep(args.settle)
    before = await asyncio.to_thread(snapshot, stack)
    say(f"before: workers' RSS {_workers_rss(before) / 2**20:.1f} MiB, sticky cache {_cache(before):.0f}")

    samples: list[dict[str, Any]] = []
    step = max(1, args.sample_every or args.grants // 20)
    marks: list[tuple[int, float]] = []

    def progress(created: int) -> None:
        # Densely while the sticky cache fills (the SDK's default holds 1,000 per worker), then every ``step``.
        if created % step == 0 or (created <= 2 * SDK_DEFAULT_CACHE * args.workers and created % 100 == 0):
            marks.append((created, time.monotonic()))

    async def sampler() -> None:
        seen = 0
        while True:
            await asyncio.sleep(0.5)
            while seen < len(marks):
                created, at = marks[seen]
                seen += 1
                snap = await asyncio.to_thread(snapshot, stack)
                samples.append({"created": warmup + created, "monotonic": at, **snap})
                say(
                    f"  {warmup + created} grants: workers' RSS {_workers_rss(snap) / 2**20:.1f} MiB, "
                    f"sticky cache {_cache(snap):.0f}, Temporal DB {snap['temporal_db']['total'] / 2**20:.1f} MiB"
                )

    say(f"creating {args.grants - warmup} {args.duration} grants, {args.concurrency} at once…")
    watcher = asyncio.create_task(sampler())
    cpu = CpuWindow({name: process.pid for name, process in stack.children}).start()
    creation = await create_grants(api, range(warmup, args.grants), args, progress)
    counts = await wait_settled(stack.settings.db_url, args.timeout)
    cpu.stop()
    await asyncio.sleep(1)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    say(f"  created {creation['created']} in {creation['seconds']:.0f} s; settling {args.settle:g} s…")
    await asyncio.sleep(args.settle)
    after = await asyncio.to_thread(snapshot, stack)
    return {
        "warmup_grants": warmup,
        "creation": creation,
        "creation_rate_by_sample": _rates(samples),
        "creation_cpu": cpu.figures(creation["created"]),
        "states_after": counts,
        "before": before,
        "after": after,
        "samples": samples,
        "cost": cost(before, after, samples, args.grants - warmup),
    }


def _rates(samples: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Creation rate between consecutive samples: does it slow down as grants pile up?"""
    return [
        {"up_to": b["created"], "per_s": (b["created"] - a["created"]) / (b["monotonic"] - a["monotonic"])}
        for a, b in itertools.pairwise(samples)
        if b["monotonic"] > a["monotonic"]
    ]


def cost(
    before: dict[str, Any], after: dict[str, Any], samples: Sequence[dict[str, Any]], grants: int
) -> dict[str, Any]:
    """Per-grant figures: the workers' RSS over all grants, per cached workflow, and after the cache was full."""
    rss_delta = _workers_rss(after) - _workers_rss(before)
    cache_delta = _cache(after) - _cache(before)
    result: dict[str, Any] = {
        "grants": grants,
        "workers_rss_delta_bytes": rss_delta,
        "workers_rss_per_grant_bytes": rss_delta / grants if grants else None,
        "sticky_cache_before_after": [_cache(before), _cache(after)],
        "workers_rss_per_cached_workflow_bytes": rss_delta / cache_delta if cache_delta > 0 else None,
        "temporal_db_per_grant_bytes": (after["temporal_db"]["total"] - before["temporal_db"]["total"]) / grants
        if grants
        else None,
        "app_db_per_grant_bytes": (after["app_db"]["total"] - before["app_db"]["total"]) / grants if grants else None,
        "server_rss_delta_bytes": (after["rss"].get("temporal") or 0) - (before["rss"].get("temporal") or 0),
    }
    # Once every worker's cache is full, what each further sleeping grant costs (the figure the target is about):
    # the least-squares slope of RSS over grants, from the second sample with a full cache on (the first is
    # still settling from the fill), and the plain difference between the first full sample and the last.
    full = max(_cache(after), 1)
    post = [s for s in samples if _cache(s) >= full]
    if len(post) >= 2 and post[-1]["created"] > post[0]["created"]:
        later = post[-1]["created"] - post[0]["created"]
        delta = _workers_rss(post[-1]) - _workers_rss(post[0])
        result["after_cache_full"] = {
            "from_grants": post[0]["created"],
            "grants": later,
            "workers_rss_delta_bytes": delta,
            "per_grant_bytes_endpoints": delta / later,
            "per_grant_bytes": _slope(post[1:]) if len(post) >= 4 else delta / later,
        }
    # Judged only over enough grants past the cache that its last settling is noise: a few MiB of RSS either way
    # is several KiB per grant over a few hundred grants.
    after_full = result.get("after_cache_full")
    result["target_met"] = (
        after_full["per_grant_bytes"] <= TARGET_BYTES_PER_GRANT
        if after_full is not None and after_full["grants"] >= MIN_GRANTS_TO_JUDGE
        else None
    )
    return result


def _slope(samples: Sequence[dict[str, Any]]) -> float:
    """Bytes of the workers' RSS per grant: least squares over (grants created, RSS)."""
    xs = [float(s["created"]) for s in samples]
    ys = [float(_workers_rss(s)) for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / spread if spread else 0.0


# --- 2: the steady run --------------------------------------------------------------------------------------------


async def steady_run(
    stack: lifecycle.Stack, api: lifecycle.Api, client: Client, args: argparse.Namespace, say: Callable[[str], None]
) -> dict[str, Any]:
    ns = argparse.Namespace(
        rate=args.rate,
        seconds=args.soak_seconds,
        hold=args.hold,
        poll=0.25,
        poll_max=1.0,
        timeout=120.0,
        history_samples=20,
    )
    samples: list[dict[str, Any]] = []

    async def sampler() -> None:
        while True:
            snap = await asyncio.to_thread(snapshot, stack)
            samples.append(snap)
            say(
                f"  steady +{snap['at'] - samples[0]['at']:.0f} s: workers' RSS {_workers_rss(snap) / 2**20:.1f} MiB, "
                f"API {(snap['rss'].get('api') or 0) / 2**20:.1f} MiB, server "
                f"{(snap['rss'].get('temporal') or 0) / 2**20:.1f} MiB, load {os.getloadavg()[0]:.1f}"
            )
            await asyncio.sleep(args.sample_seconds)

    say(f"steady run: {args.rate:g} lifecycles/s for {args.soak_seconds:g} s…")
    errors_before = Counter(api.errors)
    watcher = asyncio.create_task(sampler())
    cpu = CpuWindow({name: process.pid for name, process in stack.children}).start()
    result = await lifecycle.run_lapse(api, client, ns)
    cpu.stop()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    samples.append(await asyncio.to_thread(snapshot, stack))
    summary = result["summary"]
    http_errors = dict(Counter(api.errors) - errors_before)
    not_completed = sum(summary["failures"].values())
    return {
        "summary": summary,
        "not_completed": not_completed,
        "http_errors": http_errors,
        "cpu": cpu.figures(summary["throughput"]["completed"]),
        "samples": samples,
        "workers_rss_start_end_max": [
            _workers_rss(samples[0]),
            _workers_rss(samples[-1]),
            max(_workers_rss(s) for s in samples),
        ],
    }


# --- the report ---------------------------------------------------------------------------------------------------


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:.1f} MiB"


def _bytes(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} B"


def report(figures: dict[str, Any]) -> str:
    config = figures["config"]
    lines = [
        "",
        f"Soak benchmark: {config['workers']} worker(s); {config['cpus']} CPUs; load average at start "
        f"{config['load_average_start'][0]:.1f}, at end {config['load_average_end'][0]:.1f}",
    ]
    grants = figures.get("grants")
    if grants:
        c, cost_ = grants["creation"], grants["cost"]
        before, after = grants["before"], grants["after"]
        lines += [
            "",
            f"1. Sleeping grants: {config['grants']} x {config['duration']} (automatic, ledger), "
            f"{grants['warmup_grants']} of them warm-up before the 'before' figures",
            f"  created {c['created']}/{c['requested']} in {c['seconds']:.0f} s: {c['rate_per_s'] or 0:.1f}/s with "
            f"{config['concurrency']} in flight (create p50 {_ms(c['create_response_s']['p50'])}, p99 "
            f"{_ms(c['create_response_s']['p99'])}; {c['admission_retries_503']} admission 503s retried; "
            f"errors: {c['errors'] or 'none'})",
            "  creation rate as grants accumulate: "
            + (", ".join(f"{r['per_s']:.1f}/s to {r['up_to']}" for r in grants["creation_rate_by_sample"]) or "—"),
            f"  requests by state afterwards: {grants['states_after']}",
            f"  workers' RSS before / after: {_mib(_workers_rss(before))} / {_mib(_workers_rss(after))} "
            f"(+{_mib(cost_['workers_rss_delta_bytes'])}): {_bytes(cost_['workers_rss_per_grant_bytes'])} per grant",
            f"  sticky cache before / after: {cost_['sticky_cache_before_after'][0]:.0f} / "
            f"{cost_['sticky_cache_before_after'][1]:.0f} workflows (SDK default max {SDK_DEFAULT_CACHE} per worker); "
            f"RSS per cached workflow ~{_bytes(cost_['workers_rss_per_cached_workflow_bytes'])}",
        ]
        full = cost_.get("after_cache_full")
        if full:
            lines.append(
                f"  after the cache was full (from {full['from_grants']}, {full['grants']} more grants): "
                f"{_mib(full['workers_rss_delta_bytes'])}; per grant {_bytes(full['per_grant_bytes'])} (slope), "
                f"{_bytes(full['per_grant_bytes_endpoints'])} (first full sample to last)"
            )
        verdict = {
            None: f"n/a (needs {MIN_GRANTS_TO_JUDGE} grants after the sticky cache is full)",
            True: "met",
            False: "MISSED",
        }[cost_["target_met"]]
        lines += [
            f"  target <= {TARGET_BYTES_PER_GRANT} B per sleeping grant in the worker: {verdict}",
            f"  Temporal dev server DB before / after: {_mib(before['temporal_db']['total'])} / "
            f"{_mib(after['temporal_db']['total'])} (file {_mib(after['temporal_db'].get('db'))}, WAL "
            f"{_mib(after['temporal_db'].get('wal'))}): {_bytes(cost_['temporal_db_per_grant_bytes'])} per grant",
            f"  app DB per grant: {_bytes(cost_['app_db_per_grant_bytes'])}; dev server RSS "
            f"{_mib(before['rss'].get('temporal'))} -> {_mib(after['rss'].get('temporal'))}; API RSS "
            f"{_mib(before['rss'].get('api'))} -> {_mib(after['rss'].get('api'))}",
            "  CPU ms per grant created: "
            + ", ".join(f"{k} {v:.1f}" for k, v in grants["creation_cpu"]["cpu_ms_per_lifecycle"].items()),
        ]
    steady = figures.get("steady")
    if steady:
        s = steady["summary"]
        lag = s["revoke_lag_s"]
        rss = steady["workers_rss_start_end_max"]
        lines += [
            "",
            f"2. Steady run: {config['rate']:g} lifecycles/s for {config['soak_seconds']:g} s (hold {config['hold']} s)"
            + (f", {grants['creation']['created']} sleeping grants held meanwhile" if grants else ""),
            f"  completed {s['throughput']['completed']}/{s['lifecycles']}, "
            f"steady {s['throughput']['steady'] or 0:.2f}/s",
            f"  revoke lag p50 / p99 / max: {_ms(lag['p50'])} / {_ms(lag['p99'])} / {_ms(lag['max'])}",
            f"  approval-to-grant p50 / p99: {_ms(s['approval_to_grant_s']['p50'])} / "
            f"{_ms(s['approval_to_grant_s']['p99'])}",
            "  revoke lag p99 by arrival window: "
            + "  ".join(f"{w['from_s']:.0f}s: {_ms(w['revoke_lag_p99_s'])}" for w in s["windows"]),
            f"  errors: {steady['not_completed']} lifecycles not completed {dict(s['failures']) or ''}; "
            f"HTTP errors {steady['http_errors'] or 'none'}",
            f"  workers' RSS start / end / max: {_mib(rss[0])} / {_mib(rss[1])} / {_mib(rss[2])}",
            "  CPU ms per lifecycle: "
            + ", ".join(f"{k} {v:.0f}" for k, v in steady["cpu"]["cpu_ms_per_lifecycle"].items()),
        ]
    lines += ["", *lifecycle.log_findings_lines(figures["log_findings"])]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Soak Lapse: many sleeping grants held by the workers (memory, server DB per grant), then a "
        "long steady run of lifecycles on top of them. Starts its own stack in a throwaway directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--grants", type=int, default=100_000, help="sleeping grants (0: skip part 1)")
    parser.add_argument("--duration", default="P7D", help="each sleeping grant's duration (at most P30D)")
    parser.add_argument("--concurrency", type=int, default=16, help="grant requests in flight")
    parser.add_argument("--users", type=int, default=2000, help="generated people the grants are spread over")
    parser.add_argument("--warmup-grants", type=int, default=50, help="grants made before the 'before' figures")
    parser.add_argument("--sample-every", type=int, default=0, help="sample memory every N grants (0: 1/20th)")
    parser.add_argument("--settle", type=float, default=30.0, help="idle seconds before the 'after' figures")
    parser.add_argument("--timeout", type=float, default=600.0, help="longest wait for the grants to be active")
    parser.add_argument("--soak-seconds", type=float, default=3600.0, help="steady run length (0: skip part 2)")
    parser.add_argument("--rate", type=float, default=5.0, help="steady run: lifecycles per second")
    parser.add_argument("--hold", type=int, default=2, help="steady run: grant duration in (whole) seconds")
    parser.add_argument("--sample-seconds", type=float, default=60.0, help="steady run: memory sample interval")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--set", action="append", default=[], metavar="LAPSE_NAME=VALUE", help="a setting for Lapse's processes"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the stack's directory (the grants are in it)")
    args = parser.parse_args(argv)
    if args.grants < 0 or args.soak_seconds < 0 or args.concurrency < 1 or args.users < 1 or args.workers < 1:
        parser.error("--grants and --soak-seconds at least 0; --concurrency, --users and --workers at least 1")
    if args.grants == 0 and args.soak_seconds == 0:
        parser.error("nothing to do: --grants 0 and --soak-seconds 0")
    if math.ceil(max(args.grants, 1) / args.users) > 10_000 or args.users > 19_000:
        parser.error("--users at most 19,000 and at least --grants / 10,000 (an org file holds 10,000 roles)")
    args.overrides = lifecycle.setting_overrides(parser, args.set)
    return args


async def benchmark(stack: lifecycle.Stack, args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    client = await Client.connect(stack.settings.temporal_address, data_converter=pydantic_data_converter)
    async with lifecycle.api_clients(stack.api_url, connections=max(64, args.concurrency * 2)) as clients:
        api = lifecycle.Api(clients)
        if args.grants:
            figures["grants"] = await sleeping_grants(stack, api, args, say)
        if args.soak_seconds:
            figures["steady"] = await steady_run(stack, api, client, args, say)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    lifecycle.interrupt_on_signals()
    start_load = os.getloadavg()
    data_dir = lifecycle.DataDir.create("lapse-bench-soak-", args.keep)
    stack = lifecycle.Stack(data_dir.path, args.overrides, workers=args.workers)
    stack.use_org(data_dir.path / "soak-org.yaml", soak_org(args.users, max(1, math.ceil(args.grants / args.users))))

    def measure() -> None:
        say(f"starting Temporal dev server, {args.workers} worker(s) and the API in {data_dir.path}…")
        stack.start()
        figures = asyncio.run(benchmark(stack, args, say))
        stack.stop()
        figures["log_findings"] = lifecycle.summarise_log_findings(stack)
        figures["config"] = {
            **{
                k: getattr(args, k)
                for k in ("grants", "duration", "concurrency", "users", "soak_seconds", "rate", "hold", "workers")
            },
            "settings": args.overrides,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_start": start_load,
            "load_average_end": os.getloadavg(),
        }
        lifecycle.publish(report(figures), figures, args.json)

    # The directory is kept only if asked for, even on findings or failure: the sleeping grants go with it.
    return lifecycle.run_benchmark(data_dir, measure, stack.stop, keep_on_failure=False, kept="stack directory kept:")


if __name__ == "__main__":
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench.soak import main as _main

    exit_code = _main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)  # the Temporal client can abort the interpreter at exit (sdk-python #300)
