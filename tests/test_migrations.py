"""The migrations build exactly the tables the code declares, on SQLite and PostgreSQL, and the sign-in
migration (0009) comes and goes without losing anyone."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

import store.tables  # noqa: F401  (the tables, on SQLModel.metadata)
from store.db import MIGRATIONS, engine_for, migrate


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


@pytest.mark.every_app_db
def test_the_migrated_schema_is_the_declared_one(app_db: str) -> None:
    migrate(app_db)
    with engine_for(app_db).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []


@pytest.mark.every_app_db
def test_the_sign_in_migration_goes_down_and_up_keeping_everyone(app_db: str) -> None:
    migrate(app_db)
    engine = engine_for(app_db)
    with engine.begin() as connection:
        connection.execute(
            text(
                'INSERT INTO "user" (email, name, active, is_admin, source, kind) '
                "VALUES ('ci@example.com', 'CI', true, false, 'service-account', 'service')"
            )
        )
    command.downgrade(_config(app_db), "0008")
    engine.dispose()
    tables = set(inspect(engine).get_table_names())
    assert "websession" not in tables and "apitoken" not in tables
    command.upgrade(_config(app_db), "head")
    engine.dispose()
    with engine.connect() as connection:
        users = connection.execute(text('SELECT email, kind, active FROM "user"')).all()
    # 0008 knew no service accounts: it comes back as a person, who may not sign in.
    assert [tuple(user) for user in users] == [("ci@example.com", "person", False)]
    assert {"websession", "apitoken"} <= set(inspect(engine).get_table_names())
