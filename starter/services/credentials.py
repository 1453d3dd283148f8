"""A grant's one-time login (ephemeral credentials): shown to its requester once, then gone."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.fernet import InvalidToken

from access import names
from access.errors import Refusal, RefusalKind
from access.requests import CredentialsShown, RequestState
from access.types import AuditEntry
from starter.services.audit import refused
from starter.services.requests import stored_status
from store.audit_log import append_audit
from store.credentials import credential_cipher
from store.db import session_scope
from store.settings import Settings
from store.tables import Credential, User


def show_credentials(settings: Settings, actor: User, request_id: str) -> CredentialsShown:
    """Hand the requester their grant's one-time login, once: the sealed password is cleared as it is read.

    The audit log records that it was shown (or refused), never the password.
    """
    status = stored_status(settings, request_id)
    if status is None:
        raise Refusal(RefusalKind.NOT_FOUND, f"there is no request {request_id!r}", field="id")
    target = names.request_workflow_id(request_id)
    shown: CredentialsShown | None = None
    with session_scope(settings.db_url) as session:
        row = session.get(Credential, request_id, with_for_update=True)  # one reader at a time on PostgreSQL
        state = status.state.value
        if actor.email != status.requester:
            refusal = Refusal(RefusalKind.FORBIDDEN, "only the requester can see the credentials of their grant")
        elif row is None:
            refusal = Refusal(RefusalKind.CONFLICT, f"request {request_id} is {state} and has no credentials to show")
        elif row.ciphertext is None:
            refusal = Refusal(
                RefusalKind.GONE, f"the credentials of request {request_id} were already shown, at {row.shown_at}"
            )
        elif status.state is not RequestState.ACTIVE:
            refusal = Refusal(
                RefusalKind.CONFLICT, f"request {request_id} is {state}: credentials are shown while active"
            )
        else:
            try:
                password = credential_cipher(settings).decrypt(row.ciphertext.encode()).decode()
            except InvalidToken:
                raise Refusal(
                    RefusalKind.CONFLICT,
                    "the credentials were sealed with another key than this API's (LAPSE_SECRET_KEY)",
                ) from None
            row.ciphertext = None
            row.shown_at = datetime.now(UTC)
            session.add(row)
            entry = AuditEntry(
                actor=actor.email, action="credentials.shown", target=target, details={"login": row.username}
            )
            append_audit(session, [entry])
            shown = CredentialsShown(
                username=row.username, password=password, expires_at=status.expires_at, dsn_hint=row.dsn_hint
            )
    if shown is None:
        raise refused(settings, actor.email, "credentials.show", target, refusal)
    return shown
