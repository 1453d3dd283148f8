"""The demo's local PostgreSQL integration (``lapse run`` with a PostgreSQL that answers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from harness.postgres import PostgresServer
from starter.stack import DEMO_PG, add_demo_postgres, prepare_database
from store import catalog
from store.db import session_scope
from store.settings import Settings
from store.tables import Integration


def test_f8_demo_puts_its_write_role_under_a_stricter_workflow_and_flags_plaintext(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAPSE_DEMO_PG_DSN", "off")  # the demo sets it for its worker: undone after the test
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'lapse.db'}", demo_pg_dsn=postgres.dsn(), _env_file=None
    )
    prepare_database(settings)
    assert add_demo_postgres(settings)
    with session_scope(settings.db_url, write=False) as session:
        policies = {}
        for name in ("lapse_demo_reports_read", "lapse_demo_reports_write"):
            role = catalog.find_role(session, f"{DEMO_PG}/reports/{name}")
            assert role is not None
            policy = catalog.policy_for(session, role)
            policies[name] = policy.name if policy else None
        integration = session.exec(select(Integration).where(Integration.name == DEMO_PG)).one()
    assert policies == {"lapse_demo_reports_read": "read-only", "lapse_demo_reports_write": "sensitive"}
    assert integration.config["insecure"] is True  # 127.0.0.1 without TLS: allowed only explicitly
    assert integration.config["dsn_env"] == "LAPSE_DEMO_PG_DSN"
