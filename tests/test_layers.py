"""The layering holds where it matters at run time: workflow code loads no I/O library in the sandbox."""

from __future__ import annotations

import ast
import importlib
import inspect
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


SANDBOX_BUILTINS = {"open", "exec", "eval", "compile", "__import__", "breakpoint", "globals"}
"""Built-ins the sandbox refuses or that reach past it (called; ``input`` is left out: it names workflow inputs)."""


def replay_hazards(source: str) -> list[str]:
    """What in a helper's source the sandbox would have stopped at run time, or what would let one run's state leak
    into the next now that the module is shared: an import beyond the allowed ones (or of a workflow's module); a
    clock, randomness or environment function used other than through ``workflow`` (called or passed, as in
    ``default_factory=datetime.now``); a call of a built-in the sandbox refuses; ``global`` or ``nonlocal``; an
    assignment to an attribute of something the module defines or imports (``SomeClass.attr = ...``)."""
    helpers = set(workflow_helpers())
    allowed = (*HELPER_IMPORTS, "access")
    tree = ast.parse(source)
    module_names = {
        name
        for node in tree.body
        for name in (
            [node.name]
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            else [(a.asname or a.name).split(".")[0] for a in node.names]
            if isinstance(node, ast.Import | ast.ImportFrom)
            else [t.id for t in node.targets if isinstance(t, ast.Name)]
            if isinstance(node, ast.Assign)
            else []
        )
    }
    hazards: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.startswith("workflows") and name in helpers:
                    continue
                if not any(name == a or name.startswith(f"{a}.") for a in allowed):
                    hazards.append(f"import {name}")
        elif isinstance(node, ast.Attribute) and node.attr in CLOCK_CALLS:
            through_workflow = isinstance(node.value, ast.Name) and node.value.id == "workflow"
            hazards += [] if through_workflow else [f"uses {ast.unparse(node)}"]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SANDBOX_BUILTINS:
            hazards.append(f"uses {node.func.id}")
        elif isinstance(node, ast.Global | ast.Nonlocal):
            hazards.append(f"{type(node).__name__.lower()} {', '.join(node.names)}")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                owner = target.value if isinstance(target, ast.Attribute) else None
                if isinstance(owner, ast.Name) and owner.id in module_names:
                    hazards.append(f"sets {ast.unparse(target)}")
    return hazards


def test_the_sandbox_passes_through_the_workflows_helpers_and_no_workflow() -> None:
    helpers = workflow_helpers()
    assert {"workflows.request_messages", "workflows.request_record", "workflows.step_timers"} <= set(helpers)
    assert not {cls.__module__ for cls in WORKFLOWS} & set(helpers)
    assert set(helpers) <= SANDBOX_RESTRICTIONS.passthrough_modules
    for name in helpers:  # not even a workflow that is not registered yet: that one must be imported per run
        module = importlib.import_module(name)
        classes = [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == name]
        assert [c for c in classes if workflow._Definition.from_class(c) is not None] == [], name


@pytest.mark.parametrize("module", workflow_helpers())
def test_a_passed_through_helper_imports_nothing_that_breaks_replay(module: str) -> None:
    assert replay_hazards(Path(importlib.import_module(module).__file__ or "").read_text()) == []


def test_what_a_helper_must_not_do_is_caught() -> None:
    source = (
        "import random\nfrom dataclasses import dataclass, field\nfrom datetime import datetime\n"
        "from temporalio import workflow\nfrom workflows.break_glass import BreakGlassReviewWorkflow\n\n"
        "SEEN = 0\n\n"
        "@dataclass\nclass Stamp:\n    at: datetime = field(default_factory=datetime.now)\n\n"
        "def stamp(status) -> str:\n    global SEEN\n    Stamp.last = status\n    status.seen = True\n"
        "    open('/tmp/x')\n    return f'{workflow.now()} {random.random()}'\n"
    )
    assert sorted(replay_hazards(source)) == sorted(
        [
            "import random",
            "import workflows.break_glass",
            "uses datetime.now",
            "global SEEN",
            "sets Stamp.last",
            "uses open",
            "uses random.random",
        ]
    )


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
    functions = [(k, v) for k, v in namespace.items() if inspect.isfunction(v) and v.__module__ == module]
    functions += [
        (f"{name}.{k}", v)
        for name, cls in namespace.items()
        if isinstance(cls, type) and cls.__module__ == module
        for k, v in vars(cls).items()
        if inspect.isfunction(v)
    ]
    for name, function in functions:  # a mutable default argument is shared by every call, in every run
        defaults = (*(function.__defaults__ or ()), *(function.__kwdefaults__ or {}).values())
        shared |= {f"{name}(default)" for d in defaults if isinstance(d, mutable)}
    assert shared == set()
