"""The dispatcher: sends what the notification outbox holds, beside the worker, with retries.

Rows are queued in the transaction that recorded their event (``store.notifications.queue``); this loop claims
the due ones under a lease (so two workers never send the same row at once), hands each to its channel's
:class:`Sender`, and marks it sent, skipped, due again after a growing pause, or failed. A failure that outlasts
its retries is kept on the row (the request's page lists it) and audited (``notification.failed``), never
silent. The workflows wait for none of this: a chat outage delays a message, never a grant or a revoke.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlmodel import Session

from access import names
from access.notifications import Channel, Notice
from access.types import AuditEntry
from activities import metrics
from activities.notify import DeliveryError, Outgoing, Sender, Sent
from activities.notify.config import NotificationSettings
from activities.notify.expiry import SCAN_EVERY, warn_expiring
from activities.notify.messages import links_for
from activities.notify.settings import stored_settings
from store import notifications as outbox
from store.audit_log import append_audit
from store.db import session_scope
from store.settings import Settings
from store.tables import AccessRequest, Notification

log = logging.getLogger(__name__)

KEEP_SENT = timedelta(days=30)
"""How long a sent or skipped row is kept (a request's page lists who was told what); failed rows are kept."""
PURGE_EVERY = timedelta(hours=1)

SenderKey = tuple[Channel, str]
"""A sender's channel and destination name (empty: the channel's personal messages)."""


@dataclass(frozen=True)
class Backoff:
    """How long a failed send waits before the next try, and when Lapse gives up on it."""

    first: timedelta = timedelta(seconds=1)
    most: timedelta = timedelta(minutes=5)
    attempts: int = 24
    """Tries before giving up: with the pauses doubling from 1 s to 5 min, a little over an hour."""
    give_up_after: timedelta | None = timedelta(hours=1, minutes=15)
    """Give up sooner if a notice has been failing this long since it was queued."""

    def pause(self, attempts: int, retry_after: float | None = None) -> timedelta:
        """The pause after ``attempts`` failed tries; the channel's own ``Retry-After`` when it gave one."""
        if retry_after is not None:
            return min(timedelta(seconds=max(retry_after, 0)), self.most)
        doublings: int = min(max(attempts - 1, 0), 30)
        return min(self.first * (1 << doublings), self.most)


def build_senders(
    settings: NotificationSettings, db_url: str, *, broken: dict[SenderKey, str] | None = None
) -> dict[SenderKey, Sender]:
    """One sender per configured channel and destination. A sender that cannot be made (its module not
    installed, its configuration refused) is left out and said in ``broken``: its rows are retried, then fail
    visibly. Channel modules are imported here, lazily: each is its own, and a worker needs only the used ones."""
    senders: dict[SenderKey, Sender] = {}
    wanted: list[tuple[SenderKey, str, str, tuple[Any, ...]]] = []
    if settings.email is not None:
        wanted.append(((Channel.EMAIL, ""), "email", "EmailSender", (settings.email,)))
    if settings.slack is not None:
        wanted.append(((Channel.SLACK, ""), "slack", "SlackSender", (settings.slack, db_url)))
    wanted += [((Channel.TEAMS, w.name), "teams", "TeamsSender", (w,)) for w in settings.teams]
    wanted += [((Channel.WEBHOOK, w.name), "webhook", "WebhookSender", (w,)) for w in settings.webhooks]
    for key, module, name, args in wanted:
        try:
            factory = getattr(importlib.import_module(f"activities.notify.{module}"), name)
            senders[key] = factory(*args)
        except Exception as error:  # one channel's trouble stops none of the others
            why = f"the {key[0].value} sender could not be set up: {type(error).__name__}: {error}"
            log.error("%s", why)
            if broken is not None:
                broken[key] = why
    return senders


MARK_WITHIN = 0.02
"""Seconds a finished send waits for others to be recorded with it in one transaction."""


CLAIM_WITHIN = 0.02
"""Seconds a wake waits for more commits that queue rows, so that one claim takes them all."""


TRIED = "tried"
"""A mark's state for a failed try: the row is due again after its pause, or given up (``Dispatcher._tried``)."""


class _Mark(NamedTuple):
    row: Notification
    state: str
    """``sent``, ``skipped``, ``failed`` (given up at once) or ``TRIED``."""
    why: str | None
    ref: dict[str, Any] | None
    retry_after: float | None = None
    permanent: bool = False


class Dispatcher:
    """Claims due outbox rows and sends them, ``concurrency`` at a time, until :meth:`stop`.

    ``senders`` fixes the senders (tests); otherwise they are built from the stored ``notifications`` section
    and rebuilt when it changes. :meth:`wake` (from any thread) ends the wait between polls: rows queued by this
    process are sent at once, rows queued elsewhere within ``poll`` seconds.
    """

    def __init__(
        self,
        db_url: str,
        settings: Settings,
        senders: Mapping[SenderKey, Sender] | None = None,
        *,
        backoff: Backoff | None = None,
        concurrency: int = 16,
        poll: float = 0.2,
        lease: timedelta = timedelta(minutes=2),
        send_timeout: float = 60.0,
        scan_every: timedelta = SCAN_EVERY,
        wake_followed: bool = True,
    ) -> None:
        self._db_url = db_url
        self._base_url = settings.external_url
        self._fixed = senders is not None
        self._senders: dict[SenderKey, Sender] = dict(senders or {})
        self._broken: dict[SenderKey, str] = {}
        self._version: datetime | None = None
        self._checked_at: datetime | None = None
        self._purged_at: datetime | None = None
        self.backoff = backoff or Backoff()
        self._concurrency = concurrency
        self._poll = poll
        self._lease = lease
        self._send_timeout = send_timeout
        self._scan_every = scan_every
        self._wake_followed = wake_followed
        """Whether a finished send that a person's next message waited for wakes the loop (one read per batch
        of marks); a dispatcher that polls every few tens of milliseconds (``lapse notifier``) need not."""
        self._marks: list[_Mark] = []
        self._marking: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken: asyncio.Event | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # --- running -------------------------------------------------------------------------------

    async def __aenter__(self) -> Dispatcher:
        self._task = asyncio.create_task(self.run(), name="lapse-notification-dispatcher")
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stop()
        if self._task is not None:
            await self._task

    def wake(self) -> None:
        """Look for due rows now; safe from any thread."""
        loop, woken = self._loop, self._woken
        if loop is not None and woken is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(woken.set)

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    async def run(self) -> None:
        """Send until stopped; sends under way are finished (or left to their lease) before it returns."""
        self._loop, self._woken = asyncio.get_running_loop(), asyncio.Event()
        self._stopping = False
        unlisten = outbox.listen(self.wake)
        in_flight: set[asyncio.Task[None]] = set()
        woke = False
        scanning = asyncio.create_task(self._scan_for_warnings(), name="lapse-expiry-warning-scan")
        try:
            while not self._stopping:
                self._woken.clear()  # before claiming: a wake while claiming means look again
                room = self._concurrency - len(in_flight)
                try:
                    await self._refresh_senders()
                    await self._purge_old()
                    rows = await asyncio.to_thread(self._claim, room, look_first=not woke) if room > 0 else []
                except Exception:
                    log.exception("the notification dispatcher could not read the outbox; trying again")
                    rows = []
                for row in rows:
                    task = asyncio.create_task(self._deliver(row))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                # Until woken (rows queued here, or a row finished that a person's next one waited for), the next
                # poll, or, only when more rows may be due than there was room for, a send finishing: a claim per
                # finished send was most of an idle-ish dispatcher's cost.
                more = room <= 0 or len(rows) == room
                woken = asyncio.ensure_future(self._woken.wait())
                waits = {woken, *in_flight} if more else {woken}
                await asyncio.wait(waits, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
                woke = woken.done()
                woken.cancel()
                if woke and not self._stopping:
                    # Woken by a commit that queued rows: the commits of the next moments join its claim, so a busy
                    # stack claims once for several of them.
                    await asyncio.sleep(CLAIM_WITHIN)
        finally:
            unlisten()
            scanning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scanning
            if in_flight:
                await asyncio.wait(in_flight, timeout=self._send_timeout)
            await self._close_senders()
            self._woken = None

    async def _scan_for_warnings(self) -> None:
        """Every ``SCAN_EVERY``, warn the holders of grants ending soon (``store.expiry_warnings``): beside the
        sending, so a burst of warnings is queued while earlier rows go out."""
        while not self._stopping:
            try:
                await asyncio.to_thread(warn_expiring, self._db_url)
            except Exception:
                log.exception("the expiring-soon scan failed; trying again")
            await asyncio.sleep(self._scan_every.total_seconds())

    async def drain(self) -> int:
        """Send every row due now, once each, and return how many were handled (for tests and ``lapse``
        commands that run no loop)."""
        await self._refresh_senders()
        handled = 0
        while rows := await asyncio.to_thread(self._claim, self._concurrency):
            await asyncio.gather(*(self._deliver(row) for row in rows))
            handled += len(rows)
        return handled

    async def _purge_old(self) -> None:
        """Once an hour, forget rows sent or skipped more than ``KEEP_SENT`` ago (a chunk at a time)."""
        now = datetime.now(UTC)
        if self._purged_at is not None and now - self._purged_at < PURGE_EVERY:
            return
        self._purged_at = now

        def purge() -> int:
            with session_scope(self._db_url) as session:
                return outbox.purge(session, before=now - KEEP_SENT)

        if await asyncio.to_thread(purge):
            self._purged_at = now - PURGE_EVERY + timedelta(seconds=10)  # more left, maybe: again soon

    # --- senders -------------------------------------------------------------------------------

    async def _refresh_senders(self) -> None:
        """Rebuild the senders when the stored section changed (read at most once a second)."""
        if self._fixed:
            return
        now = datetime.now(UTC)
        if self._checked_at is not None and now - self._checked_at < timedelta(seconds=1):
            return
        self._checked_at = now
        version, settings = await asyncio.to_thread(self._stored, self._version)
        if version == self._version:
            return
        broken: dict[SenderKey, str] = {}
        senders = build_senders(settings, self._db_url, broken=broken) if settings is not None else {}
        await self._close_senders()
        self._senders, self._broken, self._version = senders, broken, version

    def _stored(self, known: datetime | None) -> tuple[datetime | None, NotificationSettings | None]:
        """The section's version, and the section itself only when that is not the ``known`` one."""
        with session_scope(self._db_url, write=False) as session:
            version = outbox.section_version(session, outbox.NOTIFICATIONS)
            if known is not None and version == known:
                return version, None
            return version, stored_settings(session)

    async def _close_senders(self) -> None:
        for sender in {id(s): s for s in self._senders.values()}.values():
            try:
                await sender.close()
            except Exception:
                log.exception("closing the %s sender failed", sender.channel)
        if not self._fixed:
            self._senders = {}

    def _sender(self, channel: Channel, target: str) -> Sender | None:
        return self._senders.get((channel, target)) or self._senders.get((channel, ""))

    # --- one row -------------------------------------------------------------------------------

    def _claim(self, limit: int, *, look_first: bool = True) -> list[tuple[Notification, list[dict[str, Any]]]]:
        """Claim up to ``limit`` due rows, each with what its channel made of the person's earlier messages about
        the same subject where its sender reads them. ``look_first``: read whether any row is due before taking
        the write lock (a poll, which mostly finds none; a wake from a commit that queued rows need not)."""
        now = datetime.now(UTC)
        if look_first:
            with session_scope(self._db_url, write=False) as session:
                if not outbox.any_due(session, now=now):
                    return []  # polls of an idle outbox only read: SQLite's one writer is the workflows' bookkeeping
        with session_scope(self._db_url) as session:
            rows = outbox.claim_due(session, now=now, lease=self._lease, limit=limit)
            previous = outbox.previous_refs(session, [row for row in rows if self._reads_previous(row)])
        return [(row, previous.get(row.id or 0, [])) for row in rows]

    def _reads_previous(self, row: Notification) -> bool:
        try:
            channel = Channel(row.channel)
        except ValueError:  # queued by another version of Lapse: its send fails visibly, not this claim
            return False
        sender = self._sender(channel, row.target)
        details = row.notice.get("details") if isinstance(row.notice, dict) else None
        return sender is not None and sender.reads_previous(row.kind, details if isinstance(details, dict) else {})

    async def _deliver(self, claimed: tuple[Notification, list[dict[str, Any]]]) -> None:
        row, previous = claimed
        assert row.id is not None
        try:
            channel = Channel(row.channel)
            notice = Notice.model_validate(row.notice)
        except ValueError as error:  # queued by another version of Lapse, and unreadable to this one
            await self._mark(row, "failed", f"the notice cannot be read: {error}", None)
            return
        sender = self._sender(channel, row.target)
        if sender is None:
            why = self._broken.get((channel, row.target)) or self._broken.get((channel, ""))
            if why is None:
                await self._mark(row, "skipped", f"{channel.value} is no longer configured", None)
            else:
                await self._mark(row, TRIED, why, None)
            return
        outgoing = Outgoing(
            id=row.id,
            channel=channel,
            target=row.target,
            recipient=row.recipient,
            notice=notice,
            links=links_for(notice, self._base_url),
            key=row.key,
            previous=previous,
        )
        try:
            sent: Sent = await asyncio.wait_for(sender.send(outgoing), timeout=self._send_timeout)
        except DeliveryError as error:
            await self._mark(row, TRIED, str(error), None, error.retry_after, error.permanent)
            return
        except TimeoutError:
            await self._mark(row, TRIED, f"no answer within {self._send_timeout:g} s", None)
            return
        except Exception as error:  # a sender's bug: its message may hold a secret, so only its kind is kept
            log.warning("the %s sender raised %s for notification %s", channel.value, type(error).__name__, row.id)
            await self._mark(row, TRIED, f"the sender failed ({type(error).__name__})", None)
            return
        if sent.skipped is not None:
            await self._mark(row, "skipped", sent.skipped, None)
        else:
            await self._mark(row, "sent", None, sent.ref)

    async def _mark(
        self,
        row: Notification,
        state: str,
        why: str | None,
        ref: dict[str, Any] | None,
        retry_after: float | None = None,
        permanent: bool = False,
    ) -> None:
        """Record how a send went, with the others that finish within ``MARK_WITHIN``: one transaction for them
        all, since each takes the SQLite writer lock the workflows' bookkeeping waits on. Failed tries too: in
        a channel's outage every row fails at once, and one transaction per failure would crowd the grants'
        bookkeeping out of the database exactly then. Returns once written."""
        self._marks.append(_Mark(row, state, why, ref, retry_after, permanent))
        if self._marking is None:
            self._marking = asyncio.ensure_future(self._write_marks_soon())
        await asyncio.shield(self._marking)

    async def _write_marks_soon(self) -> None:
        await asyncio.sleep(MARK_WITHIN)
        marks, self._marks, self._marking = self._marks, [], None
        try:
            await asyncio.to_thread(self._finish_all, marks)
        except Exception:
            log.exception("recording %d finished sends together failed; recording each alone", len(marks))
            for mark in marks:  # one bad mark costs its own row a resend after its lease, not the others'
                try:
                    await asyncio.to_thread(self._finish_all, [mark])
                except Exception:
                    log.exception(
                        "recording notification %s as %s failed; it is sent again after its lease",
                        mark.row.id,
                        mark.state,
                    )

    def _finish_all(self, marks: list[_Mark]) -> None:
        now = datetime.now(UTC)
        outcomes: list[tuple[str, str]] = []
        sent: list[tuple[int, dict[str, Any]]] = []
        skipped: list[tuple[int, str]] = []
        with session_scope(self._db_url) as session:
            for mark in marks:
                row = mark.row
                assert row.id is not None
                if mark.state == "sent":
                    sent.append((row.id, mark.ref or {}))
                elif mark.state == "skipped":
                    skipped.append((row.id, mark.why or ""))
                elif mark.state == TRIED:
                    outcomes.append((row.channel, self._tried(session, mark, now)))
                    continue
                else:
                    self._give_up(session, row, mark.why or "failed", row.attempts + 1, now)
                outcomes.append((row.channel, mark.state))
            outbox.mark_done(session, sent=sent, skipped=skipped, now=now)
        for channel, outcome in outcomes:  # counted once written
            metrics.notification_handled(channel, outcome)
        if self._wake_followed:
            finished = [mark.row for mark, (_, outcome) in zip(marks, outcomes, strict=True) if outcome != "retry"]
            self._wake_if_followed(finished)

    def _wake_if_followed(self, finished: list[Notification]) -> None:
        """Wake the loop if a person's next message about the same request waited for one of ``finished`` (the
        loop claims again on a wake, a poll, or a full claim's sends finishing). Read after the marks' commit:
        a failing read only wakes it anyway, and never undoes what was written."""
        try:
            with session_scope(self._db_url, write=False) as session:
                followed = outbox.followed(session, finished)
        except Exception:
            log.exception("could not read whether finished notifications had others waiting; looking anyway")
            followed = True
        if followed:
            self.wake()

    def _tried(self, session: Session, mark: _Mark, now: datetime) -> str:
        """A failed try: due again after a pause (``retry``), or given up (``failed``: recorded and audited)."""
        row, why = mark.row, mark.why or "failed"
        assert row.id is not None
        attempts = row.attempts + 1
        backoff = self.backoff
        too_long = backoff.give_up_after is not None and now - row.created_at >= backoff.give_up_after
        if mark.permanent or attempts >= backoff.attempts or too_long:
            self._give_up(session, row, why, attempts, now)
            return "failed"
        outbox.mark_retry(
            session, row.id, why=why, attempts=attempts, due_at=now + backoff.pause(attempts, mark.retry_after)
        )
        return "retry"

    def _give_up(self, session: Session, row: Notification, why: str, attempts: int, now: datetime) -> None:
        assert row.id is not None
        if not outbox.mark_failed(session, row.id, why=why, attempts=attempts, now=now):
            return  # finished meanwhile (another dispatcher, after this one's lease): audited once, there
        log.warning("gave up on notification %s (%s to %s): %s", row.id, row.kind, row.channel, why)
        about_request = session.get(AccessRequest, row.subject) is not None
        target = names.request_workflow_id(row.subject) if about_request else row.subject
        where = row.target or row.recipient or ""
        append_audit(
            session,
            [
                AuditEntry(
                    actor="lapse",
                    action="notification.failed",
                    target=target,
                    reason=why[: outbox.MAX_ERROR],
                    details={
                        "channel": row.channel,
                        "to": where,
                        "kind": row.kind,
                        "attempts": attempts,
                        "notification": row.id,
                    },
                    at=now,
                )
            ],
        )
