"""Each API request's id and its one log line.

A request keeps the ``X-Request-Id`` its caller (or the proxy in front) sent when it looks like an id, and
gets a new one otherwise; the answer echoes it, and every line logged while it is served carries it
(``store.logs``), with the caller once the sign-in layer knows them. When it ends, one line says what was
asked and how it went: method, path (never the query, which may hold a sign-in's code), status, duration.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from store.logs import RequestContext, current_request

HEADER = b"x-request-id"
_SANE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
"""What a request id from outside may look like: no spaces or control characters to forge log lines with."""

log = logging.getLogger("lapse.requests")
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
"""Asked every few seconds by orchestrators and Prometheus: logged at DEBUG, not to drown the requests."""


def request_id_of(scope: Scope) -> str:
    """The caller's ``X-Request-Id`` if it looks like one, else a new id."""
    sent = next((value for name, value in scope.get("headers", []) if name.lower() == HEADER), None)
    if sent is not None:
        text = bytes(sent).decode("latin-1").strip()
        if _SANE.match(text):
            return text
    return uuid.uuid4().hex


class RequestLog:
    """Gives each HTTP request its id, echoed as ``X-Request-Id``, and logs its line when the answer is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = RequestContext(id=request_id_of(scope))
        token = current_request.set(request)
        started = time.perf_counter()
        status = 500  # what the caller gets if the app fails before answering
        answered = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                headers = [(n, v) for n, v in message.get("headers", []) if n.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, request.id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Logged here, with the request's id; the server would log it again, without, if it saw it. Once a
            # 500 has gone out (Starlette sends it, then raises) there is nothing more for the server to do.
            log.exception("%s %s failed", scope.get("method", ""), scope.get("path", ""))
            if not answered:
                raise
        finally:
            log.log(
                logging.DEBUG if scope.get("path") in PROBES else logging.INFO,
                "%s %s %d",
                scope.get("method", ""),
                scope.get("path", ""),
                status,
                extra={
                    "method": scope.get("method", ""),
                    "path": scope.get("path", ""),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            current_request.reset(token)
