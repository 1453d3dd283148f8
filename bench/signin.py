"""Sign-in overhead benchmark: what knowing who calls costs each API call, with a token, a session or the proxy.

For each app DB (SQLite, and a real PostgreSQL from Debian's packages through ``harness``), it loads the demo
organisation, adds ``--people`` more people each holding a browser session and an API token (so the lookups run
against tables of a realistic size), and measures, ``--calls`` times each:

1. ``identify`` alone (``starter.api.deps``): a Bearer token, a session cookie, the SSO proxy's header;
2. the whole server-side answer to ``GET /api/me`` (the cheapest signed-in route) through the ASGI app, for
   each credential, next to ``GET /healthz`` (no sign-in) on the same app: their difference is the sign-in's
   share of a call, parsing and checking included.

Run from the project root::

    .venv/bin/python -m bench.signin --people 200 --calls 300     # quick
    .venv/bin/python -m bench.signin                               # 10,000 people, 2,000 calls each
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request

from harness.postgres import PostgresServer
from starter.api.app import create_app
from starter.api.deps import identify
from starter.services.org import checked_connector
from starter.services.sessions import COOKIE_NAME, start_session
from starter.services.tokens import Scope, TokenCreate, create_token
from store import catalog
from store.db import migrate, session_scope
from store.org import DEMO_ORG, OrgFile
from store.org_load import load_org
from store.settings import Settings
from store.tables import User

PERSON = "alan@example.com"
"""Who the measured calls are made as: a demo requester."""


class _NoTemporal:
    """The API's Temporal client, never reached by the routes measured here."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("the sign-in benchmark never reaches Temporal")


def _settings(data_dir: Path, database_url: str, auth: str) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        temporal_address="127.0.0.1:1",
        codec_key=secrets.token_hex(32),
        auth=auth,  # type: ignore[arg-type]
        trusted_proxies=["127.0.0.1"],
    )


def _populate(settings: Settings, people: int) -> tuple[str, str]:
    """The demo organisation plus ``people`` more, each signed in once and holding a token; the measured
    person's token and session id."""
    migrate(settings.db_url)
    with session_scope(settings.db_url) as session:
        load_org(session, OrgFile.read(DEMO_ORG), connectors=checked_connector)
        session.add_all(User(email=f"person{i:06d}@example.com", name=f"Person {i}") for i in range(people))
    body = TokenCreate(name="bench", scopes=[Scope.READ], expires_in=timedelta(days=30))
    now = datetime.now(UTC)
    for i in range(people):
        email = f"person{i:06d}@example.com"
        start_session(settings, email, auth_time=now)
        with session_scope(settings.db_url, write=False) as session:
            owner = catalog.find_user(session, email)
        assert owner is not None
        create_token(settings, owner, body)
    with session_scope(settings.db_url, write=False) as session:
        person = catalog.find_user(session, PERSON)
    assert person is not None
    token = create_token(settings, person, body).token
    return token, start_session(settings, PERSON, auth_time=now).id


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
    }


def _request(headers: dict[str, str]) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/me",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "query_string": b"",
    }
    return Request(scope)


def _time_identify(settings: Settings, headers: dict[str, str], calls: int) -> dict[str, float]:
    samples = []
    for _ in range(calls + calls // 10):  # the first tenth warms caches and is dropped
        request = _request(headers)
        started = time.perf_counter()
        identity = identify(request, settings)
        samples.append(time.perf_counter() - started)
        assert identity.user.email == PERSON
    return _percentiles(samples[calls // 10 :])


async def _time_calls(call: Callable[[], Awaitable[httpx.Response]], calls: int) -> dict[str, float]:
    samples = []
    for _ in range(calls + calls // 10):
        started = time.perf_counter()
        response = await call()
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return _percentiles(samples[calls // 10 :])


async def _http(settings: Settings, credentials: dict[str, dict[str, str]], calls: int) -> dict[str, Any]:
    app = create_app(settings, client=_NoTemporal())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    figures: dict[str, Any] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://lapse.test") as http:
        figures["healthz (no sign-in)"] = await _time_calls(lambda: http.get("/healthz"), calls)
        for name, headers in credentials.items():
            figures[f"/api/me with {name}"] = await _time_calls(lambda h=headers: http.get("/api/me", headers=h), calls)  # type: ignore[misc]
    base = figures["healthz (no sign-in)"]["p50_ms"]
    for name in credentials:
        figures[f"/api/me with {name}"]["over_healthz_p50_ms"] = round(
            figures[f"/api/me with {name}"]["p50_ms"] - base, 3
        )
    return figures


def measure(database_url: str, data_dir: Path, people: int, calls: int) -> dict[str, Any]:
    settings = _settings(data_dir, database_url, "oidc")
    token, session_id = _populate(settings, people)
    proxy_settings = _settings(data_dir, database_url, "proxy")
    credentials = {
        "a token": {"Authorization": f"Bearer {token}"},
        "a session": {"Cookie": f"{COOKIE_NAME}={session_id}"},
    }
    identify_figures = {name: _time_identify(settings, headers, calls) for name, headers in credentials.items()} | {
        "the proxy header": _time_identify(proxy_settings, {"X-Forwarded-Email": PERSON}, calls)
    }
    http = asyncio.run(_http(settings, credentials, calls))
    http |= asyncio.run(_http(proxy_settings, {"the proxy header": {"X-Forwarded-Email": PERSON}}, calls))
    return {"identify": identify_figures, "http": http}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--people", type=int, default=10_000, help="people besides the demo's, each with a session and a token"
    )
    parser.add_argument("--calls", type=int, default=2_000, help="measured calls per case")
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures (default: print only)")
    args = parser.parse_args()
    results: dict[str, Any] = {"people": args.people, "calls": args.calls, "date": datetime.now(UTC).date().isoformat()}
    with tempfile.TemporaryDirectory(prefix="lapse-bench-signin-") as tmp:
        results["sqlite"] = measure(f"sqlite:///{tmp}/lapse.db", Path(tmp), args.people, args.calls)
    postgres = PostgresServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="lapse-bench-signin-") as tmp:
            results["postgresql"] = measure(postgres.dsn(), Path(tmp), args.people, args.calls)
    finally:
        postgres.stop()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
