"""Approval policy evaluation: which rule applies to a request and who must approve it.

Pure functions on plain data. The request service evaluates a request (and every step's eligible
people) before its workflow starts, and checks a decider is still eligible; the request activities
resolve a later step's people when it opens. All of them go through ``resolve_approvers``, and a
refusal is an ``access.errors.Refusal`` of the kind the caller gets.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from pydantic import BaseModel

from access.durations import format_duration
from access.errors import Refusal, RefusalKind
from access.on_call import is_provider_ref
from access.types import ApprovalPolicy, Approver, ApproverKind, PolicyContext, RequestPlan, Rule, StepPlan


class PolicyError(Refusal):
    """A request the policy refuses; ``field`` names the part of the request at fault."""

    refusal: ClassVar[RefusalKind] = RefusalKind.INVALID

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(self.refusal, detail, field=field)
        self.detail = detail


class NotRequestable(PolicyError):
    """This requester may not ask for this role at all."""

    refusal = RefusalKind.FORBIDDEN


class InvalidRequest(PolicyError):
    """The request is allowed in principle but this one breaks a rule (duration, reason)."""


class NoEligibleApprovers(PolicyError):
    """A step could never be decided: nobody but the requester (or nobody) may approve it."""


def approvers_of(approver: Approver, context: PolicyContext) -> list[str]:
    """The people one abstract approver stands for, today."""
    match approver.kind:
        case ApproverKind.MANAGER:
            manager = context.requester.manager
            return [manager] if manager else []
        case ApproverKind.RESOURCE_OWNER:
            return list(context.role.owners)
        case ApproverKind.GROUP:
            return list(context.group_members.get(approver.name or "", []))
        case ApproverKind.USER:
            return [approver.name] if approver.name and approver.name not in context.inactive else []


def resolve_approvers(approvers: list[Approver], context: PolicyContext) -> list[str]:
    """Everyone eligible for a step: the union of its approvers, never the requester."""
    eligible = {
        person
        for approver in approvers
        for person in approvers_of(approver, context)
        if person != context.requester.email
    }
    return sorted(eligible)


def _conditions_hold(rule: Rule, context: PolicyContext) -> bool:
    groups = set(context.requester.groups)
    when = rule.when
    if when.groups and not groups.intersection(when.groups):
        return False
    return not (when.on_call and not _on_call_met(rule, context))


def _on_call_met(rule: Rule, context: PolicyContext) -> list[str]:
    """The rule's on-call references the requester meets: a provider's rotation they are on call for now
    (``Requester.on_call``), or a group they are in; a provider reference is never taken for a group."""
    requester = context.requester
    return [
        ref
        for ref in rule.when.on_call
        if (ref in requester.on_call if is_provider_ref(ref) else ref in requester.groups)
    ]


def on_call_refs(policy: ApprovalPolicy | None, context: PolicyContext) -> list[str]:
    """The on-call provider references whose answer could change this requester's rule: those named by the
    rules whose group condition the requester meets. Empty (no provider to ask) for most policies."""
    groups = set(context.requester.groups)
    return sorted(
        {
            ref
            for rule in (policy.rules if policy else [])
            if not rule.when.groups or groups.intersection(rule.when.groups)
            for ref in rule.when.on_call
            if is_provider_ref(ref)
        }
    )


def _longest(rule: Rule) -> timedelta:
    limit = rule.when.duration_at_most
    return min(limit, rule.max_duration) if limit is not None else rule.max_duration


def applicable_rules(policy: ApprovalPolicy, context: PolicyContext) -> list[Rule]:
    """The rules whose group and on-call conditions this requester meets, in order."""
    return [rule for rule in policy.rules if _conditions_hold(rule, context)]


def evaluate_policy(
    policy: ApprovalPolicy | None,
    context: PolicyContext,
    *,
    duration: timedelta,
    justification: str,
) -> RequestPlan:
    """Decide how a request for ``duration`` is approved, or raise ``PolicyError`` saying why not.

    The first rule whose conditions all hold wins. Every step must have enough eligible
    approvers other than the requester to reach its quorum; a request nobody could approve
    is refused now rather than left to time out.
    """
    role = context.role.path
    if policy is None:
        raise NotRequestable("role", f"{role} has no approval workflow assigned, so it cannot be requested")
    if duration <= timedelta(0):
        raise InvalidRequest("duration", "the duration must be longer than zero")

    candidates = applicable_rules(policy, context)
    if not candidates:
        raise NotRequestable(
            "role",
            f"no rule of approval workflow {policy.name!r} lets {context.requester.email} request {role}",
        )
    rule = next(
        (r for r in candidates if r.when.duration_at_most is None or duration <= r.when.duration_at_most),
        None,
    )
    if rule is None or duration > rule.max_duration:
        # The limit that applies: the matching rule's, or the longest any rule would allow.
        longest = rule.max_duration if rule is not None else max(_longest(r) for r in candidates)
        raise InvalidRequest(
            "duration",
            f"{format_duration(duration)} is longer than the {format_duration(longest)} you may hold {role}",
        )
    if rule.justification and not justification.strip():
        raise InvalidRequest("justification", f"rule {rule.name!r} requires a justification")

    steps: list[StepPlan] = []
    for number, step in enumerate(rule.steps, start=1):
        eligible = resolve_approvers(step.approvers, context)
        if len(eligible) < step.quorum:
            raise NoEligibleApprovers("role", _why_unapprovable(number, step.quorum, eligible, step.approvers, context))
        steps.append(
            StepPlan(
                name=step.name or " or ".join(a.describe() for a in step.approvers),
                approvers=step.approvers,
                quorum=step.quorum,
                eligible=eligible,
                remind_after=step.remind_after,
                remind_every=step.remind_every,
                escalate_after=step.escalate_after,
                escalate_to=step.escalate_to,
            )
        )
    if rule.distinct_approvers and not _distinct_people_suffice(steps):
        raise NoEligibleApprovers(
            "role",
            f"rule {rule.name!r} needs {sum(s.quorum for s in steps)} different people across its steps "
            "but fewer are eligible",
        )
    # The limit an extension is held to is the rule's effective one: a rule chosen because the request was
    # short enough (``duration_at_most``) does not cover a longer grant, whatever its ``max_duration``.
    return RequestPlan(
        policy=policy.name,
        rule=rule.name,
        max_duration=_longest(rule),
        steps=steps,
        distinct_approvers=rule.distinct_approvers,
        reauthenticate_within=policy.reauthenticate_within,
        on_call=_on_call_met(rule, context),
    )


def _distinct_people_suffice(steps: list[StepPlan]) -> bool:
    """Whether each step's quorum can be met by people who decide no other step (a bipartite matching
    of approval slots to people, by augmenting paths; steps and quorums are small)."""
    slots = [step.eligible for step in steps for _ in range(step.quorum)]
    taken: dict[str, int] = {}

    def place(slot: int, seen: set[str]) -> bool:
        for person in slots[slot]:
            if person in seen:
                continue
            seen.add(person)
            if person not in taken or place(taken[person], seen):
                taken[person] = slot
                return True
        return False

    return all(place(slot, set()) for slot in range(len(slots)))


def _why_unapprovable(
    number: int, quorum: int, eligible: list[str], approvers: list[Approver], context: PolicyContext
) -> str:
    named = " or ".join(a.describe() for a in approvers)
    everyone = {p for a in approvers for p in approvers_of(a, context)}
    if everyone == {context.requester.email}:
        why = "you are the only eligible approver and cannot approve your own request"
    elif not everyone:
        why = "nobody is eligible"
    else:
        why = f"only {len(eligible)} eligible approver(s) other than you"
    return f"step {number} ({named}) needs {quorum} approval(s) but {why}"


class RuleOption(BaseModel):
    """How a requester could get a role under one rule: up to how long, approved by whom."""

    rule: str
    up_to: str
    approval: list[str]


def describe_options(policy: ApprovalPolicy, context: PolicyContext) -> list[RuleOption]:
    """What the catalog shows a requester: each applicable rule with its limit and approvers."""
    return [
        RuleOption(
            rule=rule.name,
            up_to=format_duration(_longest(rule)),
            approval=[f"{step.quorum} of " + " or ".join(a.describe() for a in step.approvers) for step in rule.steps]
            or ["automatic"],
        )
        for rule in applicable_rules(policy, context)
    ]
