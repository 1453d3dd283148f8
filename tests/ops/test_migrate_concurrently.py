"""``lapse migrate`` from several processes at once against a fresh app DB: one migrates, the others wait for it and
find the schema current; every one exits 0 and the schema is at the latest migration, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from store.db import engine_for, schema_current, schema_head

LAPSE = str(Path(sys.executable).parent / "lapse")
PROCESSES = 4


@pytest.mark.every_app_db
def test_processes_migrating_at_once_all_succeed_and_one_migrates(app_db: str, tmp_path: Path) -> None:
    env = {**os.environ, "LAPSE_DATABASE_URL": app_db, "LAPSE_DATA_DIR": str(tmp_path), "LAPSE_LOG_FORMAT": "json"}
    started = [
        subprocess.Popen([LAPSE, "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(PROCESSES)
    ]
    outcomes = [(process.wait(timeout=300), *process.communicate()) for process in started]

    for code, out, err in outcomes:
        assert code == 0, err
        assert f"at {schema_head()} (the latest)" in out
    lines = [json.loads(line) for _code, _out, err in outcomes for line in err.splitlines() if line.strip()]
    migrating = [line for line in lines if line["msg"].startswith("migrating the app DB")]
    assert len(migrating) == 1, migrating  # the others waited for the lock, then found nothing to do
    assert {line["process"] for line in lines} == {"migrate"}
    with engine_for(app_db).connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [schema_head()]
    assert schema_current(app_db)
