"""Slack's interactions: the buttons on Lapse's Slack messages (``starter.services.slack_actions``).

Slack calls this, not a person: it is authenticated by Slack's signature over the body, not by a sign-in, and, not
being a browser's form, needs no CSRF token (``starter.api.security`` lets it through). It answers at once, as
Slack asks within three seconds; the decision follows in the background and replaces the message.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Header, Request, Response

from starter.api.deps import ClientDep, SettingsDep
from starter.api.problems import responses
from starter.services import slack_actions

router = APIRouter(prefix="/api/slack", tags=["slack"])


FORM = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["payload"],
                "properties": {"payload": {"type": "string", "description": "Slack's `block_actions` JSON."}},
            }
        }
    },
}


@router.post(
    "/interactions",
    response_class=Response,
    responses={
        200: {"description": "Taken: the click is carried out next."},
        **responses(413, 422),
        401: {
            **responses(401)[401],
            "description": "Not signed by Slack with the signing secret, or signed more than 5 minutes ago.",
        },
    },
    openapi_extra={"requestBody": FORM},
)
async def interactions(
    request: Request,
    settings: SettingsDep,
    client: ClientDep,
    x_slack_request_timestamp: str | None = Header(default=None, max_length=32),
    x_slack_signature: str | None = Header(default=None, max_length=128),
) -> Response:
    """A button clicked in Slack (a form whose `payload` field holds Slack's `block_actions` JSON), signed with the
    Slack app's signing secret: `X-Slack-Signature` is `v0=` and the HMAC-SHA256 of `v0:<timestamp>:<body>`. An
    unsigned request, a wrong signature or one made more than 5 minutes ago is a 401 (and audited). Answered at
    once with an empty 200; the approval, denial or extension is then made as the Lapse user with the clicker's
    email, and its outcome replaces the Slack message (a refusal is a reply only the clicker sees)."""
    body = await request.body()  # bounded by the app's body limit, like every request's
    click = await asyncio.to_thread(slack_actions.accept, settings, body, x_slack_request_timestamp, x_slack_signature)
    if click is not None:
        slack_actions.start(client, settings, click)
    return Response(status_code=200)
