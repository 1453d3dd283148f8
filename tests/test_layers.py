"""The layering holds where it matters at run time: workflow code loads no I/O library in the sandbox."""

from __future__ import annotations

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

from worker import SANDBOX_RESTRICTIONS, WORKFLOWS

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
