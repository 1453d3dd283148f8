"""``lapse``: a client of the API and nothing else — what it shows, and how it fails when the API is not there.

The commands run through typer's ``CliRunner`` in a thread, their HTTP calls answered by the ``api`` fixture's
app on the test's event loop; the unreachable-API tests run the installed ``lapse`` as a user would.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from typer.testing import CliRunner, Result

import starter.cli as cli
from harness.postgres import PostgresServer
from starter.stack import DemoPostgresUnavailable, add_demo_postgres
from store.org import DEMO_ORG
from store.settings import Settings
from tests.conftest import Api

LAPSE = str(Path(sys.executable).parent / "lapse")
API = "http://lapse.test"
ADMIN = ["--as", "ada@example.com"]
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
"""A time as the CLI prints it: UTC, to the second."""

Lapse = Callable[..., Awaitable[Result]]


@pytest_asyncio.fixture
async def lapse(api: Api, monkeypatch: pytest.MonkeyPatch) -> Lapse:
    """Run ``lapse ARGS`` (with ``--api http://lapse.test``) against the ``api`` fixture's app."""
    loop = asyncio.get_running_loop()

    def request(method: str, url: str, *, timeout: httpx.Timeout, **kwargs: Any) -> httpx.Response:
        assert url.startswith(API), url
        call = api.http.request(method, url.removeprefix(API), **kwargs)
        return asyncio.run_coroutine_threadsafe(call, loop).result(timeout=timeout.read)

    monkeypatch.setattr(cli, "httpx", SimpleNamespace(request=request, HTTPError=httpx.HTTPError))

    async def run(*args: str) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, cli.app, ["--api", API, *args])

    return run


def _unreachable(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``lapse`` in an empty directory, with nothing listening where it looks."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LAPSE_")} | env
    return subprocess.run([LAPSE, *args], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_command_fails_saying_how_to_point_it_at_an_api_when_none_answers(tmp_path: Path) -> None:
    port = _free_port()
    for args, env in [
        (["--as", "alan@example.com", "catalog"], {"LAPSE_API_URL": f"http://127.0.0.1:{port}"}),
        (["--api", f"http://127.0.0.1:{port}", *ADMIN, "load-org", str(DEMO_ORG)], {}),
        ([*ADMIN, "directory", "status"], {"LAPSE_API_PORT": str(port)}),  # the default follows lapse run's setting
    ]:
        failed = _unreachable(tmp_path, *args, **env)
        assert failed.returncode == 1, failed
        assert f"error: cannot reach the Lapse API at http://127.0.0.1:{port}" in failed.stderr
        assert "--api URL or LAPSE_API_URL" in failed.stderr
    assert list(tmp_path.iterdir()) == []  # no data/lapse.db, nothing else: the CLI opened nothing of its own


def test_a_server_that_is_not_lapse_is_named_as_such(tmp_path: Path) -> None:
    class NotLapse(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<h1>nothing here</h1>")

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), NotLapse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        failed = CliRunner().invoke(cli.app, ["--api", f"http://127.0.0.1:{server.server_port}", *ADMIN, "grants"])
    finally:
        server.shutdown()
    assert failed.exit_code == 1
    assert "answered 404 to GET /api/grants, not as the Lapse API does" in failed.output
    assert "--api URL or LAPSE_API_URL" in failed.output


def _answering(body: bytes) -> HTTPServer:
    """A server that answers every call 200 with this JSON body: some other service, not Lapse."""

    class NotLapse(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), NotLapse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize(
    ("answer", "args"),
    [
        (b'{"status": "ok"}', ["grants"]),
        (b'[{"id": 1}]', ["grants"]),
        (b'{"status": "ok"}', ["directory", "status"]),
        (b"[1, 2]", ["catalog"]),
        (b'{"status": "ok"}', ["load-org", str(DEMO_ORG)]),
    ],
)
def test_a_service_answering_200_with_other_json_is_not_the_lapse_api(answer: bytes, args: list[str]) -> None:
    server = _answering(answer)
    api = f"http://127.0.0.1:{server.server_port}"
    try:
        failed = CliRunner().invoke(cli.app, ["--api", api, *ADMIN, *args])
    finally:
        server.shutdown()
    assert failed.exit_code == 1, failed.output
    assert not isinstance(failed.exception, (KeyError, TypeError, AttributeError)), failed.exception
    assert f"it is not the Lapse API at {api}" in failed.output and "--api URL or LAPSE_API_URL" in failed.output


def test_a_server_setting_the_cli_does_not_use_cannot_stop_it(tmp_path: Path) -> None:
    """Without --api, the CLI reads LAPSE_API_URL, LAPSE_API_HOST and LAPSE_API_PORT only: a server-only setting
    that is invalid (here or in .env) is the server's problem, not every command's."""
    port = _free_port()
    (tmp_path / ".env").write_text("LAPSE_BACKSTOP_EVERY=never\n")
    failed = _unreachable(tmp_path, *ADMIN, "grants", LAPSE_API_PORT=str(port), LAPSE_DIRECTORY_MAX_LEAVERS="5")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert f"error: cannot reach the Lapse API at http://127.0.0.1:{port}" in failed.stderr
    (tmp_path / ".env").unlink()
    wrong = _unreachable(tmp_path, *ADMIN, "grants", LAPSE_API_PORT="eighty")
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr, wrong.stderr
    assert "cannot tell where the Lapse API is: LAPSE_API_PORT:" in wrong.stderr


def test_a_command_needs_to_know_who_you_are(tmp_path: Path) -> None:
    failed = _unreachable(tmp_path, "--api", "http://127.0.0.1:1", "grants")
    assert failed.returncode == 1 and "say who you are: lapse --as you@example.com" in failed.stderr


def test_lapse_run_says_why_the_demo_postgres_was_not_connected(postgres: PostgresServer, tmp_path: Path) -> None:
    """A local server that asks for a password is not skipped silently: the banner says so, and what to set."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'lapse_pw'").fetchone() is None:
            admin.execute("CREATE ROLE lapse_pw LOGIN PASSWORD 'right-pw'")
    for dsn in (postgres.dsn(user="lapse_pw"), postgres.dsn(user="lapse_pw", password="wrong-pw")):
        settings = Settings(data_dir=tmp_path, demo_pg_dsn=dsn, _env_file=None)  # type: ignore[call-arg]
        with pytest.raises(DemoPostgresUnavailable) as why:
            add_demo_postgres(settings)
        said = str(why.value)
        assert f"the server at 127.0.0.1:{postgres.port} asks lapse_pw for a password" in said
        assert "put one in LAPSE_DEMO_PG_DSN" in said and "set it to off" in said and "wrong-pw" not in said
    nobody = f"postgresql://postgres@127.0.0.1:{_free_port()}/x"
    closed = Settings(data_dir=tmp_path, demo_pg_dsn=nobody, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(DemoPostgresUnavailable, match=r"nothing answers at 127\.0\.0\.1:\d+; point LAPSE_DEMO_PG_DSN"):
        add_demo_postgres(closed)


def test_lapse_run_help_lists_the_settings_it_reads() -> None:
    shown = CliRunner().invoke(cli.app, ["run", "--help"], env={"COLUMNS": "200"}).output
    for setting in ("LAPSE_DATA_DIR", "LAPSE_API_PORT", "LAPSE_TEMPORAL_ADDRESS", "LAPSE_EMBEDDED_TEMPORAL"):
        assert setting in shown
    assert "LAPSE_API_URL" in CliRunner().invoke(cli.app, ["--help"], env={"COLUMNS": "200"}).output


def test_every_setting_is_in_the_readmes_configuration_table() -> None:
    """What `lapse run --help` names, and every other setting, has its row (the TLS ones share one)."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme[readme.index("## Configuration") : readme.index("### The command line")]
    shown = CliRunner().invoke(cli.app, ["run", "--help"], env={"COLUMNS": "200"}).output
    named = set(re.findall(r"LAPSE_[A-Z_]+[A-Z]", shown)) | {f"LAPSE_{name.upper()}" for name in Settings.model_fields}
    missing = [
        name
        for name in sorted(named)
        if f"`{name}`" not in table and f"`_{name.removeprefix('LAPSE_TEMPORAL_')}`" not in table
    ]
    assert "LAPSE_SECRETS_DIR" in named and missing == []


async def test_load_org_goes_through_the_api(lapse: Lapse, tmp_path: Path) -> None:
    org = tmp_path / "org.yaml"
    org.write_text(
        """
users: [{email: zoe@example.com, manager: ada@example.com, groups: [finance]}]
birthright_policies: [{name: finance-reads, groups: [finance], roles: [ledger/billing-reports/viewer]}]
"""
    )
    loaded = await lapse(*ADMIN, "load-org", str(org))
    assert loaded.exit_code == 0, loaded.output
    assert f"loaded {org}: 1 user, 1 birthright policy" in loaded.output
    assert "birthright sync started" in loaded.output

    org.write_text("users: [{email: zed@example.com, manager: nobody@example.com}]\n")
    refused = await lapse(*ADMIN, "load-org", str(org))
    assert refused.exit_code == 1
    assert "(422): user zed@example.com: manager nobody@example.com is not a user" in refused.output
    assert f"(the Lapse API at {API} answered; point the CLI at another with --api URL" in refused.output

    forbidden = await lapse("--as", "alan@example.com", "load-org", str(org))
    assert forbidden.exit_code == 1 and "Forbidden (403): only admins can do this" in forbidden.output

    org.write_text("- just\n- a list\n")
    assert "its top level must be a mapping" in (await lapse(*ADMIN, "load-org", str(org))).output


async def test_load_org_exits_1_when_a_first_discovery_fails(lapse: Lapse, tmp_path: Path) -> None:
    """The file is stored, but what it implies is not all done: the failed discovery is not said to have run."""
    org = tmp_path / "org.yaml"
    org.write_text(
        """
integrations: [{name: pg, kind: postgres, config: {dsn_env: LAPSE_TEST_UNSET_PG_DSN}}]
birthright_policies: [{name: db, groups: [engineering], roles: [pg/app/app_read]}]
"""
    )
    loaded = await lapse(*ADMIN, "load-org", str(org))
    assert loaded.exit_code == 1, loaded.output
    assert "discovery of pg ran" not in loaded.output and "discovery of pg FAILED" in loaded.output
    assert f"error: {org} is stored, but not all it implies was applied: " in loaded.output
    assert "discovery of pg failed" in loaded.output


async def test_a_pending_extension_shows_and_a_give_back_says_who_ended_it(lapse: Lapse, api: Api) -> None:
    alan, linus = ["--as", "alan@example.com"], ["--as", "linus@example.com"]
    asked = await lapse(*alan, "--json", "request", "ledger/payments-api/deploy", "--for", "PT1H", "--reason", "fix")
    request_id = re.search(r'"id": "(\w+)"', asked.output)
    assert request_id, asked.output
    rid = request_id.group(1)
    assert (await lapse(*linus, "approve", rid)).exit_code == 0
    await api.wait_for(rid, "active")

    extended = await lapse(*alan, "extend", rid, "--by", "PT30M", "--reason", "still fixing")
    assert extended.exit_code == 0, extended.output
    for shown in (
        extended.output,
        (await lapse(*alan, "status", rid)).output,
        (await lapse(*linus, "approvals")).output,
    ):
        assert re.search(
            rf"{rid}  active +ledger/payments-api/deploy  for PT1H  by alan@example.com  until {TIME}\n", shown
        )
        assert re.search(
            rf"extension by PT30M \(asked {TIME}\): pending, the time above stands unless it is approved", shown
        )
        assert "waiting on 'manager': 0/1 from linus@example.com" in shown

    assert re.search(
        rf"ledger/payments-api/deploy  jit +alan@example.com  until {TIME}  \({rid}\)",
        (await lapse(*alan, "grants")).output,
    )
    given_back = await lapse(*alan, "revoke", rid)  # no comment
    assert "ended by alan@example.com" in given_back.output, given_back.output
    assert "extension by PT30M" in given_back.output


async def test_birthright_preview_shows_who_would_gain_and_lose(lapse: Lapse) -> None:
    gains = await lapse(
        *ADMIN, "birthright", "preview", "create", "eng", "--group", "platform", "--role", "ledger/payments-api/read"
    )
    assert gains.exit_code == 0, gains.output
    assert "gains ledger/payments-api/read through eng: alan@example.com" in gains.output
    refused = await lapse(
        *ADMIN, "birthright", "preview", "create", "x", "--group", "finance", "--role", "ledger/nope/x"
    )
    assert refused.exit_code == 1 and "(422): " in refused.output and "unknown role" in refused.output
    one = await lapse(*ADMIN, "birthright", "preview", "delete", "a", "b")
    assert one.exit_code == 1 and "delete previews one policy" in one.output


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The API's answers by path, for the commands whose output is checked without a server."""
    answered: dict[str, Any] = {}
    monkeypatch.setattr(cli, "_call", lambda method, path, body=None, params=None: cli.printable(answered[path]))
    yield answered


def test_grants_print_times_to_the_second_and_standing_access_as_such(answers: dict[str, Any]) -> None:
    grant = {"role": "ledger/prod-db/read", "account": "alan", "request_id": None, "policy": None}
    answers["/api/grants"] = [
        grant | {"path": "jit", "request_id": "k3v9", "expires_at": "2026-12-01T12:02:05.123456+00:00"},
        grant | {"path": "birthright", "policy": "eng", "expires_at": None},
        grant | {"path": "external", "expires_at": None},
    ]
    assert CliRunner().invoke(cli.app, [*ADMIN, "grants"]).output.splitlines() == [
        "ledger/prod-db/read  jit        alan  until 2026-12-01T12:02:05Z  (k3v9)",
        "ledger/prod-db/read  birthright alan  standing  (policy eng)",
        "ledger/prod-db/read  external   alan  standing  (found in the target)",
    ]
    answers["/api/birthright/policies"] = [
        {"position": 0, "name": "eng", "grants": 1, "groups": ["engineering"], "roles": ["ledger/prod-db/read"]}
    ]
    assert "1. eng  1 grant\n" in CliRunner().invoke(cli.app, [*ADMIN, "birthright", "policies"]).output


def test_directory_status_names_joiners_movers_leavers_and_what_is_still_open(answers: dict[str, Any]) -> None:
    summary = {"sources": ["corp"], "users": 1, "groups": 2, "joined": 1, "moved": 1, "left": 1}
    summary |= {
        "joiners": [{"email": "zoe@example.com", "groups": ["corp:dbusers"]}],
        "movers": [{"email": "alan@example.com", "added": ["corp:dbas"], "removed": ["corp:devs"]}],
        "leavers": [{"email": "ken@example.com", "why": "disabled in corp"}],
    }
    answers["/api/directory/sync"] = {
        "started_at": "2026-12-01T12:00:00.5+00:00", "finished_at": "2026-12-01T12:00:01.25+00:00",
        "summary": summary, "error": None,
    }  # fmt: skip
    waiting = "unknown role pg/app/read: waits for the first discovery of pg"
    typo = "unknown group corp:dbusrs: corp has synced and has no such group; fix the policy"
    answers["/api/org/open-references"] = [
        {"policy": "db", "kind": "role", "reference": "pg/app/read", "state": "waiting", "why": waiting},
        {"policy": "db", "kind": "group", "reference": "corp:dbusrs", "state": "unresolved", "why": typo},
    ]
    assert CliRunner().invoke(cli.app, [*ADMIN, "directory", "status"]).output.splitlines() == [
        "started 2026-12-01T12:00:00Z, finished 2026-12-01T12:00:01Z",
        "    corp: 1 user, 2 groups; 1 joined, 1 moved, 1 left",
        "    joined: zoe@example.com (corp:dbusers)",
        "    moved: alan@example.com +corp:dbas -corp:devs",
        "    left: ken@example.com (disabled in corp)",
        "open references (they grant nothing until they resolve):",
        f"    birthright policy db: {waiting}",
        "UNRESOLVED references (their sync or discovery is over: they grant nothing until the policy changes):",
        f"    birthright policy db: {typo}",
    ]
