"""Checking an organisation file against what the app DB holds, before anything of it is stored.

Every reference must resolve (managers, owners and approvers to users, group references to exactly one
group, assignments to workflows and scopes, birthright roles to catalogued roles) and every integration's
configuration must be one its connector accepts. The connector is built by a ``ConnectorCheck`` the caller
supplies: persistence imports no connector driver.

A birthright policy may name groups of a directory that has not synced yet and roles of an integration that
has not been discovered yet, when the file or the app DB defines that directory or integration: such a
reference is left *open* — the policy grants nothing through it until it resolves — and is listed, at load
and by ``open_references``. An open group reference is always tied to the directory it waits for: it names
that directory (``corp:dbusers``, ``corp:#<id>``), or, bare, is stored qualified with the one directory not
synced yet — never left bare, where a group another source creates later could answer to it. Once that sync
(or the integration's first discovery) has run, what it did not bring is *unresolved*: audited by the run
(``awaiting_first_run`` / ``unresolved_after``) and listed as such, never silently open. Approval workflows
get no such grace (an unknown condition group would route requests to another rule): their message says
what to run first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError
from sqlmodel import Session, col, select

from access import names
from access.connectors import Connector
from access.grants import birthright_barred
from access.on_call import PROVIDERS, is_provider_ref, parse_rotation
from store import groups as group_refs
from store.notifications import ON_CALL, section
from store.tables import ApprovalWorkflow, Group, Integration, Resource, Role, SyncState, User

if TYPE_CHECKING:
    from store.org import OrgFile

BIRTHRIGHT_LOCK = "birthright-policies"
"""The lock every change of the birthright policies holds (``starter.services.birthright.LOCK``): loading an
organisation file renumbers them, and a directory sync or discovery reads which of their references it brings."""

ConnectorCheck = Callable[[str, Mapping[str, Any]], Connector]
"""Builds the connector of an integration of ``kind`` with ``config`` (no I/O), or raises ``ValueError`` (a
pydantic ``ValidationError`` among them) naming what is wrong; the caller supplies it, since persistence
imports no connector driver."""


@dataclass(frozen=True)
class OrgProblem:
    """One thing wrong with an organisation file."""

    field: str
    """Where, as a dotted path into the file (``birthright_policies.0.groups``); empty for the whole file."""
    message: str


@dataclass(frozen=True)
class OpenReference:
    """A birthright policy's reference that names nothing yet: the policy grants nothing through it until
    it does (its groups have no members, its roles are left alone by the sync)."""

    policy: str
    kind: Literal["group", "role"]
    reference: str
    """As stored in the policy."""
    why: str
    """``unknown group corp:dbusers: waits for the first directory sync of corp``"""
    waits_for: str | None = None
    """The directory whose first sync, or the integration whose first discovery, is to bring it; None when
    nothing is: it is *unresolved* (a typo, a group the directory does not have) until the policy changes."""
    given: str | None = None
    """What the file said, when it is stored otherwise: a bare group name qualified with its directory."""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.policy, self.kind, self.reference)


@dataclass(frozen=True)
class KnownIntegration:
    kind: str
    config: dict[str, Any]
    directory: bool
    discovered: bool
    """Its discovery has run at least once (its roles are in the catalog)."""


@dataclass
class Known:
    """What the app DB already holds, which an organisation file may refer to."""

    emails: set[str] = field(default_factory=set)
    groups: list[group_refs.GroupRow] = field(default_factory=list)
    """Every group of every source: a policy's group reference must name exactly one."""
    workflows: set[str] = field(default_factory=set)
    scopes: set[str] = field(default_factory=set)
    integrations: dict[str, KnownIntegration] = field(default_factory=dict)
    synced: set[str] = field(default_factory=set)
    """Sources the directory sync has read (see ``synced_sources``)."""
    on_call_providers: set[str] = field(default_factory=set)
    """The on-call providers the stored ``on_call`` section sets up (``pagerduty``, ``opsgenie``)."""

    @classmethod
    def read(cls, session: Session) -> Known:
        scopes = set(session.exec(select(Role.path))) | set(session.exec(select(Integration.name)))
        for resource, integration in session.exec(
            select(Resource, Integration).join(Integration, col(Resource.integration_id) == Integration.id)
        ):
            scopes.add(f"{integration.name}/{resource.name}")
        return cls(
            emails=set(session.exec(select(User.email))),
            groups=[
                group_refs.GroupRow(id=g.id or 0, source=g.source, name=g.name, external_id=g.external_id)
                for g in session.exec(select(Group))
            ],
            workflows=set(session.exec(select(ApprovalWorkflow.name))),
            scopes=scopes,
            integrations={
                i.name: KnownIntegration(i.kind, dict(i.config), i.directory, i.discovered_at is not None)
                for i in session.exec(select(Integration))
            },
            synced=synced_sources(session),
            on_call_providers=on_call_providers(section(session, ON_CALL) or {}),
        )


def on_call_providers(on_call: Mapping[str, Any]) -> set[str]:
    """The providers an ``on_call`` section (as the file gives it) sets up."""
    return {provider for provider in PROVIDERS if on_call.get(provider)}


def synced_sources(session: Session) -> set[str]:
    """The sources a directory sync has read: those with groups, and those its last successful run read (a
    directory may have no group at all). A directory integration not among them has yet to sync."""
    sources = set(session.exec(select(Group.source).distinct()))
    state = session.get(SyncState, names.DIRECTORY_SYNC)
    listed = state.summary.get("sources") if state is not None else None
    return sources | {str(source) for source in listed} if isinstance(listed, list) else sources


SECTIONS = ("users", "groups", "integrations", "approval_workflows", "assignments", "birthright_policies")
"""An organisation file's sections, in the order problems are listed."""


def check_references(
    org: OrgFile, known: Known, connectors: ConnectorCheck
) -> tuple[list[OrgProblem], list[OpenReference]]:
    """Every problem with ``org`` against ``known``, and the birthright references left open."""
    return _Check(org, known, connectors).run()


class _Check:
    """One check of a file against what the app DB holds; collects every problem before refusing."""

    def __init__(self, org: OrgFile, known: Known, connectors: ConnectorCheck) -> None:
        self.org = org
        self.problems: list[OrgProblem] = []
        self.open: list[OpenReference] = []
        self.emails = {u.email.lower() for u in org.users} | known.emails
        # Groups are known by source: the file's own by name, each directory's by external id.
        self.rows = {(row.source, row.external_id or row.name): row for row in known.groups}
        for entry in org.groups:
            self.rows.setdefault(
                (group_refs.FILE, entry.name), group_refs.GroupRow(0, group_refs.FILE, entry.name, entry.name)
            )
        self.file_groups = {name for source, name in self.rows if source == group_refs.FILE}
        self.scopes = set(known.scopes)
        self.workflows = {w.name for w in org.approval_workflows} | known.workflows
        self.integrations = dict(known.integrations)
        self.connectors: dict[str, Connector | None] = {}
        for name, integration in known.integrations.items():
            try:
                self.connectors[name] = connectors(integration.kind, integration.config)
            except ValueError:
                self.connectors[name] = None  # its own problem, shown where it is used, not the file's
        self._integrations(connectors)
        synced = known.synced | {row.source for row in known.groups}
        self.unsynced = sorted(n for n, i in self.integrations.items() if i.directory and n not in synced)
        """Directories that have not synced yet: their first sync brings their groups."""
        self.on_call_providers = known.on_call_providers

    def add(self, where: str, message: str) -> None:
        self.problems.append(OrgProblem(where, message))

    def unknown_group(self, ref: str) -> str | None:
        return group_refs.resolve_one(ref, self.rows.values(), show=str).problem

    def run(self) -> tuple[list[OrgProblem], list[OpenReference]]:
        for i, user in enumerate(self.org.users):
            if user.manager and user.manager.lower() not in self.emails:
                self.add(f"users.{i}.manager", f"user {user.email}: manager {user.manager} is not a user")
            for g in user.groups:
                if g not in self.file_groups:
                    self.add(f"users.{i}.groups", f"user {user.email}: unknown group {g}")
        self._workflows()
        for i, assignment in enumerate(self.org.assignments):
            if assignment.workflow not in self.workflows:
                self.add(f"assignments.{i}.workflow", f"assignment: unknown workflow {assignment.workflow}")
            if assignment.scope not in self.scopes:
                self.add(
                    f"assignments.{i}.scope",
                    f"assignment: unknown scope {assignment.scope}{self._undiscovered(assignment.scope)}",
                )
        self._birthright()
        # In the file's order of sections (integrations were checked first, to know what they provide).
        self.problems.sort(key=lambda problem: SECTIONS.index(problem.field.split(".", 1)[0]))
        return self.problems, self.open

    def _integrations(self, connectors: ConnectorCheck) -> None:
        for i, integration in enumerate(self.org.integrations):
            where = f"integrations.{i}"
            self.scopes.add(integration.name)
            before = self.integrations.get(integration.name)
            self.integrations[integration.name] = KnownIntegration(
                integration.kind, integration.config, integration.directory, before is not None and before.discovered
            )
            self.connectors[integration.name] = None
            try:
                self.connectors[integration.name] = connectors(integration.kind, integration.config)
            except ValidationError as error:  # its messages only: the values may be secrets put in by mistake
                for e in error.errors():
                    loc = ".".join(map(str, e["loc"]))
                    self.add(f"{where}.config.{loc}", f"integration {integration.name}: config.{loc}: {e['msg']}")
            except ValueError as error:
                self.add(f"{where}.kind", f"integration {integration.name}: {error}")
            if integration.directory and integration.kind != "ldap":
                self.add(
                    f"{where}.directory",
                    f"integration {integration.name}: only an ldap integration can be the directory",
                )
            for r, resource in enumerate(integration.resources):
                self.scopes.add(f"{integration.name}/{resource.name}")
                for o, role in enumerate(resource.roles):
                    path = f"{integration.name}/{resource.name}/{role.name}"
                    self.scopes.add(path)
                    for owner in role.owners:
                        if owner.lower() not in self.emails:
                            self.add(
                                f"{where}.resources.{r}.roles.{o}.owners", f"role {path}: owner {owner} is not a user"
                            )
                    for ref in (role.break_glass.notify or []) if role.break_glass else []:
                        if why := self.unknown_group(ref):
                            self.add(f"{where}.resources.{r}.roles.{o}.break_glass.notify", f"role {path}: {why}")

    def _workflows(self) -> None:
        for w, workflow in enumerate(self.org.approval_workflows):
            for r, rule in enumerate(workflow.rules):
                where = f"approval_workflows.{w}.rules.{r}"
                for s, step in enumerate(rule.steps):
                    named = [("approvers", a, approver) for a, approver in enumerate(step.approvers)]
                    named += [("escalate_to", a, approver) for a, approver in enumerate(step.escalate_to)]
                    for key, a, approver in named:
                        if approver.kind == "group" and (why := self.unknown_group(approver.name or "")):
                            self.add(
                                f"{where}.steps.{s}.{key}.{a}.name",
                                f"workflow {workflow.name}: {why}{self._unsynced(approver.name or '')}",
                            )
                        if approver.kind == "user" and (approver.name or "").lower() not in self.emails:
                            self.add(
                                f"{where}.steps.{s}.{key}.{a}.name",
                                f"workflow {workflow.name}: unknown user {approver.name}",
                            )
                for key, groups in (("groups", rule.when.groups), ("on_call", rule.when.on_call)):
                    for group in groups:
                        if key == "on_call" and is_provider_ref(group):
                            if why := self._on_call_problem(group):
                                self.add(f"{where}.when.on_call", f"workflow {workflow.name}, rule {rule.name}: {why}")
                            continue
                        if why := self.unknown_group(group):
                            self.add(f"{where}.when.{key}", f"workflow {workflow.name}: {why}{self._unsynced(group)}")

    def _on_call_problem(self, ref: str) -> str | None:
        """Why a ``pagerduty:``/``opsgenie:`` reference cannot be read: malformed, or its provider not set up."""
        try:
            provider = parse_rotation(ref).provider
        except ValueError as error:
            return str(error)
        given = self.org.on_call  # the file's section replaces the stored one; none given: the stored one stays
        providers = on_call_providers(given) if given is not None else self.on_call_providers
        if provider not in providers:
            return f"{ref!r} names {provider}, but the on_call section sets up no {provider} (on_call.{provider})"
        return None

    def _birthright(self) -> None:
        seen: set[str] = set()
        for p, policy in enumerate(self.org.birthright_policies):
            where = f"birthright_policies.{p}"
            if policy.name in seen:
                self.add(f"{where}.name", f"birthright policy {policy.name}: defined twice")
            seen.add(policy.name)
            for group in policy.groups:
                if why := self.unknown_group(group):
                    self._open_group(f"{where}.groups", policy.name, group, why)
            for role in policy.roles:
                integration = role.split("/", 1)[0]
                connector = self.connectors.get(integration)
                if role.count("/") != 2:
                    self.add(f"{where}.roles", f"birthright policy {policy.name}: unknown role {role}")
                elif role not in self.scopes:
                    if waits := self._waits_for_discovery(integration):
                        self.open.append(
                            OpenReference(policy.name, "role", role, f"unknown role {role}: {waits}", integration)
                        )
                    else:
                        self.add(f"{where}.roles", f"birthright policy {policy.name}: unknown role {role}")
                if barred := birthright_barred(integration, connector):
                    self.add(f"{where}.roles", f"birthright policy {policy.name}: role {role} is in {barred}")

    def _open_group(self, where: str, policy: str, ref: str, why: str) -> None:
        """Leave an unknown group open for the first sync of the directory it names — a bare name qualified
        with the one directory yet to sync — or refuse it, saying how to name it."""
        parsed = group_refs.parse(ref)
        refuse = f"birthright policy {policy}: {why}"
        if not why.startswith("unknown group") or not self.unsynced:
            self.add(where, refuse)
        elif parsed.source is not None:
            if parsed.source in self.unsynced:
                waits = f"waits for the first directory sync of {parsed.source}"
                self.open.append(OpenReference(policy, "group", ref, f"{why}: {waits}", parsed.source))
            else:
                self.add(where, refuse)
        elif len(self.unsynced) == 1:
            source = self.unsynced[0]
            stored = f"{source}:{parsed.name}"
            why = (
                f"unknown group {stored} (given as {ref}, stored qualified with {source}, the one directory not "
                f"synced yet): waits for the first directory sync of {source}"
            )
            self.open.append(OpenReference(policy, "group", stored, why, source, given=ref))
        else:
            choices = " or ".join(f"{source}:{parsed.name}" for source in self.unsynced)
            self.add(
                where,
                f"{refuse}: {', '.join(self.unsynced)} have not synced yet; name the directory it is to come from "
                f"({choices})",
            )

    def _waits_for_discovery(self, integration: str) -> str | None:
        """What an unknown role of a birthright policy waits for: its integration's first discovery, if due."""
        known, connector = self.integrations.get(integration), self.connectors.get(integration)
        if known is None or known.discovered or connector is None or not connector.discovers:
            return None
        return f"waits for the first discovery of {integration}"

    def _unsynced(self, ref: str) -> str:
        """For an approval workflow's unknown group: what to run first when a directory has yet to sync."""
        source = group_refs.parse(ref).source
        waiting = [source] if source in self.unsynced else self.unsynced if source is None else []
        if not waiting:
            return ""
        return (
            f" ({', '.join(waiting)} has not synced yet: approval workflows wait for it — load the file without "
            "them, run `lapse directory sync`, then load it whole)"
        )

    def _undiscovered(self, scope: str) -> str:
        """For an unknown assignment scope: what to run first when its integration is yet to be discovered."""
        integration = scope.split("/", 1)[0]
        if self._waits_for_discovery(integration) is None:
            return ""
        return (
            f" ({integration}'s resources and roles come from its discovery: assign the integration itself "
            f"(scope: {integration}), or load the file without this assignment, run "
            f"`lapse integrations discover {integration}`, then load it whole)"
        )
