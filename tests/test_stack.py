"""``lapse run``: what it prints about the app DB never includes the database password."""

from __future__ import annotations

from pathlib import Path

import pytest

from starter import stack
from store.codec import CodecKeyError
from store.db import shown_url
from store.settings import Settings

PASSWORD = "s3cret-Pa55"


def test_run_names_the_app_db_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=f"postgresql+psycopg://lapse:{PASSWORD}@db.example:5432/lapse?sslmode=require"
    )
    monkeypatch.setattr(stack, "prepare_database", lambda _settings: False)  # no PostgreSQL here

    def stop_after_the_app_db(_settings: Settings) -> None:
        raise CodecKeyError("stopped by the test")  # the step after the app DB: start nothing

    monkeypatch.setattr(stack, "codec_keys", stop_after_the_app_db)
    with pytest.raises(SystemExit, match="stopped by the test"):
        stack.run_stack(settings)

    printed = capsys.readouterr().out
    assert "app DB ready (postgresql+psycopg://lapse:***@db.example:5432/lapse?sslmode=require)" in printed
    assert PASSWORD not in printed


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://lapse:s3cret-Pa55@db.example/lapse", "postgresql://lapse:***@db.example/lapse"),
        (
            "postgresql+psycopg://lapse@db.example/lapse?password=s3cret-Pa55&sslmode=require",
            "postgresql+psycopg://lapse@db.example/lapse?sslmode=require",
        ),
        ("sqlite:////var/lib/lapse/lapse.db", "sqlite:////var/lib/lapse/lapse.db"),
        ("not a url: s3cret-Pa55", "(an app DB URL that cannot be read)"),
    ],
)
def test_a_shown_app_db_url_has_no_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown
