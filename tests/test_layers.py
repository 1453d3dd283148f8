"""The layering holds where it matters at run time: workflow code loads no I/O library in the sandbox."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.worker import workflow_sandbox
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxMatcher

from worker import SANDBOX_RESTRICTIONS, WORKFLOWS, workflow_helpers

IO_LIBRARIES = {"sqlmodel", "sqlalchemy", "httpx", "psycopg", "ldap3", "alembic"}
"""What workflow code must never load: each would put I/O (or its import cost) into every run."""


def strict_runner() -> SandboxedWorkflowRunner:
    """The worker's sandbox, with the I/O libraries made impossible to import inside it."""
    return SandboxedWorkflowRunner(
        restrictions=replace(SANDBOX_RESTRICTIONS, invalid_modules=SandboxMatcher(access=IO_LIBRARIES))
    )


@pytest.mark.parametrize("cls", WORKFLOWS, ids=lambda cls: cls.__name__)
async def test_every_workflow_loads_in_the_sandbox_without_io_libraries(cls: type) -> None:
    strict_runner().prepare_workflow(workflow._Definition.must_from_class(cls))


@pytest.fixture
def careless_module(tmp_path: Path) -> Iterator[str]:
    """A workflow module that imports the app DB's ORM, as an accidental import would."""
    (tmp_path / "careless_workflow.py").write_text(
        textwrap.dedent(
            """
            from temporalio import workflow

            import sqlalchemy  # noqa: F401


            @workflow.defn
            class CarelessWorkflow:
                @workflow.run
                async def run(self) -> None:
                    return None
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield "careless_workflow"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("careless_workflow", None)


async def test_a_workflow_importing_the_orm_is_refused(careless_module: str) -> None:
    module = __import__(careless_module)
    with pytest.raises(workflow_sandbox.RestrictedWorkflowAccessError, match="sqlalchemy"):
        strict_runner().prepare_workflow(workflow._Definition.must_from_class(module.CarelessWorkflow))


def test_the_domain_imports_no_io_library() -> None:
    """What the sandbox passes through is imported outside it: the domain itself must stay pure."""
    probe = (
        "import sys, pkgutil, importlib, access\n"
        "for m in pkgutil.walk_packages(access.__path__, 'access.'): importlib.import_module(m.name)\n"
        f"print(sorted({{n.split('.')[0] for n in sys.modules}} & {set(sorted(IO_LIBRARIES))!r}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


HELPER_IMPORTS = ("__future__", "collections.abc", "contextlib", "dataclasses", "datetime", "typing", "temporalio")
"""What a helper the sandbox passes through may import, besides the domain and other helpers: nothing that reads
the clock, randomness, the environment or the network (the sandbox's run-time checks do not reach it)."""
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "random", "uuid4", "getenv"}
"""Calls that are not deterministic unless made through ``workflow`` (``workflow.now()``, ``workflow.uuid4()``)."""


def replay_hazards(source: str) -> list[str]:
    """What in a helper's source the sandbox would have stopped at run time: an import beyond the allowed ones (or
    of a workflow's module), or a clock, randomness or environment call not made through ``workflow``."""
    helpers = set(workflow_helpers())
    allowed = (*HELPER_IMPORTS, "access")
    hazards: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.startswith("workflows") and name in helpers:
                    continue
                if not any(name == a or name.startswith(f"{a}.") for a in allowed):
                    hazards.append(f"import {name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CLOCK_CALLS:
            through_workflow = isinstance(node.func.value, ast.Name) and node.func.value.id == "workflow"
            hazards += [] if through_workflow else [f"call {ast.unparse(node.func)}"]
    return hazards


def test_the_sandbox_passes_through_the_workflows_helpers_and_no_workflow() -> None:
    helpers = workflow_helpers()
    assert {"workflows.request_messages", "workflows.request_record", "workflows.step_timers"} <= set(helpers)
    assert not {cls.__module__ for cls in WORKFLOWS} & set(helpers)
    assert set(helpers) <= SANDBOX_RESTRICTIONS.passthrough_modules


@pytest.mark.parametrize("module", workflow_helpers())
def test_a_passed_through_helper_imports_nothing_that_breaks_replay(module: str) -> None:
    assert replay_hazards(Path(importlib.import_module(module).__file__ or "").read_text()) == []


def test_a_helper_that_reads_the_clock_or_imports_a_workflow_is_caught() -> None:
    source = (
        "import random\nfrom datetime import datetime\nfrom temporalio import workflow\n"
        "from workflows.break_glass import BreakGlassReviewWorkflow\n\n"
        "def stamp() -> str:\n    return f'{datetime.now()} {workflow.now()} {random.random()}'\n"
    )
    assert replay_hazards(source) == [
        "import random",
        "import workflows.break_glass",
        "call datetime.now",
        "call random.random",
    ]


@pytest.mark.parametrize("module", workflow_helpers())
def test_a_passed_through_helper_keeps_no_state_between_runs(module: str) -> None:
    """A helper is shared by every run: a mutable value at module or class level would leak from one to the next."""
    mutable = (list, dict, set, bytearray)
    namespace = vars(importlib.import_module(module))
    shared = {k for k, v in namespace.items() if not k.startswith("__") and isinstance(v, mutable)}
    shared |= {
        f"{name}.{k}"
        for name, cls in namespace.items()
        if isinstance(cls, type) and cls.__module__ == module
        for k, v in vars(cls).items()
        if not k.startswith("__") and isinstance(v, mutable)
    }
    assert shared == set()
