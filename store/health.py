"""Readiness: what ``/readyz`` of the API and of a worker's ops port check before saying a process can work.

Three things, each with a short timeout so a probe never hangs: Temporal answers (``GetSystemInfo``, the call a
client makes to connect, which every namespace's credentials may make), the app DB answers ``SELECT 1``, and its
schema is at the latest migration this code knows. What is not ready is named, without the error's text (the
probe is public; the reason goes to the log).

And who may read ``/metrics`` (the API's and a worker's ops port's) without ``LAPSE_METRICS_TOKEN``:
``scraper_allowed``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import text
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from store.db import engine_for, schema_current, schema_head, schema_revision
from store.settings import Settings

log = logging.getLogger(__name__)

TIMEOUT = 2.0
"""Seconds each check may take: an orchestrator's probe usually gives up after a few."""

Checks = dict[str, str]
"""Each check's name → ``ok`` or why not."""


async def temporal_ready(client: Client) -> str:
    try:
        await client.workflow_service.get_system_info(
            GetSystemInfoRequest(), retry=False, timeout=timedelta(seconds=TIMEOUT)
        )
    except Exception as error:
        log.warning("readiness: Temporal does not answer: %s", error)
        return "Temporal does not answer"
    return "ok"


def _database(url: str) -> tuple[str, str]:
    try:
        with engine_for(url, writer=False).connect() as connection:
            connection.execute(text("SELECT 1"))
        if schema_current(url):
            return "ok", "ok"
        at = schema_revision(url)
    except Exception as error:
        log.warning("readiness: the app DB does not answer: %s", error)
        return "the app DB does not answer", "unknown"
    return "ok", f"at {at or 'no revision'}, the code needs {schema_head()}: run lapse migrate"


async def database_ready(url: str) -> Checks:
    """``database`` and ``migrations``; a connection that does not come within the timeout counts as down."""
    try:
        database, migrations = await asyncio.wait_for(asyncio.to_thread(_database, url), TIMEOUT)
    except TimeoutError:
        log.warning("readiness: the app DB did not answer within %ss", TIMEOUT)
        database, migrations = "the app DB did not answer in time", "unknown"
    return {"database": database, "migrations": migrations}


async def readiness(client: Client, url: str) -> Checks:
    """Every check, run side by side."""
    temporal, database = await asyncio.gather(temporal_ready(client), database_ready(url))
    return {"temporal": temporal, **database}


def ready(checks: Checks) -> bool:
    return all(value == "ok" for value in checks.values())


FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host")
LOOPBACK = ["127.0.0.0/8", "::1"]


def scraper_allowed(settings: Settings, peer: str | None, headers: Iterable[str]) -> bool:
    """Whether a caller at ``peer`` sending ``headers`` (their names) may read ``/metrics`` without the token: one on
    this machine or in ``metrics_networks`` that did not come through a proxy. Behind a reverse proxy every visitor
    arrives from the proxy's address (the loopback one on the same host), so a request carrying forwarding headers,
    or from a ``trusted_proxies`` address in proxy mode, is nobody's own."""
    if peer is None:
        return False
    forwarded = any(name.lower() in FORWARDING_HEADERS for name in headers)
    proxy = settings.auth == "proxy" and in_networks(peer, settings.trusted_proxies)
    if forwarded or proxy:
        return False
    return in_networks(peer, LOOPBACK) or in_networks(peer, settings.metrics_networks)


def in_networks(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)
