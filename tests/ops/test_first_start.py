"""Two ``lapse run`` starting at once on a fresh app DB: one loads the organisation, the other waits for it and
finds it loaded; nobody is loaded twice and neither fails."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from starter.stack import prepare_database
from store.db import session_scope
from store.org import DEMO_ORG, OrgFile
from store.settings import Settings
from store.tables import User


@pytest.mark.every_app_db
def test_starting_at_once_loads_the_organisation_once(app_db: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=app_db)
    with ThreadPoolExecutor(max_workers=3) as pool:
        loaded = list(pool.map(prepare_database, [settings] * 3))
    assert sorted(loaded) == [False, False, True]
    with session_scope(app_db, write=False) as session:
        users = session.exec(select(func.count()).select_from(User)).one()
    assert users == len(OrgFile.read(DEMO_ORG).users)
