"""Throughput scaling (issue 13): ``bench.lifecycle``'s Lapse lifecycle with 1, 2 and 3 worker processes at rising
rates until each saturates, bare Temporal at the same rates, and where the limit is.

For each worker count a fresh stack (``bench.lifecycle.Stack``: dev server, N ``python -m worker`` each on its own
ops port, one API) runs an unmeasured warm-up, then one round per rate (``--rates``, ascending) of
``bench.lifecycle.run_lapse``: requests through the API, the manager approves, a ledger grant held ``--hold`` s,
revoked by its workflow. Bare Temporal (``bench.lifecycle.run_bare``: start, update, no-op activity, timer, no-op
activity, worker in this process) runs first, on the one-worker stack's server before Lapse uses it.

A round *keeps up* when at least ``--keep-up`` of its lifecycles complete, its steady throughput is at least
``--keep-up`` times the rate, and the revoke lag p99 stays under ``--max-lag``; the first rate where it does not is
where that configuration *saturates*, and higher rates are skipped for it (except bare Temporal's saturation rate,
at which every configuration is measured so that the ratio compares like with like).

Evidence taken in each round, for "where is the limit": CPU of each process (the dev server, each worker, the API,
this load generator) and of the whole machine from ``/proc``; the workers' workflow-task and activity
schedule-to-start latency (Temporal SDK metrics from each worker's ``/metrics``); the app DB's write-lock wait as a
probe writer in another process sees it (``bench.observe.WriteLockProbe``).

Run from the project root::

    .venv/bin/python -m bench.scaling --workers 1,2 --rates 5,10 --seconds 10     # smoke
    .venv/bin/python -m bench.scaling --json bench/results-scaling-$(date -u +%F).json   # full: ~30-40 min
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench import lifecycle
from bench.lifecycle import say
from bench.observe import CpuWindow, WriteLockProbe, histogram, merge, minus, quantile, scrape
from bench.observe import count as observed

WORKFLOW_TASK_WAIT = "temporal_workflow_task_schedule_to_start_latency_seconds"
ACTIVITY_WAIT = "temporal_activity_schedule_to_start_latency_seconds"

Runner = Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]


def round_args(args: argparse.Namespace, rate: float, seconds: float) -> argparse.Namespace:
    """What ``bench.lifecycle``'s drivers read from their arguments, for one round."""
    return argparse.Namespace(
        rate=rate,
        seconds=seconds,
        hold=args.hold,
        poll=args.poll,
        poll_max=args.poll_max,
        timeout=args.timeout,
        history_samples=0,
    )


def keeps_up(summary: dict[str, Any], rate: float, lifecycles: int, args: argparse.Namespace) -> bool:
    throughput = summary["throughput"]
    lag = summary["revoke_lag_s"]["p99"]
    return (
        throughput["completed"] >= args.keep_up * lifecycles
        and (throughput["steady"] or 0.0) >= args.keep_up * rate
        and lag is not None
        and lag <= args.max_lag
    )


def _group(cpu: dict[str, float]) -> dict[str, float]:
    """Per-process figures folded into server / workers / api / bench."""
    groups = {"server": cpu.get("temporal", 0.0), "workers": 0.0, "api": cpu.get("api", 0.0)}
    groups["bench"] = cpu.get("bench", 0.0)
    groups["workers"] = sum(value for name, value in cpu.items() if name.startswith("worker"))
    return groups


async def measured_round(
    stack: lifecycle.Stack, label: str, rate: float, run: Runner, args: argparse.Namespace
) -> dict[str, Any]:
    """One round of ``run`` at ``rate``, with the CPU, schedule-to-start and write-lock evidence around it.

    Bare Temporal's worker runs in this process (its CPU is the ``bench`` figure) without metrics: its rounds
    take no schedule-to-start (the stack's Lapse workers are idle then)."""
    ns = round_args(args, rate, args.seconds)
    lifecycles = max(1, round(rate * args.seconds))
    pids = {name: process.pid for name, process in stack.children}
    ports = {} if label.startswith("bare") else dict(stack.ops_ports)
    token = stack.metrics_token
    before = {name: await asyncio.to_thread(scrape, port, token) for name, port in ports.items()}
    with WriteLockProbe(stack.settings.db_url) as probe:
        cpu = CpuWindow(pids).start()
        result = await run(ns)
        cpu.stop()
    after = {name: await asyncio.to_thread(scrape, port, token) for name, port in ports.items()}
    summary = result["summary"]
    summary.pop("windows", None)
    waits: dict[str, Any] = {}
    for key, metric in (("workflow_task", WORKFLOW_TASK_WAIT), ("activity", ACTIVITY_WAIT)):
        seen = merge(*(minus(histogram(after[n], metric), histogram(before[n], metric)) for n in ports))
        waits[key] = {"n": observed(seen), "p50": quantile(seen, 0.5), "p99": quantile(seen, 0.99)}
    completed = summary["throughput"]["completed"]
    return {
        "config": label,
        "rate": rate,
        "lifecycles": lifecycles,
        "keeps_up": keeps_up(summary, rate, lifecycles, args),
        "summary": summary,
        "refused_503": summary["failures"].get("create 503", 0),
        "cpu": cpu.figures(completed),
        "cpu_percent_by_role": _group(cpu.percent()),
        "schedule_to_start_s": waits,
        "workers_scraped": f"{sum(1 for text in after.values() if text)}/{len(ports)}",
        "write_lock_wait_s": {
            **lifecycle.distribution(probe.waits),
            "over_10ms": sum(1 for w in probe.waits if w > 0.01) / len(probe.waits) if probe.waits else None,
            "probe_failures": probe.failures,
        },
    }


async def run_config(
    stack: lifecycle.Stack,
    label: str,
    run: Runner,
    rates: Sequence[float],
    must: float | None,
    args: argparse.Namespace,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Rounds at rising rates until one does not keep up; then only ``must`` (bare Temporal's saturation rate)."""
    if args.warmup > 0:
        say(f"{label}: warm-up {args.warmup:g} s at {rates[0]:g}/s (not counted)…")
        await run(round_args(args, rates[0], args.warmup))
    rounds: list[dict[str, Any]] = []
    saturated = False
    for rate in rates:
        if saturated and rate != must:
            continue
        say(f"{label}: {rate:g}/s for {args.seconds:g} s…")
        result = await measured_round(stack, label, rate, run, args)
        rounds.append(result)
        say("  " + line(result))
        saturated = saturated or not result["keeps_up"]
        await asyncio.sleep(args.pause)
    return rounds


def saturation(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The first rate that did not keep up, and the highest steady throughput seen."""
    first = next((r["rate"] for r in rounds if not r["keeps_up"]), None)
    best = max((r["summary"]["throughput"]["steady"] or 0.0 for r in rounds), default=0.0)
    return {"saturates_at": first, "max_steady": best}


async def benchmark(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    rates = sorted(args.rates)
    configs: dict[str, list[dict[str, Any]]] = {}
    bare_at: float | None = None
    for index, workers in enumerate(args.workers):
        data_dir = await asyncio.to_thread(lifecycle.DataDir.create, f"lapse-bench-scaling-{workers}w-", args.keep)
        stack = lifecycle.Stack(data_dir.path, args.overrides, workers=workers)
        try:
            say(f"starting a stack with {workers} worker(s) in {data_dir.path}…")
            await asyncio.to_thread(stack.start)
            client = await Client.connect(stack.settings.temporal_address, data_converter=pydantic_data_converter)
            if index == 0 and not args.skip_bare:
                bare = partial(lifecycle.run_bare, client)
                configs["bare"] = await run_config(stack, "bare Temporal", bare, rates, None, args, say)
                bare_at = saturation(configs["bare"])["saturates_at"]
            async with lifecycle.api_clients(stack.api_url, connections=256) as clients:
                lapse = partial(lifecycle.run_lapse, lifecycle.Api(clients), client)
                label = f"Lapse, {workers} worker(s)"
                configs[f"lapse_{workers}"] = await run_config(stack, label, lapse, rates, bare_at, args, say)
        finally:
            await asyncio.to_thread(stack.stop)
            findings = stack.log_findings()
            for name, found in findings.items():
                say(f"  {name}.log: {len(found)} error/warning line(s), e.g. {found[0][:200]}")
            data_dir.keep = data_dir.keep or bool(findings)
            data_dir.remove_unless_kept("  logs kept in")
    return {"configs": configs, "bare_saturates_at": bare_at, **comparison(configs, bare_at)}


def comparison(configs: dict[str, list[dict[str, Any]]], bare_at: float | None) -> dict[str, Any]:
    """Each Lapse configuration's throughput against bare Temporal's at the rate where bare Temporal saturates
    (or, if it never did, the highest rate both ran)."""
    bare = {r["rate"]: r for r in configs.get("bare", [])}
    result: dict[str, Any] = {"saturation": {name: saturation(rounds) for name, rounds in configs.items()}}
    ratios: dict[str, Any] = {}
    for name, rounds in configs.items():
        if name == "bare" or not bare:
            continue
        mine = {r["rate"]: r for r in rounds}
        common = [rate for rate in mine if rate in bare]
        at = bare_at if bare_at in mine else (max(common) if common else None)
        if at is None:
            continue
        theirs = bare[at]["summary"]["throughput"]["steady"]
        ours = mine[at]["summary"]["throughput"]["steady"]
        ratios[name] = {"rate": at, "lapse": ours, "bare": theirs, "ratio": ours / theirs if ours and theirs else None}
    result["ratio_to_bare"] = ratios
    return result


def limit_reading(result: dict[str, Any]) -> list[str]:
    """What one round's evidence points at (a reading of the figures, not a proof)."""
    cpu = result["cpu_percent_by_role"]
    cores = result["cpu"]["cores"] or 1
    busy = result["cpu"]["machine_busy"]
    notes = []
    if busy is not None and busy >= 0.9:
        top = max(("server", "workers", "api", "bench"), key=lambda k: cpu[k])
        notes.append(f"all {cores} cores busy ({busy:.0%}; most: {top} {cpu[top]:.0f}% of a core)")
    lock = result["write_lock_wait_s"]
    if lock["p99"] is not None and lock["p99"] >= 0.1:
        notes.append(f"app DB write lock: probe wait p99 {lock['p99'] * 1000:.0f} ms")
    wft = result["schedule_to_start_s"]["workflow_task"]["p99"]
    if wft is not None and wft >= 0.5:
        notes.append(f"workflow tasks wait {wft:.2f} s (p99) before a worker picks them up")
    if cpu["bench"] >= 90:
        notes.append(f"the load generator itself uses {cpu['bench']:.0f}% of a core")
    return notes or ["no resource at its limit"]


# --- the report ---------------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f}"


def line(result: dict[str, Any]) -> str:
    s = result["summary"]
    t = s["throughput"]
    cpu = result["cpu_percent_by_role"]
    wft = result["schedule_to_start_s"]["workflow_task"]
    busy = result["cpu"]["machine_busy"]
    return (
        f"{t['completed']}/{result['lifecycles']} done, {result['refused_503']} refused, "
        f"steady {t['steady'] or 0:.2f}/s, revoke lag p99 {_ms(s['revoke_lag_s']['p99'])} ms, "
        f"WFT schedule-to-start p99 {_ms(wft['p99'])} ms, lock wait p99 {_ms(result['write_lock_wait_s']['p99'])} ms, "
        f"CPU% server {cpu['server']:.0f} workers {cpu['workers']:.0f} api {cpu['api']:.0f} bench {cpu['bench']:.0f}, "
        f"machine {'—' if busy is None else f'{busy:.0%}'} busy, load {result['cpu']['load_average'][0]:.1f}, "
        f"metrics of {result['workers_scraped']} workers" + ("" if result["keeps_up"] else "  SATURATED")
    )


def report(figures: dict[str, Any]) -> str:
    config = figures["config"]
    lines = [
        "",
        f"Throughput scaling: {config['seconds']:g} s per round, hold {config['hold']} s, rates {config['rates']}; "
        f"{config['cpus']} CPUs; load average at start {config['load_average_start'][0]:.1f}",
        f"  keeps up = >= {config['keep_up']:.0%} completed, steady >= {config['keep_up']:.0%} of the rate, "
        f"revoke lag p99 <= {config['max_lag']:g} s",
        "",
    ]
    row = "  {:<22} {:>6} {:>9} {:>5} {:>8} {:>9} {:>9} {:>9} {:>23} {:>6}"
    lines.append(
        row.format(
            "", "rate", "done", "503", "steady", "lag p99", "WFT s2s", "lock p99", "CPU% srv/wrk/api/bench", "busy"
        )
    )
    lines.append(row.format("", "/s", "", "", "/s", "ms", "p99 ms", "ms", "(of one core)", ""))
    for name, rounds in figures["configs"].items():
        for r in rounds:
            s, cpu = r["summary"], r["cpu_percent_by_role"]
            busy = r["cpu"]["machine_busy"]
            lines.append(
                row.format(
                    name,
                    f"{r['rate']:g}",
                    f"{s['throughput']['completed']}/{r['lifecycles']}",
                    r["refused_503"],
                    f"{s['throughput']['steady'] or 0:.2f}",
                    _ms(s["revoke_lag_s"]["p99"]),
                    _ms(r["schedule_to_start_s"]["workflow_task"]["p99"]),
                    _ms(r["write_lock_wait_s"]["p99"]),
                    f"{cpu['server']:.0f}/{cpu['workers']:.0f}/{cpu['api']:.0f}/{cpu['bench']:.0f}",
                    "—" if busy is None else f"{busy:.0%}",
                )
                + ("" if r["keeps_up"] else "  saturated")
            )
    lines.append("")
    for name, found in figures["saturation"].items():
        at = found["saturates_at"]
        lines.append(
            f"  {name}: "
            + (f"saturates at {at:g}/s" if at is not None else "kept up at every rate")
            + f"; highest steady throughput {found['max_steady']:.2f}/s"
        )
    bare_at = figures["bare_saturates_at"]
    for name, ratio in figures["ratio_to_bare"].items():
        where = "bare Temporal's saturation rate" if ratio["rate"] == bare_at else "the highest common rate"
        value = "—" if ratio["ratio"] is None else f"{ratio['ratio']:.2f}"
        lines.append(
            f"  {name} / bare at {ratio['rate']:g}/s ({where}): {value} "
            f"({ratio['lapse'] or 0:.2f} vs {ratio['bare'] or 0:.2f}/s)"
        )
    lines.append("")
    lines.append("  Where the limit is (each configuration's first saturated round, else its last):")
    for name, rounds in figures["configs"].items():
        if rounds:
            chosen = next((r for r in rounds if not r["keeps_up"]), rounds[-1])
            lines.append(f"    {name} at {chosen['rate']:g}/s: " + "; ".join(limit_reading(chosen)))
            ms = chosen["cpu"]["cpu_ms_per_lifecycle"]
            if ms:
                per = ", ".join(f"{k} {v:.0f}" for k, v in ms.items())
                lines.append(f"      CPU ms per completed lifecycle: {per}")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------------------


def _numbers(text: str, kind: Callable[[str], float]) -> list[float]:
    return [kind(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling",
        description="The lifecycle benchmark with 1, 2 and 3 worker processes at rising rates, bare Temporal at "
        "the same rates, and evidence of where the limit is. Starts its own stacks in temp directories.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--workers", default="1,2,3", help="worker process counts, comma-separated")
    parser.add_argument("--rates", default="10,15,20,30,40,60", help="lifecycles per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0, help="arrivals per round, seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="unmeasured seconds at the lowest rate per stack")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between rounds")
    lifecycle.add_driver_options(parser)
    parser.add_argument("--keep-up", type=float, default=0.9, help="share completed and of the rate to keep up")
    parser.add_argument("--max-lag", type=float, default=5.0, help="revoke lag p99 (s) above which a round is behind")
    parser.add_argument("--skip-bare", action="store_true", help="no bare Temporal rounds")
    parser.add_argument(
        "--set", action="append", default=[], metavar="LAPSE_NAME=VALUE", help="a setting for Lapse's processes"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp directories (kept anyway on log findings)")
    args = parser.parse_args(argv)
    try:
        args.workers = [int(n) for n in _numbers(args.workers, float)]
        args.rates = _numbers(args.rates, float)
    except ValueError as error:
        parser.error(f"--workers and --rates take comma-separated numbers: {error}")
    if not args.workers or min(args.workers) < 1 or not args.rates or min(args.rates) <= 0 or args.seconds <= 0:
        parser.error("--workers at least 1 each, --rates and --seconds positive")
    args.overrides = lifecycle.setting_overrides(parser, args.set)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    lifecycle.interrupt_on_signals()
    start_load = os.getloadavg()
    try:
        figures = asyncio.run(benchmark(args, say))
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as error:
        say(f"benchmark failed: {type(error).__name__}: {error}")
        return 1
    figures["config"] = {
        **{k: getattr(args, k) for k in ("workers", "rates", "seconds", "warmup", "hold", "keep_up", "max_lag")},
        "settings": args.overrides,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_average_start": start_load,
        "load_average_end": os.getloadavg(),
    }
    lifecycle.publish(report(figures), figures, args.json)
    return 0


if __name__ == "__main__":
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench.scaling import main as _main

    exit_code = _main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)  # the Temporal client can abort the interpreter at exit (sdk-python #300)
