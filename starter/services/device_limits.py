"""The bounds on the CLI's sign-in through a browser (``starter.services.device``): how many sign-ins anonymous
callers may start and keep waiting, counted by network so that a few cannot hold everyone's ``lapse login`` at
429, and how many codes no sign-in has a person may try, so that guessing one (about 35 bits) is hopeless."""

from __future__ import annotations

import ipaddress
import math
from datetime import datetime, timedelta

from sqlmodel import Session, col, func, select

from access.errors import Refusal, RefusalKind
from access.types import AuditEntry
from store.audit_log import append_audit
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, DeviceSignIn, User

MAX_STARTED_PER_ADDRESS = 30
"""Sign-ins one network (an IPv4 address, an IPv6 /64) may start while one waits (``EXPIRES_IN``); behind a
reverse proxy that hides the clients' addresses, the whole organisation shares it."""
MAX_PENDING_PER_ADDRESS = 20
"""Sign-ins one network may have waiting at once: checked before ``MAX_PENDING``, so that it takes hundreds of
networks, not a few, to fill that and hold everyone else's ``lapse login`` at 429."""
MAX_PENDING = 5000
"""Sign-ins waiting at once, from everywhere: a bound on what anonymous callers can make the app DB hold."""
IPV6_NETWORK = 64
"""An IPv6 client is counted by its /64: one host may use any address in it (privacy addresses)."""
MAX_UNKNOWN_CODES = 10
"""Codes no sign-in has that one person may try in ``UNKNOWN_CODES_WINDOW``; then every look-up of theirs is a
429 for a while, found or not, so that no answer tells anything."""
UNKNOWN_CODES_WINDOW = timedelta(minutes=10)
UNKNOWN_CODE = "device_sign_in.unknown_code"
"""The audit action of a look-up of a code no sign-in has: what ``MAX_UNKNOWN_CODES`` counts (in the audit log,
so that every API process counts the same tries)."""


class TooMany(Refusal):
    """Too many of something for now: answered 429 with ``Retry-After`` (by the routes: no refusal kind is)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(RefusalKind.UNAVAILABLE, message, retry_after=retry_after)


class TooManySignIns(TooMany):
    """More sign-ins started than ``MAX_STARTED_PER_ADDRESS``, ``MAX_PENDING_PER_ADDRESS`` or ``MAX_PENDING``
    allow: try again later."""


class TooManyUnknownCodes(TooMany):
    """A person tried more codes no sign-in has than ``MAX_UNKNOWN_CODES`` allows: try again later."""


def network_of(address: str) -> str:
    """What the bounds count and the page compares ``address`` by: an IPv4 address itself, an IPv6 one's /64
    (an IPv4-mapped one as IPv4); anything else (``unknown``) as it is."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_NETWORK), strict=False))
    return str(parsed)


def check_started(session: Session, address: str, now: datetime, window: timedelta) -> None:
    """Refuse (``TooManySignIns``) one more sign-in from ``address``'s network, each waiting ``window``, past the
    bounds: the network's first, then everyone's."""
    network = network_of(address)
    recent = session.exec(  # those of the last window: at most MAX_PENDING, and those people decided
        select(DeviceSignIn.address, DeviceSignIn.state, DeviceSignIn.expires_at).where(
            col(DeviceSignIn.created_at) > now - window
        )
    ).all()
    mine = [(state, expires) for other, state, expires in recent if network_of(other) == network]
    if len(mine) >= MAX_STARTED_PER_ADDRESS:
        raise TooManySignIns(
            f"{len(mine)} sign-ins were started from {network} in the last {window.seconds // 60} minutes, the most "
            "allowed: try again in a minute",
            retry_after=60,
        )
    waiting_here = sum(1 for state, expires in mine if state == "pending" and expires > now)
    if waiting_here >= MAX_PENDING_PER_ADDRESS:
        raise TooManySignIns(
            f"{waiting_here} sign-ins started from {network} are waiting for approval, the most allowed from one "
            "address: approve or deny them, or try again in a minute",
            retry_after=60,
        )
    waiting = session.exec(
        select(func.count())
        .select_from(DeviceSignIn)
        .where(DeviceSignIn.state == "pending", col(DeviceSignIn.expires_at) > now)
    ).one()
    if waiting >= MAX_PENDING:
        raise TooManySignIns(f"{waiting} sign-ins are waiting for approval, the most allowed: try again later", 60)


def check_unknown_codes(session: Session, user: User, now: datetime) -> None:
    """Refuse (``TooManyUnknownCodes``) any look-up by ``user`` once they tried ``MAX_UNKNOWN_CODES`` codes no
    sign-in has in the window."""
    tried = session.exec(
        select(AuditEvent.at)
        .where(
            AuditEvent.actor == user.email,
            AuditEvent.action == UNKNOWN_CODE,
            col(AuditEvent.at) > now - UNKNOWN_CODES_WINDOW,
        )
        .order_by(col(AuditEvent.at))
    ).all()
    if len(tried) < MAX_UNKNOWN_CODES:
        return
    wait = max(1, math.ceil((tried[0] + UNKNOWN_CODES_WINDOW - now).total_seconds()))
    raise TooManyUnknownCodes(
        f"you tried {len(tried)} codes that no sign-in has in the last {UNKNOWN_CODES_WINDOW.seconds // 60} "
        f"minutes, the most allowed: check the code `lapse login` shows and try again in {wait} seconds",
        wait,
    )


def record_unknown_code(settings: Settings, user: User, now: datetime) -> None:
    """Audit a look-up by ``user`` of a code no sign-in has (never the code: it may be a typo of a real one)."""
    with session_scope(settings.db_url) as session:
        append_audit(session, [AuditEntry(actor=user.email, action=UNKNOWN_CODE, target="device:unknown", at=now)])
