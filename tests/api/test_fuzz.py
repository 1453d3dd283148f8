"""API fuzz: schemathesis over the app's own OpenAPI document, in-process, as real users.

Every operation gets generated requests, valid (positive) and invalid (negative), sent by an admin
(ada) or a plain user (alan), some of them aimed at a request, a grant or an integration that exists,
through the app with the real Temporal dev server and a worker behind it. Every answer must be:

- no server error (5xx);
- a status the operation documents, with the documented content type and a body matching its schema;
- for a 4xx, an RFC 9457 problem document (``application/problem+json`` with ``status`` and ``detail``)
  that names the ``field`` at fault for a 422 (and the header for a 401).

``LAPSE_FUZZ_EXAMPLES`` sets the examples per operation and mode: by default 3, the same ones every
run (about 20 s per app DB); set, each run explores anew (``make fuzz``: 100). ``LAPSE_FUZZ_SEED``
replays a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlmodel import select
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from access import names
from starter.services.sessions import COOKIE_NAME
from store.db import session_scope
from store.settings import Settings
from store.tables import Integration
from tests.conftest import Api

EXAMPLES = int(os.environ.get("LAPSE_FUZZ_EXAMPLES", "3"))
SEED = int(os.environ.get("LAPSE_FUZZ_SEED", "0")) or (None if "LAPSE_FUZZ_EXAMPLES" in os.environ else 20261201)
"""The small run in ``make test`` sends the same examples every time (no flaky CI); a sized run explores
anew unless ``LAPSE_FUZZ_SEED`` replays one."""
ADMIN = "ada@example.com"
USER = "alan@example.com"
BASE_URL = "http://lapse.test"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
KNOWN_ROLES = ["ledger/prod-db/read", "ledger/payments-api/deploy", "ledger/prod-db/admin", "people/hr-system/admin"]
LIKELY_DURATIONS = ["PT30S", "PT1H", "PT8H", "P1D", 60, 3600]
"""Durations some policy allows, so that some generated requests and extensions start real work."""


_CALLER = "X-Forwarded-Email"
_SIGNED_BY = {"/api/slack/interactions": "X-Slack-Signature"}
"""Routes a signature authenticates, not a caller: their 401 names the signature's header."""


def _problem_failures(response: httpx.Response) -> list[str]:
    """What is wrong with a 4xx answer as a problem document, if anything."""
    if response.status_code < 400 or response.status_code >= 500:
        return []
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return [
            f"a {response.status_code} that is not application/problem+json: {response.headers.get('content-type')}"
        ]
    try:
        body = response.json()
    except ValueError:
        return [f"a {response.status_code} whose body is not JSON"]
    wrong = []
    if not isinstance(body, dict) or body.get("status") != response.status_code:
        wrong.append(f"a {response.status_code} whose problem has status {body.get('status')!r}")
    elif not isinstance(body.get("detail"), str) or not body["detail"]:
        wrong.append(f"a {response.status_code} whose problem has no detail")
    elif response.status_code == 422 and not body.get("field"):
        wrong.append(f"a 422 naming no field: {body['detail']}")
    elif response.status_code == 401 and body.get("field") != _SIGNED_BY.get(response.request.url.path, _CALLER):
        wrong.append(f"a 401 not naming {_SIGNED_BY.get(response.request.url.path, _CALLER)}: {body}")
    return wrong


def _request(kwargs: dict[str, Any], who: str) -> dict[str, Any]:
    """schemathesis's transport arguments as httpx's, sent as ``who`` (through the proxy's header: the credentials
    it generates from the security schemes, a token or a session cookie, would come first and say nobody)."""
    credentials = {"x-forwarded-email", "authorization"}
    headers = {k: str(v) for k, v in (kwargs.get("headers") or {}).items() if k.lower() not in credentials}
    headers["X-Forwarded-Email"] = who
    cookies = {k: v for k, v in (kwargs.get("cookies") or {}).items() if k != COOKIE_NAME}
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "params": kwargs.get("params"),
        "headers": headers,
        "cookies": cookies or None,
    }
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif "data" in kwargs:
        data = kwargs["data"]
        request["content" if isinstance(data, bytes | str) else "data"] = data
    return request


class Fuzzer:
    """Runs each operation's examples in a worker thread, sending them through the test's event loop."""

    def __init__(self, api: Api, loop: asyncio.AbstractEventLoop, known: dict[str, list[Any]]) -> None:
        self.api = api
        self.loop = loop
        self.known = known
        self.failures: dict[tuple[str, str], str] = {}
        self.calls = 0
        self.statuses: dict[int, int] = {}
        self.skipped: list[str] = []

    def send(self, request: dict[str, Any]) -> httpx.Response:
        future = asyncio.run_coroutine_threadsafe(self.api.http.request(**request), self.loop)
        return future.result(timeout=120)

    def aim(self, case: Any, data: st.DataObject) -> None:
        """Point some examples at things that exist, so the fuzz reaches past the 404s."""
        for name, values in self.known.items():
            if not values or name not in (case.path_parameters or {}):
                continue
            if data.draw(st.booleans(), label=f"known {name}"):
                case.path_parameters[name] = data.draw(st.sampled_from(values), label=name)
        body = case.body
        if not isinstance(body, dict):
            return
        if isinstance(body.get("role"), str) and data.draw(st.booleans(), label="role"):
            body["role"] = data.draw(st.sampled_from(KNOWN_ROLES), label="known role")
        if "duration" in body and data.draw(st.booleans(), label="duration"):
            body["duration"] = data.draw(st.sampled_from(LIKELY_DURATIONS), label="likely duration")

    def one(self, case: Any, who: str) -> None:
        request = _request(case.as_transport_kwargs(base_url=BASE_URL), who)
        try:
            response = self.send(request)
        except Exception as error:  # a crash in the app (or a dropped connection) is a server error
            self._fail(case, "exception", f"{type(error).__name__}: {error}", request)
            return
        self.calls += 1
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        if response.status_code == 201 and case.operation.label == "POST /api/requests":
            self.known["request_id"].append(response.json()["id"])  # later examples decide, extend, end it
        try:
            case.validate_response(Response.from_httpx(response, verify=True), checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                self._fail(case, type(failure).__name__, f"{response.status_code} {failure.title}", request, response)
        for wrong in _problem_failures(response):
            self._fail(case, "problem", wrong, request, response)

    def _fail(
        self, case: Any, kind: str, what: str, request: dict[str, Any], response: httpx.Response | None = None
    ) -> None:
        key = (case.operation.label, f"{kind}: {what}"[:200])
        if key not in self.failures:
            sent = {k: v for k, v in request.items() if v is not None and k != "headers"}
            body = response.text[:500] if response is not None else ""
            self.failures[key] = f"{sent} as {request['headers']['X-Forwarded-Email']}\n        -> {body}"

    def operation(self, operation: Any, mode: GenerationMode) -> None:
        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: every distinct failure is reported as found
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(mode), who=st.sampled_from([ADMIN, USER]), data=st.data())
        def run(case: Any, who: str, data: st.DataObject) -> None:
            self.aim(case, data)
            self.one(case, who)

        if SEED is not None:
            run = seed(SEED)(run)
        try:
            run()
        except Unsatisfiable:  # nothing in this operation can be made invalid (no parameters, no body)
            self.skipped.append(f"{operation.label} ({mode.value})")

    def all(self, schema: Any) -> None:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                self.operation(operation, mode)


async def _known(api: Api) -> dict[str, list[Any]]:
    """A pending request, an active one and its grant, and the demo's names: targets for the fuzz."""
    pending = await api.request(USER, "ledger/payments-api/deploy", "PT1H", "fuzz: pending")
    active = await api.request(USER, "ledger/prod-db/read", "PT1H", "fuzz: active")
    await api.wait_for(active["id"], "active")
    grants = await api.ok(ADMIN, "GET", "/api/grants", all="true")
    return {
        "request_id": [pending["id"], active["id"]],
        "grant_id": [g["id"] for g in grants],
        "name": ["ledger", "people"],
        "resource": ["prod-db", "payments-api"],
        "role": ["read", "deploy"],
    }


async def _delete_discovery_schedules(env: WorkflowEnvironment, settings: Settings) -> None:
    """Integrations the fuzz created may have discovery schedules: leave none behind."""
    with session_scope(settings.db_url, write=False) as session:
        created = list(session.exec(select(Integration.name)))
    for name in created:
        with contextlib.suppress(RPCError):
            await env.client.get_schedule_handle(names.discovery_id(name)).delete()


async def test_fuzz_the_api_finds_no_server_error_and_every_answer_matches_the_document(
    api: Api, env: WorkflowEnvironment, settings: Settings
) -> None:
    document = (await api.http.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)
    fuzzer = Fuzzer(api, asyncio.get_running_loop(), await _known(api))
    started = time.monotonic()
    try:
        await asyncio.to_thread(fuzzer.all, schema)
    finally:
        await _delete_discovery_schedules(env, settings)
    took = time.monotonic() - started
    report = "\n".join(f"{op}: {what}\n    {example}" for (op, what), example in sorted(fuzzer.failures.items()))
    print(f"fuzz: {fuzzer.calls} calls in {took:.0f} s, statuses {dict(sorted(fuzzer.statuses.items()))}")
    print(f"fuzz: nothing to make invalid in {', '.join(fuzzer.skipped) or 'no operation'}")
    assert fuzzer.calls > 0
    assert not fuzzer.failures, f"{len(fuzzer.failures)} distinct failures:\n{report}"
