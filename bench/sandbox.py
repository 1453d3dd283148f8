"""Sandbox benchmark: what it costs the worker to start a workflow run in Temporal's sandbox.

The sandbox imports a workflow's module afresh for every run it starts (and again after a run leaves the
worker's cache), with every module that one imports except those passed through. This times that, per workflow,
with the worker's own restrictions (``worker.SANDBOX_RESTRICTIONS``) and, for comparison, with the workflows'
helper modules imported afresh too (how the worker ran before they were passed through). One process, no
server: ``prepare_workflow`` builds the same sandboxed instance a new run gets.

Run from the project root::

    .venv/bin/python -m bench.sandbox                 # 200 instances of each workflow
    .venv/bin/python -m bench.sandbox --runs 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from worker import SANDBOX_RESTRICTIONS, WORKFLOWS, compile_workflow_modules, workflow_helpers


def per_run_ms(runner: SandboxedWorkflowRunner, cls: type, runs: int) -> float:
    """Milliseconds to build one sandboxed instance of ``cls``, the median of five batches of ``runs`` / 5."""
    definition = workflow._Definition.must_from_class(cls)
    for _ in range(5):  # warm: the first instances also import what is passed through
        runner.prepare_workflow(definition)
    batch = max(runs // 5, 1)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(batch):
            runner.prepare_workflow(definition)
        times.append((time.perf_counter() - started) / batch * 1000)
    return sorted(times)[2]


async def measure(runs: int) -> dict[str, Any]:
    compile_workflow_modules()  # as the worker does at start: bytecode on disk, no compiling per run
    helpers = frozenset(workflow_helpers())
    without = replace(SANDBOX_RESTRICTIONS, passthrough_modules=SANDBOX_RESTRICTIONS.passthrough_modules - helpers)
    runners = {
        "helpers passed through": SandboxedWorkflowRunner(restrictions=SANDBOX_RESTRICTIONS),
        "helpers imported per run": SandboxedWorkflowRunner(restrictions=without),
    }
    return {
        cls.__name__: {name: round(per_run_ms(runner, cls, runs), 2) for name, runner in runners.items()}
        for cls in WORKFLOWS
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sandbox",
        description="Time how long the worker's sandbox takes to start one run of each workflow.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=200, help="instances built per workflow and configuration")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.runs))  # the sandboxed instance needs a running loop
    columns = list(next(iter(figures.values())))
    print(f"{'workflow':28}" + "".join(f"{c:>28}" for c in columns) + "   (ms per run started)")
    for name, row in figures.items():
        print(f"{name:28}" + "".join(f"{row[c]:>28.2f}" for c in columns))
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "ms_per_run": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
