"""What a message to AccessRequestWorkflow must satisfy: the refusals its validators and handlers raise.

A refusal is an ``ApplicationError`` whose ``type`` is a :class:`~access.errors.RefusalKind` value and whose
first detail, when given, names the field at fault; the API maps it to a problem by kind alone. Validators
reject without a trace in history (the API audits that); handlers check again, since another message may
have changed the request since its validation.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from access.approval import ApprovalRound
    from access.durations import format_duration
    from access.errors import Refusal, RefusalKind
    from access.limits import MAX_EXTENSIONS, check_text
    from access.requests import (
        DecisionInput,
        EndInput,
        ExtendInput,
        ExtensionState,
        RequestState,
        RequestStatus,
    )


def refused(kind: RefusalKind, message: str, *, field: str | None = None) -> ApplicationError:
    """The error that refuses an update; ``field``, when given, names the part of the input at fault."""
    return ApplicationError(message, *([field] if field else []), type=kind.value, non_retryable=True)


def _raise_refusal(refusal: Refusal | None) -> None:
    if refusal is not None:
        raise refused(refusal.kind, refusal.message, field=refusal.field)


def _check_text(field: str, text: str) -> None:
    why = check_text(field, text)
    if why is not None:
        raise refused(RefusalKind.INVALID, why, field=field)


def check_addressed(status: RequestStatus, request_id: str | None) -> None:
    """Refuse a message made for another request: payloads are sealed, but a sealed one could be
    replayed into another run by someone with access to Temporal. Validators only: they do not run on
    replay, where messages from before this check carry no request id."""
    if request_id != status.id:
        raise refused(RefusalKind.FORBIDDEN, f"this was sent for request {request_id or '(none)'}, not {status.id}")


def check_decision(
    status: RequestStatus, round: ApprovalRound | None, input: DecisionInput, *, strict: bool, distinct: bool
) -> None:
    """Whether ``input.actor`` may decide ``round``'s open step now. ``strict`` adds bounded comments, and
    ``distinct`` one person's approval counting for one step of a round only: rules that came later."""
    if round is None or round.open_step is None:
        raise refused(
            RefusalKind.CONFLICT, f"request {status.id} is {status.state.value}: nothing is awaiting a decision"
        )
    if strict:
        _check_text("comment", input.comment)
    _raise_refusal(round.refusal(input.actor, distinct=distinct))


def check_cancel(status: RequestStatus, input: EndInput, *, ending: EndInput | None, strict: bool = False) -> None:
    if strict:
        _check_text("comment", input.comment)
    if input.actor != status.requester and not input.is_admin:
        raise refused(RefusalKind.FORBIDDEN, "only the requester or an admin can cancel a request")
    if status.state is not RequestState.PENDING or ending is not None:
        raise refused(
            RefusalKind.CONFLICT,
            f"request {status.id} is {status.state.value}: only a pending request can be cancelled",
        )


def check_revoke(status: RequestStatus, input: EndInput, *, ending: EndInput | None, strict: bool = False) -> None:
    if strict:
        _check_text("comment", input.comment)
    # A reviewer condemning an emergency grant ends it too: the plan this run started with names them.
    reviewer = input.condemned and status.break_glass is not None and input.actor in status.break_glass.reviewers
    if input.actor != status.requester and not input.is_admin and not reviewer:
        raise refused(RefusalKind.FORBIDDEN, "only the requester or an admin can revoke a grant")
    if status.state not in (RequestState.PROVISIONING, RequestState.ACTIVE) or ending is not None:
        raise refused(
            RefusalKind.CONFLICT,
            f"request {status.id} is {status.state.value}: only a granted request can be revoked",
        )


def check_extend(
    status: RequestStatus, input: ExtendInput, *, ending: EndInput | None, expiring: bool, strict: bool
) -> None:
    """Whether the grant may be extended so. ``strict`` adds the rules that came later: bounded
    justifications and extension counts, no extension once the time is up, and the policy's verdict
    only for the total it was judged for."""
    if strict:
        _check_text("justification", input.justification)
    if input.actor != status.requester:
        raise refused(RefusalKind.FORBIDDEN, "only the requester can extend their grant")
    if status.state is not RequestState.ACTIVE or ending is not None or (strict and expiring):
        state = "expiring" if expiring else status.state.value
        raise refused(RefusalKind.CONFLICT, f"request {status.id} is {state}: only an active grant can be extended")
    if status.extensions and status.extensions[-1].state is ExtensionState.PENDING:
        raise refused(RefusalKind.CONFLICT, "an extension of this grant is already awaiting approval")
    if strict and len(status.extensions) >= MAX_EXTENSIONS:
        raise refused(
            RefusalKind.CONFLICT,
            f"request {status.id} has asked for {len(status.extensions)} extensions, the most one "
            "request may; request the role again instead",
        )
    if input.duration <= timedelta(0):
        raise refused(RefusalKind.INVALID, "the extension must be longer than zero", field="duration")
    assert status.granted_at is not None and status.expires_at is not None
    total = status.expires_at + input.duration - status.granted_at
    if strict and input.total is not None and input.total != total:
        raise refused(
            RefusalKind.CONFLICT,
            f"the grant changed while the extension was being judged (it would be {format_duration(total)} "
            f"long, not {format_duration(input.total)}); ask again",
        )
    if total > input.plan.max_duration:
        raise refused(
            RefusalKind.INVALID,
            f"extending by {format_duration(input.duration)} makes the grant {format_duration(total)} long, "
            f"beyond the {format_duration(input.plan.max_duration)} rule {input.plan.rule!r} allows",
            field="duration",
        )
