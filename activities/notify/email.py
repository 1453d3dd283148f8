"""Email: each notice to its person as plain text and HTML, through an SMTP server (``aiosmtplib``).

A message says what happened and links to Lapse's pages; a link never decides by itself (the page does, with
any fresh sign-in the policy asks for). The HTML is rendered with autoescaping: a comment is somebody's input.
Messages about one request to one person thread in a mail client: each names the earlier ones it knows of
(``Outgoing.previous``) and the request's thread in ``In-Reply-To`` / ``References``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

import aiosmtplib
import jinja2

from access.connectors import ConnectorError
from access.notifications import Channel, NoticeKind
from activities.connectors.secrets import check_host, scrub, secret, secret_forms
from activities.notify import DeliveryError, Outgoing, Sent
from activities.notify.config import EmailSettings
from activities.notify.messages import Message, message_for

TIMEOUT = 20.0
CONNECTIONS = 4
"""At most this many SMTP connections at once: relays limit them per client, and one message is quick."""
MAX_REFERENCES = 10
"""Threading needs the first and the latest messages; a long request keeps only the last few between."""
_DECIDING = (NoticeKind.DECISION_NEEDED, NoticeKind.REMINDER, NoticeKind.ESCALATED)

_HTML = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ m.title }}</title></head>
<body style="font-family: system-ui, sans-serif; color: #1b1b1b; max-width: 40em">
<h1 style="font-size: 1.2em">{{ m.title }}</h1>
<p>{{ m.text }}</p>
{% if m.fields %}<table style="border-collapse: collapse">
{% for label, value in m.fields %}<tr><th scope="row" style="text-align: left; padding: 2px 12px 2px 0; \
vertical-align: top">{{ label }}</th><td style="padding: 2px 0">{{ value }}</td></tr>
{% endfor %}</table>{% endif %}
<p><a href="{{ m.action_url }}" style="display: inline-block; padding: 8px 16px; background: #1d5fbf; \
color: #fff; border-radius: 4px; text-decoration: none">{{ m.action }}</a>
{% if approvals %} &nbsp; <a href="{{ approvals }}">Your approvals</a>{% endif %}</p>
<p style="color: #666; font-size: 0.85em">Sent by Lapse. Links open Lapse, where you decide or extend: \
a link never does it by itself.</p>
</body></html>
"""
)


def compose(outgoing: Outgoing, settings: EmailSettings) -> EmailMessage:
    """The message for ``outgoing``: plain text and HTML alternatives, threaded with the request's others."""
    recipient = _address(outgoing.recipient or "")
    message = message_for(outgoing.notice, outgoing.links)
    approvals = outgoing.links.approvals if outgoing.notice.kind in _DECIDING else None
    domain = _domain(settings.sender)
    mail = EmailMessage()
    mail["Subject"] = message.title
    mail["From"] = settings.sender
    mail["To"] = recipient
    mail["Date"] = format_datetime(outgoing.notice.at)
    mail["Message-ID"] = message_id(outgoing.key, domain)
    earlier = [ref["message_id"] for ref in outgoing.previous if isinstance(ref.get("message_id"), str)]
    thread = [thread_id(outgoing.notice.subject, recipient, domain), *earlier]
    if len(thread) > MAX_REFERENCES:
        thread = thread[:1] + thread[-(MAX_REFERENCES - 1) :]
    mail["In-Reply-To"] = thread[-1]
    mail["References"] = " ".join(thread)
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies to a robot
    mail["X-Lapse-Event"] = f"lapse.{outgoing.notice.kind.value}"
    mail.set_content(text_body(message, approvals))
    mail.add_alternative(_HTML.render(m=message, approvals=approvals), subtype="html")
    return mail


def text_body(message: Message, approvals: str | None) -> str:
    """The plain-text alternative: the sentence, the fields, then the links, each on its own line."""
    lines = [message.text, ""]
    lines += [f"{label}: {value}" for label, value in message.fields]
    lines += ["", f"{message.action}: {message.action_url}"]
    if approvals:
        lines.append(f"Your approvals: {approvals}")
    lines += ["", "-- ", "Sent by Lapse. Links open Lapse, where you decide or extend: a link never does it by itself."]
    return "\n".join(lines) + "\n"


def message_id(key: str, domain: str) -> str:
    """A Message-ID made from the notice's key: the same for a message sent again, unique otherwise."""
    return f"<lapse.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def thread_id(subject: str, recipient: str, domain: str) -> str:
    """The Message-ID every message about ``subject`` to ``recipient`` refers to: their thread in a mail
    client, even when no earlier message is known (sent at the same time, or before a restart)."""
    digest = hashlib.sha256(f"{subject}\0{recipient.lower()}".encode()).hexdigest()[:32]
    return f"<lapse.thread.{digest}@{domain}>"


class EmailSender:
    """Sends each notice to its person through the configured SMTP server."""

    channel = Channel.EMAIL

    def __init__(self, settings: EmailSettings, *, timeout: float = TIMEOUT) -> None:
        self.settings = settings
        self.timeout = timeout
        self._connections = asyncio.Semaphore(CONNECTIONS)

    def reads_previous(self, kind: str, details: Mapping[str, Any]) -> bool:
        return True  # every message about a request joins its thread (In-Reply-To, References)

    async def send(self, outgoing: Outgoing) -> Sent:
        if not outgoing.recipient:
            return Sent(skipped="email goes to a person, and this notice has none")
        settings = self.settings
        password: str | None = None
        try:
            check_host(settings.host, field="email host")
            if settings.username is not None:
                password = secret(
                    env=settings.password_env, file=settings.password_file, what="the SMTP password", field="password"
                )
        except ConnectorError as error:
            raise DeliveryError(str(error), permanent=True) from None
        try:
            mail = compose(outgoing, settings)
        except (ValueError, TypeError) as error:  # a header the email library refuses (the configured sender)
            raise DeliveryError(f"cannot make the message: {error}", permanent=True) from None
        try:
            async with self._connections:
                await aiosmtplib.send(
                    mail,
                    hostname=settings.host,
                    port=settings.port,
                    username=settings.username,
                    password=password,
                    use_tls=settings.security == "tls",
                    start_tls=settings.security == "starttls",
                    timeout=self.timeout,
                )
        except aiosmtplib.SMTPException as error:
            raise _failure(error, settings, password) from None
        except OSError as error:  # refused, unreachable, TLS failures below aiosmtplib
            raise DeliveryError(_clean(f"SMTP server {settings.host}:{settings.port}: {error}", password)) from None
        return Sent(ref={"message_id": mail["Message-ID"]})

    async def close(self) -> None:
        return None


def _failure(error: aiosmtplib.SMTPException, settings: EmailSettings, password: str | None) -> DeliveryError:
    """A 5xx answer is permanent (a refused recipient, a refused login: retrying does not change it), and so is
    a server without what ``security`` asks for (STARTTLS); a 4xx (greylisting, a full queue), a timeout or a
    dropped connection is tried again."""
    codes = [getattr(error, "code", None)]
    codes += [getattr(each, "code", None) for each in getattr(error, "recipients", [])]
    permanent = isinstance(error, aiosmtplib.SMTPNotSupported) or any(
        isinstance(code, int) and 500 <= code < 600 for code in codes
    )
    said = _clean(f"SMTP server {settings.host}:{settings.port}: {type(error).__name__}: {error}", password)
    return DeliveryError(said[:500], permanent=permanent)


def _address(recipient: str) -> str:
    """``recipient`` if it is one plain email address; a permanent DeliveryError if not (a header must not
    carry anything else)."""
    name, address = parseaddr(recipient)
    if name or address != recipient or "@" not in address or any(c in address for c in "\r\n\t ,;<>"):
        raise DeliveryError("the recipient is not an email address", permanent=True)
    try:
        Address(addr_spec=address)
    except (ValueError, IndexError):
        raise DeliveryError("the recipient is not an email address", permanent=True) from None
    return address


def _domain(sender: str) -> str:
    """The sender's domain, which Message-IDs use (so they are unique to this sender)."""
    domain = parseaddr(sender)[1].rpartition("@")[2].strip().lower()
    return domain if domain and all(c.isalnum() or c in ".-" for c in domain) else "lapse.invalid"


def _clean(text: str, password: str | None) -> str:
    return scrub(text, secret_forms(password)) if password else text
