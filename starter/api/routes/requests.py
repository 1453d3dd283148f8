"""Access requests: ask for a role, decide, give back, revoke, extend, and read their status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from access.durations import Duration
from access.requests import CredentialsShown, RequestState, RequestStatus
from access.types import Model
from starter.api.deps import CallerSignIn, ClientDep, CurrentUser, SettingsDep
from starter.api.problems import responses
from starter.services import credentials, grants, requests
from starter.services.fields import FreeText, Name, RolePath

router = APIRouter(prefix="/api/requests", tags=["requests"], responses=responses(401, 413, 422))

RequestId = Annotated[Name, Path(description="The request's id.")]


class RequestCreate(Model):
    role: RolePath
    """``integration/resource/role``, as listed by ``GET /api/catalog``."""
    duration: Duration
    """ISO 8601 (``PT2H``) or seconds; counted from when access is granted."""
    justification: FreeText = ""
    emergency: bool = False
    """Break-glass: granted at once without approval, where the role allows it (a reason required, the duration
    capped), then reviewed by the approvers skipped; see ``POST /api/requests/{id}/break-glass-review``."""


class Comment(Model):
    comment: FreeText = ""


class Extension(Model):
    duration: Duration
    """How much longer, ISO 8601 or seconds."""
    justification: FreeText = ""


@router.post("", status_code=201, responses=responses(403, 404, 409, 429, 503))
async def create_request(
    body: RequestCreate, user: CurrentUser, sign_in: CallerSignIn, settings: SettingsDep, client: ClientDep
) -> RequestStatus:
    """Request a role for a while. Refused at once (4xx, nothing started) if the policy does not allow it, or if
    the policy would approve it at once under a workflow that asks for a recent sign-in (``reauthenticate_within``:
    as for an extension, a browser session signed in that recently; a 401 says where to sign in again).

    With `emergency: true` (break-glass), a role that allows it is granted at once for at most its cap, the security
    group and the skipped approvers are told, and a review opens; a role that does not is a 403 saying so, and one
    the caller holds an emergency grant of already, or is starting one of at this moment through any API process
    (or had one condemned lately), a 409 naming it (`open_request`, `condemned_request`).

    A caller with `LAPSE_MAX_PENDING_PER_REQUESTER` requests awaiting approval already (20 unless configured) is
    refused with 429 and `Retry-After` until some are decided or withdrawn."""
    return await requests.create_request(
        client,
        settings,
        user,
        role=body.role,
        duration=body.duration,
        justification=body.justification,
        sign_in=sign_in,
        emergency=body.emergency,
    )


@router.get("")
def list_requests(
    user: CurrentUser,
    settings: SettingsDep,
    state: Annotated[RequestState | None, Query(description="Only requests in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RequestStatus]:
    """Your requests, newest first; admins see everyone's."""
    return requests.list_requests(settings, user, state=state, limit=limit)


@router.get("/{request_id}", responses=responses(403, 404))
def get_request(request_id: RequestId, user: CurrentUser, settings: SettingsDep) -> RequestStatus:
    """A request's status, its steps with their eligible approvers, quorum and decisions."""
    return requests.get_request(settings, user, request_id)


@router.post("/{request_id}/approve", responses=responses(403, 404, 409, 503))
async def approve(
    request_id: RequestId,
    body: Comment,
    user: CurrentUser,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
) -> RequestStatus:
    """Approve the open step (or a pending extension's). Under an approval workflow that says
    `reauthenticate_within`, only a browser session signed in that recently may: an older one is a 401 of type
    `urn:lapse:problem:reauthentication-required` whose `reauthenticate_url` signs in again; a token or the SSO
    proxy's header is a 403."""
    return await requests.decide(
        client, settings, user, request_id, approved=True, comment=body.comment, sign_in=sign_in
    )


@router.post("/{request_id}/deny", responses=responses(403, 404, 409, 503))
async def deny(
    request_id: RequestId,
    body: Comment,
    user: CurrentUser,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
) -> RequestStatus:
    """Deny the open step (or a pending extension's): never needs a recent sign-in."""
    return await requests.decide(
        client, settings, user, request_id, approved=False, comment=body.comment, sign_in=sign_in
    )


@router.post("/{request_id}/cancel", responses=responses(403, 404, 409, 503))
async def cancel(
    request_id: RequestId,
    body: Comment,
    user: CurrentUser,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
) -> RequestStatus:
    """Withdraw a pending request (requester or admin; an admin ending someone else's under a workflow that
    says `reauthenticate_within` needs a sign-in that recent, as for `approve`)."""
    return await requests.cancel(client, settings, user, request_id, comment=body.comment, sign_in=sign_in)


@router.post("/{request_id}/revoke", responses=responses(403, 404, 409, 503))
async def revoke(
    request_id: RequestId,
    body: Comment,
    user: CurrentUser,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
) -> RequestStatus:
    """End a grant now: the requester gives it back, or an admin takes it away (under a workflow that says
    `reauthenticate_within`, with a sign-in that recent, as for `approve`; giving back one's own never needs it)."""
    return await grants.revoke_request_grant(client, settings, user, request_id, comment=body.comment, sign_in=sign_in)


@router.post("/{request_id}/extend", responses=responses(403, 404, 409, 503))
async def extend(
    request_id: RequestId,
    body: Extension,
    user: CurrentUser,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    client: ClientDep,
) -> RequestStatus:
    """Ask for more time. Automatic where the rule needs no approval; never beyond its maximum. Under a workflow
    that says `reauthenticate_within`, asking needs a sign-in that recent, as for `approve`."""
    return await requests.extend(
        client,
        settings,
        user,
        request_id,
        duration=body.duration,
        justification=body.justification,
        sign_in=sign_in,
    )


@router.post("/{request_id}/credentials", responses=responses(403, 404, 409, 410))
def show_credentials(
    request_id: RequestId, user: CurrentUser, settings: SettingsDep, response: Response
) -> CredentialsShown:
    """The login made for your grant (ephemeral credentials), shown once: 410 Gone after that.

    A POST, not a GET: reading them changes state, and no cache or browser history may keep them.
    """
    response.headers["Cache-Control"] = "no-store"
    return credentials.show_credentials(settings, user, request_id)
