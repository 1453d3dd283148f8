"""The API's probes: ``/readyz`` names what is not ready, ``/metrics`` answers only whom it is for (and so does a
worker's ops port's), and every answer carries its request id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from aiohttp.test_utils import make_mocked_request
from alembic import command
from temporalio.testing import WorkflowEnvironment

from starter.api.app import create_app
from store.db import _alembic_config, migrate
from store.settings import Settings
from tests.api.identities import NoTemporal
from worker import OpsPort


def _client(app: Any, address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://lapse.test")


@pytest.fixture
async def http(env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(create_app(settings, client=env.client)) as client:
        yield client


async def test_ready_when_temporal_and_the_app_db_answer_and_the_schema_is_current(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    response = await http.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "checks": {"temporal": "ok", "database": "ok", "migrations": "ok"},
    }


async def test_not_ready_names_temporal_when_it_does_not_answer(settings: Settings) -> None:
    async with _client(create_app(settings, client=NoTemporal())) as http:  # type: ignore[arg-type]
        response = await http.get("/readyz")
        assert (await http.get("/healthz")).status_code == 200  # alive all the same: no reason to restart it
    assert response.status_code == 503
    assert response.json()["checks"] == {"temporal": "Temporal does not answer", "database": "ok", "migrations": "ok"}


async def test_not_ready_names_a_schema_behind_the_code(env: WorkflowEnvironment, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(_alembic_config(url), "0014")  # a database an older version left
    settings = Settings(data_dir=tmp_path, database_url=url)
    async with _client(create_app(settings, client=env.client)) as http:
        behind = await http.get("/readyz")
        assert behind.status_code == 503
        assert behind.json()["checks"]["migrations"].startswith("at 0014, the code needs")
        migrate(url)
        assert (await http.get("/readyz")).status_code == 200


async def test_not_ready_names_the_app_db_when_it_does_not_answer(env: WorkflowEnvironment, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://lapse:s3cret@127.0.0.1:1/lapse")
    async with _client(create_app(settings, client=env.client)) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "the app DB does not answer"
    assert "s3cret" not in response.text


# --- /metrics: for this machine, the networks allowed, or the token -------------------------------------------


async def _metrics(settings: Settings, address: str, headers: dict[str, str] | None = None) -> int:
    async with _client(create_app(settings, client=NoTemporal()), address) as http:  # type: ignore[arg-type]
        response = await http.get("/metrics", headers=headers)
    assert response.status_code in (200, 401, 403, 503), response.text
    if response.status_code == 200:
        assert response.headers["content-type"].startswith("text/plain")
    return 403 if response.status_code == 403 else 401 if response.status_code == 401 else 200


async def test_metrics_answer_this_machine_and_the_networks_allowed(settings: Settings) -> None:
    settings = settings.model_copy(update={"auth": "oidc"})  # no proxy in front
    assert await _metrics(settings, "127.0.0.1") == 200
    assert await _metrics(settings, "::1") == 200
    assert await _metrics(settings, "10.1.2.3") == 403
    # From this machine, but through a proxy (the forwarding header says so): anyone's.
    assert await _metrics(settings, "127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}) == 403
    scrapers = settings.model_copy(update={"metrics_networks": ["10.1.2.0/24"]})
    assert await _metrics(scrapers, "10.1.2.3") == 200
    assert await _metrics(scrapers, "10.1.3.3") == 403


async def test_behind_a_trusted_proxy_on_this_machine_loopback_is_not_enough(settings: Settings) -> None:
    behind = settings.model_copy(update={"auth": "proxy", "trusted_proxies": ["127.0.0.1"]})
    assert await _metrics(behind, "127.0.0.1") == 403


async def test_with_a_token_the_metrics_need_it_from_everywhere(settings: Settings) -> None:
    token = Settings(metrics_token="scrape-me-0123456789").metrics_token  # type: ignore[arg-type]
    guarded = settings.model_copy(update={"auth": "oidc", "metrics_token": token, "metrics_networks": ["10.1.2.0/24"]})
    assert await _metrics(guarded, "127.0.0.1") == 401
    assert await _metrics(guarded, "10.1.2.3", {"Authorization": "Bearer wrong"}) == 401
    assert await _metrics(guarded, "10.9.9.9", {"Authorization": "Bearer scrape-me-0123456789"}) == 200


async def test_the_networks_allowed_do_not_let_in_what_came_through_a_proxy(settings: Settings) -> None:
    scrapers = settings.model_copy(update={"auth": "oidc", "metrics_networks": ["10.1.2.0/24"]})
    assert await _metrics(scrapers, "10.1.2.3", {"X-Forwarded-For": "203.0.113.9"}) == 403
    assert await _metrics(scrapers, "10.1.2.3", {"Forwarded": "for=203.0.113.9"}) == 403
    # A proxy in the allowed network passes everyone's request on from its own address.
    proxied = scrapers.model_copy(update={"auth": "proxy", "trusted_proxies": ["10.1.2.7"]})
    assert await _metrics(proxied, "10.1.2.7") == 403
    assert await _metrics(proxied, "10.1.2.3") == 200


def _ops_metrics(settings: Settings, address: str, headers: dict[str, str] | None = None) -> Any:
    """A worker's ops port's ``/metrics`` handler, called as if from ``address``."""
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (address, 50000) if key == "peername" else default
    request = make_mocked_request("GET", "/metrics", headers=headers, transport=transport)
    return OpsPort(settings, client=NoTemporal())._metrics(request)  # type: ignore[arg-type]


async def test_a_workers_metrics_answer_this_machine_and_the_networks_allowed_only(settings: Settings) -> None:
    settings = settings.model_copy(update={"auth": "oidc"})
    assert (await _ops_metrics(settings, "127.0.0.1")).status == 200
    assert (await _ops_metrics(settings, "::1")).status == 200
    refused = await _ops_metrics(settings, "10.1.2.3")
    assert refused.status == 403 and "LAPSE_METRICS_NETWORKS" in refused.text
    assert (await _ops_metrics(settings, "127.0.0.1", {"X-Forwarded-For": "203.0.113.9"})).status == 403
    scrapers = settings.model_copy(update={"metrics_networks": ["10.1.2.0/24"]})
    assert (await _ops_metrics(scrapers, "10.1.2.3")).status == 200
    assert (await _ops_metrics(scrapers, "10.1.3.3")).status == 403
    assert (await _ops_metrics(scrapers, "10.1.2.3", {"X-Real-IP": "203.0.113.9"})).status == 403


async def test_a_workers_metrics_with_a_token_need_it_from_everywhere(settings: Settings) -> None:
    token = Settings(metrics_token="scrape-me-0123456789").metrics_token  # type: ignore[arg-type]
    guarded = settings.model_copy(update={"auth": "oidc", "metrics_token": token})
    assert (await _ops_metrics(guarded, "127.0.0.1")).status == 401
    bearer = {"Authorization": "Bearer scrape-me-0123456789"}
    assert (await _ops_metrics(guarded, "10.9.9.9", bearer)).status == 200


def test_metrics_networks_are_checked_as_they_are_read() -> None:
    assert Settings(metrics_networks="10.0.0.0/8, ::1").metrics_networks == ["10.0.0.0/8", "::1"]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not an IP address or network"):
        Settings(metrics_networks="prometheus.internal")  # type: ignore[arg-type]


# --- request ids ----------------------------------------------------------------------------------------------


async def test_a_request_keeps_a_sane_id_and_gets_one_otherwise(http: httpx.AsyncClient) -> None:
    kept = await http.get("/healthz", headers={"X-Request-Id": "lb-7f3a:42"})
    assert kept.headers["x-request-id"] == "lb-7f3a:42"
    made = await http.get("/healthz", headers={"X-Request-Id": "forged\tline level=ERROR"})
    assert made.headers["x-request-id"] != "forged\tline level=ERROR"
    assert len(made.headers["x-request-id"]) == 32
    other = await http.get("/api/catalog")  # refused (nobody signed in): still carries one
    assert other.status_code == 401 and len(other.headers["x-request-id"]) == 32
    assert other.headers["x-request-id"] != made.headers["x-request-id"]
