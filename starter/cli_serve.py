"""``lapse api``, ``lapse worker``, ``lapse notifier``, ``lapse migrate``: Lapse's processes one at a time, for
production.

``lapse run`` starts everything on one machine; these start one process each, with the same settings, so that
any number of APIs, workers and notifiers can run against one Temporal namespace and one app DB. Registered on
``starter.cli.app`` when that module is imported.
"""

from __future__ import annotations

import os
import signal
from typing import Annotated

import typer
from pydantic import ValidationError

from starter import cli
from store.settings import Settings, get_settings

COMMON = """
It reads the settings from the environment (or a `.env` file), as `lapse run` does (the README's
Configuration has them all); those for running many processes:

- `LAPSE_DATABASE_URL`: the app DB every process shares (PostgreSQL in production)
- `LAPSE_TEMPORAL_ADDRESS`, `LAPSE_TEMPORAL_NAMESPACE`, `LAPSE_TEMPORAL_TLS*`, `LAPSE_TEMPORAL_API_KEY`: Temporal
- `LAPSE_CODEC_KEY`, `LAPSE_AUDIT_KEY`, `LAPSE_SECRET_KEY`: keys every process must share
- `LAPSE_MIGRATE_ON_START` (`true`): migrate the app DB first (one process at a time, under a lock)
- `LAPSE_LOG_FORMAT` (`text`, or `json`: one JSON object per line), `LAPSE_LOG_LEVEL` (`INFO`)
- `LAPSE_SHUTDOWN_GRACE` (`PT30S`): on SIGTERM, how long work under way may take to finish
"""

API_HELP = (
    """Serve the API and the web UI (uvicorn) until SIGTERM or Ctrl-C.

For more capacity run more of these (on other ports or hosts, behind your load balancer): there is no
`--workers`. On SIGTERM it stops accepting connections and lets requests under way finish for up to
`LAPSE_SHUTDOWN_GRACE`. `/healthz` says it is alive, `/readyz` that Temporal and the app DB answer and the schema
is current (route traffic to it only then), `/metrics` serves Prometheus (`LAPSE_METRICS_TOKEN`, or this machine
and `LAPSE_METRICS_NETWORKS` only). Each answer carries an `X-Request-Id`, found in every log line of its request.
"""
    + COMMON
)

WORKER_HELP = (
    """Run one worker: the Temporal worker for Lapse's workflows and activities, and the notification sender.

Run as many as you need against one task queue (`LAPSE_TASK_QUEUE`): Temporal spreads the work. On SIGTERM it
stops taking work, lets running activities finish for up to `LAPSE_SHUTDOWN_GRACE` (then cancels them: Temporal
retries them elsewhere) and exits 0. Its ops port (`LAPSE_OPS_HOST`:`LAPSE_OPS_PORT`, `127.0.0.1:9464`; 0: none)
serves `/healthz`, `/readyz` (also: it is polling) and `/metrics`; give each worker on one host its own port.
It also sends the notifications, unless `LAPSE_WORKER_NOTIFIES=false` (then run `lapse notifier`).
"""
    + COMMON
)

NOTIFIER_HELP = (
    """Send the notifications alone, off the workers: the outbox (Slack, Teams, email, webhooks) and the
expiring-soon warnings, until SIGTERM or Ctrl-C.

Run it with the workers' `LAPSE_WORKER_NOTIFIES=false`, so that a busy worker's workflows share no CPU with the
sending (docs/production.md). It needs the app DB and the channels' secrets, not Temporal. Several may run: each
claims rows under a lease. On SIGTERM it stops claiming and finishes the sends under way. Its ops port
(`LAPSE_OPS_HOST`:`LAPSE_OPS_PORT`, `127.0.0.1:9464`; 0: none) serves `/healthz`, `/readyz` (the app DB, and it is
sending) and `/metrics` (the notifications' counters); on a host with a worker, give each its own port.
"""
    + COMMON
)

MIGRATE_HELP = """Bring the app DB's schema to the latest migration, then exit.

Safe to run from several processes at once: one migrates, the others wait for it and find the schema current.
Run it before starting a new version when `LAPSE_MIGRATE_ON_START=false`. Reads `LAPSE_DATABASE_URL` (default: the
SQLite file in `LAPSE_DATA_DIR`).
"""


def _settings(**overrides: str) -> Settings:
    """The settings, with a command's options put where the settings read them (so every part of the process,
    the API's app included, sees the same); a wrong setting ends the command saying which."""
    os.environ.update({name: value for name, value in overrides.items()})
    get_settings.cache_clear()
    try:
        return get_settings()
    except ValidationError as error:
        wrong = "; ".join(f"LAPSE_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        raise SystemExit(f"lapse: a setting is wrong: {wrong}") from None


def _prepare(settings: Settings, process: str) -> None:
    from store.db import migrate
    from store.logs import configure_logging

    configure_logging(settings, process)
    if settings.migrate_on_start:
        migrate(settings.db_url)


@cli.app.command(help=API_HELP)
def api(
    host: Annotated[str | None, typer.Option(help="Listen on this address (default: LAPSE_API_HOST, 127.0.0.1).")] = (
        None
    ),
    port: Annotated[
        int | None, typer.Option(help="Listen on this port (default: LAPSE_API_PORT, 8000).", min=1, max=65535)
    ] = None,
) -> None:
    import uvicorn

    overrides = {"LAPSE_API_HOST": host} if host is not None else {}
    if port is not None:
        overrides["LAPSE_API_PORT"] = str(port)
    settings = _settings(**overrides)
    _prepare(settings, "api")
    # uvicorn stops gracefully on SIGTERM or Ctrl-C, then raises the signal again for the handler it found: with
    # this one, a stop it finished exits 0, as the worker's does, instead of dying of the signal.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    uvicorn.run(
        "starter.api.app:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # configure_logging's handler, for uvicorn's lines too
        access_log=False,  # the API logs each request itself, with its id (starter.api.request_log)
        # The client address the API checks (LAPSE_TRUSTED_PROXIES, the metrics' networks) is the connection's
        # peer, never what an X-Forwarded-For header claims.
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace.total_seconds())),
        server_header=False,
    )


@cli.app.command(help=WORKER_HELP)
def worker(
    ops_port: Annotated[
        int | None, typer.Option(help="The ops port (default: LAPSE_OPS_PORT, 9464; 0: none).", min=0, max=65535)
    ] = None,
) -> None:
    _settings(**({"LAPSE_OPS_PORT": str(ops_port)} if ops_port is not None else {}))
    import worker as worker_process

    worker_process.main()


@cli.app.command(help=NOTIFIER_HELP)
def notifier(
    ops_port: Annotated[
        int | None, typer.Option(help="The ops port (default: LAPSE_OPS_PORT, 9464; 0: none).", min=0, max=65535)
    ] = None,
) -> None:
    _settings(**({"LAPSE_OPS_PORT": str(ops_port)} if ops_port is not None else {}))
    import worker as worker_process

    worker_process.main("notifier")


@cli.app.command(help=MIGRATE_HELP)
def migrate() -> None:
    from store.db import migrate as migrate_app_db
    from store.db import schema_revision, shown_url
    from store.logs import configure_logging

    settings = _settings()
    configure_logging(settings, "migrate")
    migrate_app_db(settings.db_url)
    typer.echo(f"app DB {shown_url(settings.db_url)} at {schema_revision(settings.db_url)} (the latest)")
