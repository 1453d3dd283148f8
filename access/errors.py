"""Why Lapse refuses something: one set of refusal kinds for the workflows, the services and the API.

A workflow refuses an update with a Temporal ``ApplicationError`` whose ``type`` is a :class:`RefusalKind`
value and whose first detail, when given, names the field at fault; a service raises :class:`Refusal`.
The API maps both to RFC 9457 problems in one place (``starter/api/problems.py``), by kind alone.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from temporalio.exceptions import ApplicationError


class RefusalKind(StrEnum):
    """What kind of no it is; each maps to one HTTP status.

    The values are recorded in workflow histories (an update's failure type): never change one.
    """

    UNAUTHENTICATED = "Unauthenticated"
    """The caller is not a signed-in, active Lapse user (401)."""
    REAUTHENTICATE = "Reauthenticate"
    """Signed in, but not recently enough for this decision (its workflow's ``reauthenticate_within``): sign in
    again at the identity provider, then retry (401; ``extra`` says where: ``reauthenticate_url``)."""
    NOT_FOUND = "NotFound"
    """There is no such thing (404)."""
    FORBIDDEN = "Forbidden"
    """The caller may not do this (403)."""
    CONFLICT = "Conflict"
    """Not in the thing's present state (409)."""
    INVALID = "Invalid"
    """The input is wrong; ``field`` says which part (422)."""
    GONE = "Gone"
    """It was there once and is no more (410)."""
    UNAVAILABLE = "Unavailable"
    """Lapse cannot take it now; try again later (503)."""
    TARGET_FAILED = "TargetFailed"
    """The target system Lapse called failed (502)."""
    TOO_MANY = "TooMany"
    """The caller has too many of something open (say, requests awaiting approval); try again after ``retry_after``
    seconds, or once some have ended (429)."""


class Refusal(Exception):
    """A service's refusal: a kind, a message meant for the caller, and the input field at fault."""

    def __init__(
        self,
        kind: RefusalKind,
        message: str,
        *,
        field: str | None = None,
        retry_after: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field = field
        self.retry_after = retry_after
        """Seconds to wait before trying again (``UNAVAILABLE`` and ``TOO_MANY`` only)."""
        self.extra = extra or {}
        """More for the caller to act on, such as the ``id`` of a request that may have started."""

    @classmethod
    def of_workflow(cls, error: ApplicationError) -> Refusal:
        """The refusal a workflow sent as ``error``; a type that names no kind is a conflict with the
        workflow's state, which is what every such refusal has been so far."""
        kinds = {kind.value: kind for kind in RefusalKind}
        field = str(error.details[0]) if error.details else None
        return cls(kinds.get(error.type or "", RefusalKind.CONFLICT), error.message, field=field)
