"""Who is on call now, read from PagerDuty or Opsgenie for the approval rules' ``when.on_call`` conditions.

The policy is pure: a request's context is built from the app DB (``store.catalog.policy_context``), then
``on_call_context`` asks the providers its rules name who is on call now and sets ``Requester.on_call``. Only
the references of rules whose group condition the requester meets are asked about, so a policy naming none
costs no HTTP. Each rotation's answer (everyone on call, by email) is kept for the ``on_call`` section's
``cache`` and shared by every requester and thread, one fetch at a time per rotation.

A provider that fails, refuses or takes longer than ``TIMEOUT`` answers "nobody": the rule does not match and
the next one applies (fail closed), never a 500. The failure is logged and audited once per failure streak
(``on_call.lookup_failed``; ``on_call.lookup_restored`` when it answers again). Errors never quote the key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from access.connectors import ConnectorError
from access.on_call import PAGERDUTY, Rotation, is_provider_ref, parse_rotation
from access.policy import on_call_refs
from access.types import ApprovalPolicy, AuditEntry, PolicyContext
from activities.connectors.secrets import check_host, scrub, secret, secret_forms
from activities.notify.config import OnCallSettings, OpsgenieSettings, PagerDutySettings
from activities.notify.settings import stored_on_call
from store.audit_log import append_audit
from store.db import session_scope
from store.settings import Settings

log = logging.getLogger(__name__)

TIMEOUT = 3.0
"""Seconds a provider has to say who is on call (every page of it): a request is not held up longer."""
FAILURE_HOLD = 10.0
"""Seconds a failed answer stands (at most the ``cache``) before the provider is asked again: a provider that
is down costs one timeout per rotation every few seconds, not one per request."""
DEFAULT_CACHE = 60.0
PAGE = 100
MAX_PAGES = 20
"""At most this many pages of on-call entries (2,000): a rotation is a handful of people."""
USER_TTL = 3600.0
"""How long a PagerDuty user's email is kept (``GET /users/{id}``, when an on-call entry lacks it)."""
MAX_USERS = 10_000
PAGERDUTY_URL = "https://api.pagerduty.com"
PAGERDUTY_ACCEPT = "application/vnd.pagerduty+json;version=2"
OPSGENIE_URL = "https://api.opsgenie.com"
USER_AGENT = "Lapse-OnCall/1"
FAILED, RESTORED = "on_call.lookup_failed", "on_call.lookup_restored"


class OnCallUnavailable(Exception):
    """A provider did not say who is on call (down, slow, refused, not configured); the message quotes no secret."""


@dataclass(frozen=True)
class _Answer:
    at: float
    people: frozenset[str]
    error: str | None = None


_Key = tuple[str, str, str, str]
"""The app DB (its ``on_call`` section), the provider, ``schedule`` or ``service``, the id."""


class OnCallReader:
    """Everyone on call per rotation, read from the providers and kept for the configured ``cache``."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[_Key, _Answer] = {}
        self._fetching: dict[_Key, threading.Lock] = {}
        self._failing: set[_Key] = set()
        self._emails: dict[tuple[str, str], tuple[float, str]] = {}

    def on_call(self, settings: Settings, email: str, refs: Iterable[str]) -> list[str]:
        """The provider references among ``refs`` whose rotation has ``email`` on call now."""
        wanted = sorted({ref for ref in refs if is_provider_ref(ref)})
        if not wanted:
            return []
        with session_scope(settings.db_url, write=False) as session:
            config = stored_on_call(session)
        who = email.strip().lower()
        return [ref for ref in wanted if who in self.people(settings, config, ref, asking=who)]

    def people(
        self, settings: Settings, config: OnCallSettings | None, ref: str, *, asking: str = ""
    ) -> frozenset[str]:
        """Everyone on call now for ``ref`` (emails, lower case); nobody when the provider did not say."""
        try:
            rotation = parse_rotation(ref)
        except ValueError as error:  # the organisation file's check refuses these; a stored one matches nobody
            log.warning("on-call reference %r is malformed, so it matches nobody: %s", ref, error)
            return frozenset()
        key = (settings.db_url, rotation.provider, rotation.kind, rotation.id)
        cache = config.cache.total_seconds() if config is not None else DEFAULT_CACHE
        if (answer := self._fresh(key, cache)) is not None:
            return answer.people
        with self._lock:
            gate = self._fetching.setdefault(key, threading.Lock())
        with gate:  # one fetch per rotation at a time: the others take its answer
            if (answer := self._fresh(key, cache)) is not None:
                return answer.people
            try:
                answer = _Answer(self._clock(), self._fetch(config, rotation))
            except OnCallUnavailable as error:
                answer = _Answer(self._clock(), frozenset(), str(error))
            except Exception as error:  # fail closed whatever went wrong: the rule does not match, no 500
                log.exception("reading on-call rotation %s failed", ref)
                answer = _Answer(self._clock(), frozenset(), f"reading it failed: {type(error).__name__}")
            with self._lock:
                self._answers[key] = answer
        self._note_streak(settings, key, ref, answer, asking)
        return answer.people

    def _note_streak(self, settings: Settings, key: _Key, ref: str, answer: _Answer, asking: str) -> None:
        """Log and audit the first failure of a streak, and the answer that ends it; nothing in between."""
        with self._lock:
            began = answer.error is not None and key not in self._failing
            ended = answer.error is None and key in self._failing
            if answer.error is not None:
                self._failing.add(key)
            else:
                self._failing.discard(key)
        provider = key[1]
        if began:
            log.warning("on-call rotation %s could not be read, so it matches nobody: %s", ref, answer.error)
            effect = "rules naming it do not match until it answers; the next rule applies"
            details = {"provider": provider, "requester": asking, "effect": effect}
            _audit(
                settings,
                AuditEntry(actor="lapse", action=FAILED, target=ref, reason=answer.error or "", details=details),
            )
        elif ended:
            log.info("on-call rotation %s answers again", ref)
            _audit(settings, AuditEntry(actor="lapse", action=RESTORED, target=ref, details={"provider": provider}))

    def _fresh(self, key: _Key, cache: float) -> _Answer | None:
        with self._lock:
            answer = self._answers.get(key)
        if answer is None:
            return None
        stands = min(cache, FAILURE_HOLD) if answer.error is not None else cache
        return answer if self._clock() - answer.at < stands else None

    def _fetch(self, config: OnCallSettings | None, rotation: Rotation) -> frozenset[str]:
        if rotation.provider == PAGERDUTY:
            if config is None or config.pagerduty is None:
                raise OnCallUnavailable("the on_call section configures no pagerduty")
            return self._pagerduty(config.pagerduty, rotation)
        if config is None or config.opsgenie is None:
            raise OnCallUnavailable("the on_call section configures no opsgenie")
        return _opsgenie(config.opsgenie, rotation)

    # --- PagerDuty: REST API v2 -----------------------------------------------------------------------

    def _pagerduty(self, pd: PagerDutySettings, rotation: Rotation) -> frozenset[str]:
        token = _secret(
            lambda: secret(env=pd.token_env, file=pd.token_file, what="the PagerDuty API key", field="token")
        )
        headers = {"Authorization": f"Token token={token}", "Accept": PAGERDUTY_ACCEPT}
        with _Http.open("PagerDuty", pd.base_url, PAGERDUTY_URL, headers, token) as http:
            level: int | None = None
            if rotation.kind == "service":
                service = http.json(f"/services/{quote(rotation.id, safe='')}")
                policy = _dig(service, "service", "escalation_policy", "id", what="the service's escalation policy")
                params = [("escalation_policy_ids[]", str(policy))]
                level = 1  # whoever is paged first for the service
            else:
                params = [("schedule_ids[]", rotation.id)]
            people: set[str] = set()
            for entry in self._oncalls(http, params):
                if level is not None and entry.get("escalation_level") != level:
                    continue
                user: dict[str, Any] = entry["user"] if isinstance(entry.get("user"), dict) else {}
                email = user.get("email") or self._email_of(http, str(user.get("id") or ""))
                if isinstance(email, str) and email:
                    people.add(email.strip().lower())
            return frozenset(people)

    def _oncalls(self, http: _Http, params: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        """Every on-call entry now (``earliest``: one per user and level), page by page (``offset``/``more``)."""
        offset = 0
        for _ in range(MAX_PAGES):
            query = [
                *params,
                ("earliest", "true"),
                ("include[]", "users"),
                ("limit", str(PAGE)),
                ("offset", str(offset)),
            ]
            body = http.json("/oncalls", query)
            entries = body.get("oncalls")
            if not isinstance(entries, list):
                raise OnCallUnavailable("PagerDuty answered /oncalls without a list of oncalls")
            yield from (entry for entry in entries if isinstance(entry, dict))
            if not body.get("more") or not entries:
                return
            offset += len(entries)
        raise OnCallUnavailable(f"PagerDuty listed more than {MAX_PAGES} pages of on-call entries")

    def _email_of(self, http: _Http, user_id: str) -> str | None:
        if not user_id:
            return None
        key = (http.base, user_id)
        with self._lock:
            known = self._emails.get(key)
        if known is not None and self._clock() - known[0] < USER_TTL:
            return known[1]
        email = str(_dig(http.json(f"/users/{quote(user_id, safe='')}"), "user", "email", what="the user's email"))
        with self._lock:
            if len(self._emails) >= MAX_USERS:
                self._emails.clear()
            self._emails[key] = (self._clock(), email)
        return email


# --- Opsgenie: Schedule API v2 --------------------------------------------------------------------------


def _opsgenie(og: OpsgenieSettings, rotation: Rotation) -> frozenset[str]:
    key = _secret(lambda: secret(env=og.key_env, file=og.key_file, what="the Opsgenie API key", field="key"))
    with _Http.open("Opsgenie", og.base_url, OPSGENIE_URL, {"Authorization": f"GenieKey {key}"}, key) as http:
        body = http.json(
            f"/v2/schedules/{quote(rotation.id, safe='')}/on-calls",
            [("scheduleIdentifierType", "name"), ("flat", "true")],
        )
    recipients = _dig(body, "data", "onCallRecipients", what="the on-call recipients")
    if not isinstance(recipients, list):
        raise OnCallUnavailable("Opsgenie answered without a list of on-call recipients")
    return frozenset(r.strip().lower() for r in recipients if isinstance(r, str) and r.strip())


# --- one provider's HTTP, bounded by TIMEOUT in all ----------------------------------------------------


class _Http:
    """GETs to one provider, all within one ``TIMEOUT``; every failure an ``OnCallUnavailable`` with no secret."""

    def __init__(self, name: str, base: str, client: httpx.Client, secret_value: str) -> None:
        self.name, self.base, self._client = name, base, client
        self._secrets = secret_forms(secret_value)
        self._deadline = time.monotonic() + TIMEOUT

    @classmethod
    @contextmanager
    def open(
        cls, name: str, configured: Any, default: str, headers: dict[str, str], secret_value: str
    ) -> Iterator[_Http]:
        base = str(configured or default).rstrip("/")
        try:
            url = httpx.URL(base)
            check_host(url.host, field=f"on_call.{name.lower()}.base_url")
        except ConnectorError as error:
            raise OnCallUnavailable(str(error)) from None
        except (httpx.InvalidURL, TypeError):
            raise OnCallUnavailable(f"on_call.{name.lower()}.base_url is not a URL") from None
        headers = {"User-Agent": USER_AGENT, **headers}
        with httpx.Client(base_url=base, headers=headers, follow_redirects=False) as client:
            yield cls(name, base, client, secret_value)

    def json(self, path: str, params: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise OnCallUnavailable(f"{self.name} did not answer within {TIMEOUT:g} s")
        try:
            response = self._client.get(path, params=list(params), timeout=left)
        except httpx.TimeoutException:
            raise OnCallUnavailable(f"{self.name} did not answer within {TIMEOUT:g} s") from None
        except httpx.HTTPError as error:
            raise OnCallUnavailable(
                self._clean(f"{self.name} could not be reached: {type(error).__name__}: {error}")
            ) from None
        if not response.is_success:
            said = " ".join(response.text[:200].split())
            hint = " (check the API key)" if response.status_code in (401, 403) else ""
            raise OnCallUnavailable(
                self._clean(f"{self.name} answered {response.status_code} to GET {path}{hint}: {said}")
            )
        try:
            body = response.json()
        except ValueError:
            raise OnCallUnavailable(f"{self.name} answered GET {path} with something that is not JSON") from None
        if not isinstance(body, dict):
            raise OnCallUnavailable(f"{self.name} answered GET {path} with JSON that is not an object")
        return body

    def _clean(self, text: str) -> str:
        return scrub(text, self._secrets)


def _secret(resolve: Callable[[], str]) -> str:
    try:
        return resolve()
    except ConnectorError as error:  # a reference refused or not set: says which, never a value
        raise OnCallUnavailable(str(error)) from None


def _dig(body: Any, *path: str, what: str) -> Any:
    for part in path:
        if not isinstance(body, dict) or part not in body:
            raise OnCallUnavailable(f"the provider's answer lacks {what} ({'.'.join(path)})")
        body = body[part]
    return body


def _audit(settings: Settings, entry: AuditEntry) -> None:
    try:
        with session_scope(settings.db_url) as session:
            append_audit(session, [entry])
    except Exception:  # an on-call answer must not fail a request because the audit could not be written now
        log.exception("could not audit %s for %s", entry.action, entry.target)


READER = OnCallReader()
"""The process's on-call answers (the API's; tests may make their own)."""


def on_call_context(settings: Settings, context: PolicyContext, policy: ApprovalPolicy | None) -> PolicyContext:
    """``context`` with ``Requester.on_call`` set: the provider references of ``policy``'s rules (those the
    requester's groups leave in play) whose rotation has the requester on call now. No HTTP when none."""
    refs = on_call_refs(policy, context)
    if not refs:
        return context
    found = READER.on_call(settings, context.requester.email, refs)
    return context.model_copy(update={"requester": context.requester.model_copy(update={"on_call": found})})
