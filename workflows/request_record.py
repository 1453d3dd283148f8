"""A request's record: its status and audit events written to the app DB, its state in search attributes."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from access import names
    from access.requests import RecordInput, RequestState, RequestStatus, StepStatus
    from access.types import AuditEntry


class RequestRecord:
    """Writes what a request's run knows where the API reads it, by a local activity: the workflow is the
    source of truth, the app DB its copy. Each write is one numbered bookkeeping step, so the activity
    writes it once even when it is replayed."""

    def __init__(self, status: RequestStatus, *, seq: int = 0, recorded_state: RequestState | None = None) -> None:
        self.status = status
        self.seq = seq
        """Bookkeeping steps so far (carried across continue-as-new)."""
        self.recorded_state = recorded_state
        """The state the app DB last received from this run: updates answer once it holds theirs."""
        self._carried: list[AuditEntry] = []

    def audit(self, actor: str, action: str, *, reason: str = "", **details: object) -> AuditEntry:
        return AuditEntry(
            actor=actor,
            action=action,
            target=names.request_workflow_id(self.status.id),
            reason=reason,
            details={"role": self.status.role, **details},
            at=workflow.now(),
        )

    def step_opened(self, step: StepStatus) -> AuditEntry:
        return self.audit("lapse", "step.opened", step=step.name, eligible=step.eligible, quorum=step.quorum)

    def carry(self, events: list[AuditEntry]) -> None:
        """Keep ``events`` for the next write: a decision that ended the approval round is recorded with the
        state the run moves to next, not with the pending state it decided."""
        self._carried.extend(events)

    async def write(self, events: list[AuditEntry]) -> None:
        """Write the status as it is now, with ``events`` (and any carried) for the audit log."""
        events, self._carried = self._carried + events, []
        snapshot = self.status.model_copy(deep=True)
        self.seq += 1
        await workflow.execute_local_activity(
            names.RECORD_REQUEST,
            RecordInput(status=snapshot, events=events, seq=self.seq),
            start_to_close_timeout=names.BOOKKEEPING_TIMEOUT,
        )
        self.recorded_state = snapshot.state

    async def transition(self, state: RequestState, events: list[AuditEntry] | None = None) -> None:
        """Enter ``state``: mirror it in search attributes, then write status and audit."""
        self.status.state = state
        updates: list[SearchAttributeUpdate[Any]] = [names.STATE.value_set(state.value)]
        if self.status.expires_at is not None:
            updates.append(names.EXPIRES_AT.value_set(self.status.expires_at))
        workflow.upsert_search_attributes(updates)
        await self.write(events or [])
