"""How every Lapse process logs: text for a terminal, or JSON lines for a log shipper, with what each line is about.

``configure_logging(settings, process)`` is called once by ``lapse api``, ``lapse worker``, ``lapse migrate`` and
``lapse run``. Each line carries, where known, the API request's id and its caller (``request_id``, ``actor``: set by
the API's request log, ``starter.api.request_log``), the workflow and activity an activity runs for
(``workflow_id``, ``activity_type``: from ``temporalio.activity.info()``, so no activity says it itself), and the
integration a connector works on (``integration``: set where the connector is made). Secrets stay out: the
connectors scrub theirs from their errors, and every line is scrubbed once more of passwords in URLs and
connection strings (``scheme://user:***@``, ``password=***``) and of the values of Lapse's own secret settings.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError
from temporalio import activity

from store.settings import Settings


@dataclass
class RequestContext:
    """The API request being served: its id (``X-Request-Id``) and, once the sign-in layer knows, its caller.

    Mutable on purpose: FastAPI runs sync dependencies in a copy of the request's context, so the caller found
    there is written into this object, which the copy shares, rather than into a variable of its own."""

    id: str
    actor: str | None = None


current_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("lapse_request", default=None)
integration: contextvars.ContextVar[str | None] = contextvars.ContextVar("lapse_integration", default=None)
"""The integration whose connector the current activity uses (each activity runs in a context of its own)."""


def note_actor(email: str) -> None:
    """Say who the API request being served is from, for its remaining lines (a no-op outside a request)."""
    if (request := current_request.get()) is not None:
        request.actor = email


CONTEXT_FIELDS = ("request_id", "actor", "workflow_id", "activity_type", "integration")

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?P<at>@)")
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?:'[^']*'|[^\s&'\"]+)", re.IGNORECASE)
_STANDARD = {*vars(logging.makeLogRecord({})), "message", "asctime", "taskName", *CONTEXT_FIELDS}
_STANDARD |= {"temporal_workflow", "temporal_activity"}  # the SDK's, flattened into workflow_id and activity_type
_STANDARD |= {"color_message"}  # uvicorn's message again, with terminal colours
_STANDARD |= {"temporal_log"}  # Temporal Core's own record, forwarded: its fields are in the message already


class ContextFilter(logging.Filter):
    """Puts what a line is about on its record: the request and actor, the activity, the integration."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = current_request.get()
        record.request_id, record.actor = (request.id, request.actor) if request else (None, None)
        record.integration = integration.get()
        record.workflow_id = record.activity_type = None
        if activity.in_activity():
            info = activity.info()
            record.workflow_id, record.activity_type = info.workflow_id, info.activity_type
        else:  # the SDK's workflow logger puts the run on the record (workflow code cannot be asked)
            about = getattr(record, "temporal_workflow", None)
            if isinstance(about, dict):
                record.workflow_id = about.get("workflow_id")
        return True


class Scrubber:
    """Removes secrets from a formatted line: passwords in URLs, and the values of Lapse's secret settings."""

    def __init__(self, secrets: list[str]) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def __call__(self, line: str) -> str:
        line = _URL_PASSWORD.sub(r"\g<head>***\g<at>", line)
        line = _KEYWORD_PASSWORD.sub(r"\g<head>***", line)
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line


class JsonLines(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``process``, ``msg``, the context that is known, any
    ``extra=`` fields, and ``exc`` with a traceback."""

    def __init__(self, process: str, scrub: Scrubber) -> None:
        super().__init__()
        self._process = process
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": self._process,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            if (value := getattr(record, name, None)) is not None:
                line[name] = value
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_") and name not in line:
                line[name] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        if record.exc_info:
            line["exc"] = "".join(traceback.format_exception(*record.exc_info))
        # Scrubbed before encoding: a secret holding a quote or a backslash is escaped in the JSON text.
        scrubbed = {name: self._scrub(value) if isinstance(value, str) else value for name, value in line.items()}
        return json.dumps(scrubbed, default=str, ensure_ascii=False)


class Text(logging.Formatter):
    """Today's text lines, with the request or workflow they are about in brackets."""

    def __init__(self, process: str, scrub: Scrubber) -> None:
        super().__init__(f"%(asctime)s {process} %(levelname)s %(message)s")
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        about = " ".join(f"{n}={v}" for n in CONTEXT_FIELDS if (v := getattr(record, n, None)) is not None)
        text = super().format(record)
        message, newline, trace = text.partition("\n") if record.exc_info else (text, "", "")
        # One event, one line: a caller's words (a request path, a comment) never start a line of their own and
        # so can never pass for Lapse's (a traceback keeps its lines, after the escaped first one).
        line = _escape_controls(message) + (f" [{about}]" if about else "")
        return self._scrub(line + newline + trace)


def _escape_controls(text: str) -> str:
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii") for ch in text)


QUIET_CLIENTS = ("httpx", "httpcore", "aiohttp.client", "slack_sdk")
"""Loggers of HTTP clients kept at WARNING: their INFO lines name whole URLs, secrets included."""


def secret_values(settings: Settings) -> list[str]:
    """The values of Lapse's own secrets, as they might appear in a line: each key of a key ring on its own too,
    the app DB's password, the OIDC client secret an environment variable holds."""
    values = [s.get_secret_value() for s in (settings.secret_key, settings.metrics_token) if s is not None]
    for ring in (settings.audit_key, settings.codec_key):
        if ring is not None:
            values += [ring.get_secret_value(), *(e.partition(":")[2] for e in ring.get_secret_value().split(","))]
    if settings.temporal_api_key:
        values.append(settings.temporal_api_key)
    if settings.database_url:
        with contextlib.suppress(ArgumentError):
            values.append(make_url(settings.database_url).password or "")
    if settings.oidc_client_secret_env:
        values.append(os.environ.get(settings.oidc_client_secret_env, ""))
    return [str(value).strip() for value in values if str(value).strip()]


def configure_logging(settings: Settings, process: str) -> None:
    """Send every logger's lines to standard error as ``settings.log_format`` says, at ``settings.log_level``.

    uvicorn's loggers go through the same handler (their own handlers are removed), so a process writes one
    format only. Called again, it replaces what it set before.
    """
    scrub = Scrubber(secret_values(settings))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines(process, scrub) if settings.log_format == "json" else Text(process, scrub))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "temporalio"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin at each start
    # HTTP clients log each request's full URL at INFO; a Teams Workflows or webhook URL carries its own signature
    # (a secret Lapse resolves per send, so the scrubber cannot know it): they say only what went wrong.
    for name in QUIET_CLIENTS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
