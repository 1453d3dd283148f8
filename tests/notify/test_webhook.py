"""Webhooks to a real local HTTP receiver: the signature as the README documents it, the payload, and failures."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import httpx
import pytest

from access.notifications import Channel, NoticeKind
from activities.notify import DeliveryError
from activities.notify.config import WebhookTarget
from activities.notify.webhook import MAX_STRING, WebhookSender, verify
from tests.notify.receivers import HOSTILE, HttpReceiver, http_receiver, notice, outgoing, secrets_dir

__all__ = ["http_receiver", "secrets_dir"]  # fixtures
pytestmark = pytest.mark.usefixtures("secrets_dir")

SECRET = "whsec-test-0123456789"


@pytest.fixture(autouse=True)
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPSE_SIEM_SECRET", SECRET)


def target(receiver: HttpReceiver, **more: object) -> WebhookTarget:
    return WebhookTarget.model_validate(
        {"name": "siem", "url": receiver.url, "secret_env": "LAPSE_SIEM_SECRET", **more}
    )


def documented_check(secret: str, header: str, body: bytes, *, now: float, tolerance: float = 300) -> bool:
    """The receiver's check exactly as the README says it, written again here rather than imported."""
    fields = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(fields["t"])
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(now - timestamp) <= tolerance and hmac.compare_digest(expected, fields["v1"])


async def test_a_notice_arrives_signed_with_its_event_and_delivery_headers(http_receiver: HttpReceiver) -> None:
    told = notice(NoticeKind.DECIDED, recipient=None, approved=True, comment="ok", workflow="standard")
    out = outgoing(told, channel=Channel.WEBHOOK, target="siem")

    sent = await WebhookSender(target(http_receiver)).send(out)

    assert sent.ref == {"status": 200}
    (got,) = http_receiver.received
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-lapse-event"] == "lapse.decided"
    assert got.headers["x-lapse-delivery"] == out.key
    assert documented_check(SECRET, got.headers["x-lapse-signature"], got.body, now=time.time())
    assert verify(SECRET, got.headers["x-lapse-signature"], got.body)
    assert not documented_check("another-secret", got.headers["x-lapse-signature"], got.body, now=time.time())
    assert not verify("another-secret", got.headers["x-lapse-signature"], got.body)
    assert not documented_check(SECRET, got.headers["x-lapse-signature"], got.body + b" ", now=time.time())
    assert not documented_check(SECRET, got.headers["x-lapse-signature"], got.body, now=time.time() + 3600)
    body = got.json()
    assert body == {
        "version": 1,
        "id": out.key,
        "event": "lapse.decided",
        "kind": "decided",
        "action": "step.opened",
        "subject": "req-0123456789abcdef",
        "role": "ledger/payments-api/deploy",
        "requester": "alan@example.com",
        "actor": "alan@example.com",
        "recipient": None,
        "text": "Alan Turing asks for ledger/payments-api/deploy for 1 hour.",
        "occurred_at": "2026-12-01T09:30:00+00:00",
        "details": {"approved": True, "comment": "ok", "workflow": "standard"},
        "links": {
            "request": "https://lapse.example.com/requests/req-0123456789abcdef",
            "approvals": "https://lapse.example.com/approvals",
            "extend": "https://lapse.example.com/requests/req-0123456789abcdef#extend",
        },
    }


async def test_a_wrong_secret_signs_something_the_receiver_refuses(
    http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAPSE_SIEM_SECRET", "not-the-shared-secret")
    await WebhookSender(target(http_receiver)).send(outgoing(notice(recipient=None), channel=Channel.WEBHOOK))
    (got,) = http_receiver.received
    assert not documented_check(SECRET, got.headers["x-lapse-signature"], got.body, now=time.time())


async def test_hostile_text_is_valid_json_and_bounded(http_receiver: HttpReceiver) -> None:
    await WebhookSender(target(http_receiver)).send(
        outgoing(notice(NoticeKind.DECIDED, recipient=None, comment=HOSTILE), channel=Channel.WEBHOOK)
    )
    body = http_receiver.received[0].json()
    comment = body["details"]["comment"]
    assert len(comment) == MAX_STRING and comment.endswith("…")
    assert comment.startswith(HOSTILE[:100]), "machines get people's words as written; JSON escapes them"
    assert len(http_receiver.received[0].body) < 3 * MAX_STRING


@pytest.mark.parametrize(
    ("status", "headers", "permanent", "retry_after"),
    [
        (500, {}, False, None),
        (503, {"Retry-After": "7"}, False, 7.0),
        (429, {"Retry-After": "30"}, False, 30.0),
        (408, {}, False, None),
        (400, {}, True, None),
        (404, {}, True, None),
        (301, {"Location": "https://elsewhere.example/hook"}, True, None),
    ],
)
async def test_answers_other_than_2xx_are_retried_or_permanent(
    http_receiver: HttpReceiver, status: int, headers: dict[str, str], permanent: bool, retry_after: float | None
) -> None:
    http_receiver.status, http_receiver.answer_headers = status, headers
    with pytest.raises(DeliveryError) as failed:
        await WebhookSender(target(http_receiver)).send(outgoing(notice(recipient=None), channel=Channel.WEBHOOK))
    assert failed.value.permanent is permanent
    assert failed.value.retry_after == retry_after
    assert str(status) in str(failed.value)
    assert len(http_receiver.received) == 1, "a redirect is not followed"


async def test_a_slow_or_absent_receiver_is_retried(http_receiver: HttpReceiver) -> None:
    http_receiver.delay = 2
    async with httpx.AsyncClient(timeout=0.3) as impatient:
        with pytest.raises(DeliveryError) as slow:
            await WebhookSender(target(http_receiver), http=impatient).send(
                outgoing(notice(recipient=None), channel=Channel.WEBHOOK)
            )
    assert not slow.value.permanent and "in time" in str(slow.value)
    nobody = target(http_receiver, url="http://127.0.0.1:9/hook")
    with pytest.raises(DeliveryError) as absent:
        await WebhookSender(nobody).send(outgoing(notice(recipient=None), channel=Channel.WEBHOOK))
    assert not absent.value.permanent


async def test_a_secret_missing_on_the_worker_is_permanent_and_named(
    http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch, secrets_dir: Path
) -> None:
    monkeypatch.delenv("LAPSE_SIEM_SECRET")
    with pytest.raises(DeliveryError) as missing:
        await WebhookSender(target(http_receiver)).send(outgoing(notice(recipient=None), channel=Channel.WEBHOOK))
    assert missing.value.permanent and "LAPSE_SIEM_SECRET" in str(missing.value)
    assert http_receiver.received == []
    (secrets_dir / "siem").write_text(SECRET)
    await WebhookSender(target(http_receiver, secret_env=None, secret_file="siem")).send(
        outgoing(notice(recipient=None), channel=Channel.WEBHOOK)
    )
    got = http_receiver.received[0]
    assert documented_check(SECRET, got.headers["x-lapse-signature"], got.body, now=time.time())
    assert json.loads(got.body)["event"] == "lapse.decision_needed"
