"""Fake PagerDuty and Opsgenie APIs: real local HTTP servers speaking the few endpoints Lapse reads, as documented.

PagerDuty REST API v2: ``GET /oncalls`` (``schedule_ids[]`` or ``escalation_policy_ids[]``, ``earliest``,
``limit``/``offset`` paging with ``more``; users as references without their email, as PagerDuty answers without
``include[]=users``, so Lapse has to ask ``GET /users/{id}``), ``GET /users/{id}``, ``GET /services/{id}``; every
call must carry ``Authorization: Token token=<key>`` and the v2 ``Accept`` header. Opsgenie: ``GET
/v2/schedules/{name}/on-calls?scheduleIdentifierType=name&flat=true`` with ``Authorization: GenieKey <key>``.
A test says who is on call, takes a provider down (503) or makes it slow, and reads the calls made::

    with FakePagerDuty(token="k") as pagerduty:
        pagerduty.users["PU1"] = "alan@example.com"
        pagerduty.schedules["P123"] = ["PU1"]
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

ACCEPT = "application/vnd.pagerduty+json;version=2"


class _Fake:
    """A server in a thread; subclasses answer ``get(path, query, headers) -> (status, body)``."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.down = False
        """Answer every call with 503."""
        self.delay = 0.0
        """Seconds to wait before answering (a slow provider)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                fake.calls.append(self.path)
                if fake.delay:
                    time.sleep(fake.delay)
                if fake.down:
                    status, body = 503, {"error": {"message": "Service Unavailable"}}
                else:
                    status, body = fake.get(unquote(url.path), parse_qs(url.query), dict(self.headers))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def get(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, Any]:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakePagerDuty(_Fake):
    def __init__(self, *, token: str, page_size: int = 2) -> None:
        super().__init__()
        self.token = token
        self.page_size = page_size
        """PagerDuty serves at most ``limit`` entries a page; the fake fewer, so that paging is exercised."""
        self.users: dict[str, str] = {}
        """User id → email."""
        self.schedules: dict[str, list[str]] = {}
        """Schedule id → the user ids on call now."""
        self.services: dict[str, str] = {}
        """Service id → its escalation policy's id."""
        self.policies: dict[str, list[tuple[int, str]]] = {}
        """Escalation policy id → (level, user id) on call now."""

    def get(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, Any]:
        authorization = headers.get("Authorization", "")
        if authorization != f"Token token={self.token}":
            # As a verbose server might: the credentials it got, echoed (Lapse must not repeat them).
            return 401, {"error": {"message": f"Unauthorized: {authorization}", "code": 2006}}
        if headers.get("Accept") != ACCEPT:
            return 406, {"error": {"message": "Accept must ask for version 2"}}
        parts = path.strip("/").split("/")
        if parts == ["oncalls"]:
            return 200, self._oncalls(query)
        if len(parts) == 2 and parts[0] == "users" and parts[1] in self.users:
            return 200, {"user": {"id": parts[1], "type": "user", "email": self.users[parts[1]]}}
        if len(parts) == 2 and parts[0] == "services" and parts[1] in self.services:
            policy = {"id": self.services[parts[1]], "type": "escalation_policy_reference"}
            return 200, {"service": {"id": parts[1], "escalation_policy": policy}}
        return 404, {"error": {"message": "Not Found", "code": 2100}}

    def _oncalls(self, query: dict[str, list[str]]) -> dict[str, Any]:
        entries: list[dict[str, Any]] = []
        for schedule in query.get("schedule_ids[]", []):
            for user in self.schedules.get(schedule, []):
                entries.append(self._entry(user, 1, schedule={"id": schedule, "type": "schedule_reference"}))
        for policy in query.get("escalation_policy_ids[]", []):
            for level, user in self.policies.get(policy, []):
                entries.append(self._entry(user, level, escalation_policy={"id": policy}))
        limit = min(int(query.get("limit", ["25"])[0]), self.page_size)
        offset = int(query.get("offset", ["0"])[0])
        page = entries[offset : offset + limit]
        return {"oncalls": page, "limit": limit, "offset": offset, "more": offset + limit < len(entries), "total": None}

    @staticmethod
    def _entry(user: str, level: int, **more: Any) -> dict[str, Any]:
        reference = {"id": user, "type": "user_reference", "summary": user}  # no email: Lapse asks /users/{id}
        return {"user": reference, "escalation_level": level, "start": None, "end": None, **more}


class FakeOpsgenie(_Fake):
    def __init__(self, *, key: str) -> None:
        super().__init__()
        self.key = key
        self.schedules: dict[str, list[str]] = {}
        """Schedule name → the usernames (emails) on call now."""

    def get(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, Any]:
        if headers.get("Authorization") != f"GenieKey {self.key}":
            return 401, {"message": "Could not authenticate", "took": 0.0, "requestId": "r"}
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["v2", "schedules"] and parts[3] == "on-calls":
            if query.get("scheduleIdentifierType") != ["name"] or query.get("flat") != ["true"]:
                return 422, {"message": "expected scheduleIdentifierType=name&flat=true"}
            name = parts[2]
            if name not in self.schedules:
                return 404, {"message": f"No schedule exists with name [{name}]"}
            data = {"_parent": {"id": "s-1", "name": name, "enabled": True}, "onCallRecipients": self.schedules[name]}
            return 200, {"data": data, "took": 0.01, "requestId": "r"}
        return 404, {"message": "not found"}
