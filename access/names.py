"""Names shared by workflows, worker and starter: task queue, ids, activities, search attributes."""

from datetime import UTC, datetime, timedelta

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

TASK_QUEUE = "lapse"

REQUESTER = SearchAttributeKey.for_keyword("LapseRequester")
RESOURCE = SearchAttributeKey.for_keyword("LapseResource")
ROLE = SearchAttributeKey.for_keyword("LapseRole")
STATE = SearchAttributeKey.for_keyword("LapseState")
EXPIRES_AT = SearchAttributeKey.for_datetime("LapseExpiresAt")

SEARCH_ATTRIBUTES = [(k.name, "Keyword") for k in (REQUESTER, RESOURCE, ROLE, STATE)] + [(EXPIRES_AT.name, "Datetime")]
"""Registered on the dev server at start (``--search-attribute Name=Type``)."""

# Activities are called by name so that workflow code never imports their modules
# (which use the database).
RECORD_REQUEST = "record_request"
RESOLVE_APPROVERS = "resolve_approvers"
PROVISION_GRANT = "provision_grant"
REVOKE_GRANT = "revoke_grant"
REVOKE_LEDGER_GRANT = "revoke_ledger_grant"

TEST_CONNECTION = "test_connection"
DISCOVER_INTEGRATION = "discover_integration"
REMEDIATE_DRIFT = "remediate_drift"

DIRECTORY_SYNC = "directory-sync"
"""The directory sync's schedule id, and its runs' workflow id prefix."""
SYNC_DIRECTORY = "sync_directory"
TRIGGER_SYNC = "trigger_sync"
BIRTHRIGHT_SYNC = "birthright-sync"
"""The birthright sync's schedule id, and its runs' workflow id prefix."""
PLAN_BIRTHRIGHT_SYNC = "plan_birthright_sync"
APPLY_BIRTHRIGHT_BATCH = "apply_birthright_batch"
FINISH_BIRTHRIGHT_SYNC = "finish_birthright_sync"
BIRTHRIGHT_APPLY_ATTEMPTS = 5
"""Tries of an apply batch; on the last, an item whose target keeps failing is recorded as failed instead."""

EXPIRY_BACKSTOP = "expiry-backstop"
"""The expiry backstop's schedule id, and its runs' workflow id prefix."""
FIND_OVERDUE_GRANTS = "find_overdue_grants"
REVOKE_OVERDUE_GRANT = "revoke_overdue_grant"
FINISH_BACKSTOP = "finish_backstop"

AUDIT_CHECKPOINT = "audit-checkpoint"
"""The audit checkpoint's schedule id, and its runs' workflow id prefix."""
CHECKPOINT_AUDIT_HEAD = "checkpoint_audit_head"

BEGIN_REVIEW_CAMPAIGN = "begin_review_campaign"
SNAPSHOT_REVIEW_BATCH = "snapshot_review_batch"
OPEN_REVIEW_CAMPAIGN = "open_review_campaign"
REMIND_REVIEWERS = "remind_reviewers"
SWEEP_REVIEW_CAMPAIGN = "sweep_review_campaign"
APPLY_REVIEW_DEFAULT = "apply_review_default"
CARRY_OUT_REVIEW_BATCH = "carry_out_review_batch"
SETTLE_REVIEW_BATCH = "settle_review_batch"
CLOSE_REVIEW_CAMPAIGN = "close_review_campaign"

RECORD_BREAK_GLASS_REVIEW = "record_break_glass_review"

BOOKKEEPING_TIMEOUT = timedelta(seconds=10)

REQUEST_TASK_TIMEOUT = timedelta(seconds=4)
"""A request run's workflow-task timeout: a task a killed worker had started goes to another worker after
this, not after the default 10 s (its grant's revoke waits that long). Local activities longer than it
heartbeat the task, so bookkeeping under load does not time out."""


def request_workflow_id(request_id: str) -> str:
    return f"access-request-{request_id}"


def start_search_attributes(requester: str, role: str) -> TypedSearchAttributes:
    """What a request's run is filed under from its start: who, which resource and role, pending."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(REQUESTER, requester),
            SearchAttributePair(RESOURCE, role.rsplit("/", 1)[0]),
            SearchAttributePair(ROLE, role),
            SearchAttributePair(STATE, "pending"),
        ]
    )


BREAK_GLASS_REVIEW_WORKFLOW = "BreakGlassReviewWorkflow"
"""The post-hoc review's workflow type: the request's run starts it by this name, so that it need not import the
review's module (the sandbox would define that workflow again in every request's run)."""


def break_glass_workflow_id(request_id: str) -> str:
    """An emergency request's post-hoc review, started by the request's run once the grant is made."""
    return f"break-glass-{request_id}"


def discovery_id(integration: str) -> str:
    """The discovery schedule's id, and the id of a discovery run started by hand."""
    return f"discovery-{integration}"


def grant_revoke_id(grant_id: int) -> str:
    """An admin's revoke of a birthright or external grant, from the permissions table."""
    return f"revoke-grant-{grant_id}"


def review_schedule_id(definition: str) -> str:
    """A recurring review definition's schedule (beside the sync schedules)."""
    return f"review-{definition}"


def review_campaign_id(definition: str, started_at: datetime) -> str:
    """A campaign's id: its definition and its start (UTC, to the second)."""
    return f"{definition}-{started_at.astimezone(UTC):%Y%m%dT%H%M%S}"


def review_workflow_id(campaign_id: str) -> str:
    """A campaign's workflow (``review-<campaign>``); a scheduled run starts it as a child."""
    return f"review-{campaign_id}"
