"""``lapse reviews``: a reviewer keeps and revokes from the command line, an admin defines, previews and reads the
report. The commands run through typer's ``CliRunner`` in a thread, their HTTP calls answered by an app with no
Temporal behind it (a campaign made in the app DB; the workflow side is tested with it)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from typer.testing import CliRunner, Result

import starter.cli as cli
from store.db import session_scope
from store.settings import Settings
from store.tables import Grant
from tests.api.identities import client, offline_app
from tests.api.review_fixtures import CAMPAIGN, linus_campaign
from tests.conftest import make_settings

API = "http://lapse.test"
Lapse = Callable[..., Awaitable[Result]]

DEFINITION = """\
name: quarterly-ledger
description: Who still needs the ledger
scope:
  integrations: [ledger]
  paths: [jit, external]
reviewers: [{kind: manager}]
fallback: [{kind: user, name: ada@example.com}]
deadline: P14D
reminders: [P7D, P3D, P1D, PT0S]
default: revoke
schedule: {every: P91D}
"""


@pytest.fixture
def settings(tmp_path: Path, app_db: str) -> Settings:
    return make_settings(tmp_path, "127.0.0.1:1", database_url=app_db)


@pytest_asyncio.fixture
async def lapse(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Lapse]:
    loop = asyncio.get_running_loop()
    async with client(offline_app(settings), base_url=API) as http:

        def request(method: str, url: str, *, timeout: httpx.Timeout, **kwargs: Any) -> httpx.Response:
            call = http.request(method, url.removeprefix(API), **kwargs)
            return asyncio.run_coroutine_threadsafe(call, loop).result(timeout=timeout.read)

        monkeypatch.setattr(cli, "httpx", SimpleNamespace(request=request, HTTPError=httpx.HTTPError))

        async def run(*args: str) -> Result:
            return await asyncio.to_thread(CliRunner().invoke, cli.app, ["--api", API, *args])

        yield run


async def test_a_reviewer_keeps_and_revokes_and_never_decides_their_own(lapse: Lapse, settings: Settings) -> None:
    ids = linus_campaign(settings)
    linus = ["--as", "linus@example.com", "reviews"]
    listed = await lapse(*linus, "items")
    assert listed.exit_code == 0, listed.output
    assert "alan@example.com  ledger/prod-db/read  jit" in listed.output
    assert "last used unknown" in listed.output and "exception on policy engineering-read" in listed.output
    assert "linus@example.com  ledger" not in listed.output  # never his own
    no_reason = await lapse(*linus, "revoke", str(ids["alan-read"]), "--comment", "")
    assert no_reason.exit_code == 1 and "a revoke needs a comment" in no_reason.output
    revoked = await lapse(*linus, "revoke", str(ids["alan-read"]), "--comment", "moved team", "--submit")
    assert revoked.exit_code == 0 and "1 decision recorded" in revoked.output
    kept = await lapse(*linus, "keep", str(ids["barbara-write"]), str(ids["alan-external"]))
    assert "2 items drafted" in kept.output
    submitted = await lapse(*linus, "submit")
    assert "2 decisions recorded" in submitted.output
    after = await lapse(*linus, "items", "--state", "decided")
    assert "decided revoke by linus@example.com (moved team)" in after.output
    own = await lapse(*linus, "keep", str(ids["linus-own"]), "--submit")
    assert own.exit_code == 1 and "nobody reviews their own" in own.output
    handed = await lapse(*linus, "reassign", str(ids["barbara-birthright"]), "--to", "barbara@example.com")
    assert handed.exit_code == 1 and "nobody reviews their own" in handed.output


async def test_an_admin_defines_previews_and_takes_the_report(lapse: Lapse, settings: Settings, tmp_path: Path) -> None:
    with session_scope(settings.db_url) as session:
        session.add(
            Grant(
                account="alan@example.com",
                role="ledger/prod-db/read",
                user_email="alan@example.com",
                request_id="r1",
                granted_at=datetime.now(UTC) - timedelta(days=3),
            )
        )
    file = tmp_path / "quarterly.yaml"
    file.write_text(DEFINITION)
    ada = ["--as", "ada@example.com", "reviews"]
    preview = await lapse(*ada, "preview", str(file))
    assert preview.exit_code == 0, preview.output
    assert "this campaign would hold 1 item, 1 reviewer (jit 1)" in preview.output
    assert "alan@example.com  ledger/prod-db/read  jit  → linus@example.com" in preview.output
    defined = await lapse(*ada, "define", str(file))
    assert defined.exit_code == 0 and "quarterly-ledger  review-quarterly-ledger" in defined.output
    assert "brought up to date when the API next starts" in defined.output  # no Temporal behind this app
    listed = await lapse(*ada, "definitions")
    assert "quarterly-ledger" in listed.output
    denied = await lapse("--as", "linus@example.com", "reviews", "definitions")
    assert denied.exit_code == 1 and "only admins" in denied.output
    linus_campaign(settings)
    out = tmp_path / "report.csv"
    report = await lapse(*ada, "report", CAMPAIGN, "--output", str(out))
    assert report.exit_code == 0, report.output
    text = out.read_bytes().decode()
    body, _, last = text.rstrip("\r\n").rpartition("\r\n")
    digest = hashlib.sha256((body + "\r\n").encode()).hexdigest()
    assert last == f'"sha256 of the lines above","{digest}"' and f"sha256 {digest}" in report.output
    campaigns = await lapse(*ada, "campaigns")
    assert f"{CAMPAIGN}  open" in campaigns.output
