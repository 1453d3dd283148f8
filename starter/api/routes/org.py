"""/api/org: load an organisation file, and see which of its birthright references name nothing yet (admins)."""

from __future__ import annotations

from fastapi import APIRouter

from starter.api.deps import AdminUser, ClientDep, SettingsDep
from starter.api.problems import responses
from starter.services import org
from store.org import OrgFile

router = APIRouter(prefix="/api/org", tags=["organisation"], responses=responses(401, 403))

MAX_FILE_BYTES = 1024 * 1024
"""The largest organisation file the API reads (the body limit of every other route is far smaller): it is
stored in one transaction, and so are its sections' bounds (``store.org.LIMITS``)."""


@router.post("", responses=responses(413, 422, 503))
async def load_org(user: AdminUser, body: OrgFile, settings: SettingsDep, client: ClientDep) -> org.OrgLoaded:
    """Load (or update) users, groups, integrations, approval workflows, assignments and birthright policies.

    The body is the organisation file as JSON: the same structure as its YAML (`lapse load-org FILE` sends
    a YAML file this way), of at most 1 MiB, with at most 20,000 users, 5,000 groups and assignments, 500
    integrations, approval workflows and birthright policies, and 10,000 roles. It is checked whole, then
    stored in one transaction; entries are matched by name (email for users) and updated in place. A 422
    names the first field at fault (`field`, a dotted path such as `birthright_policies.0.groups`) and lists
    every problem (`errors`); nothing is stored then. The load is audited (`org.loaded`: what it created
    and updated per section, and `sha256`, the digest of the file's canonical JSON).

    Then what the file implies is brought up to date: discovery schedules; a first discovery of the
    integrations its birthright roles wait on, then the directory sync its groups wait on (or its new
    directory needs), and the birthright sync when it has policies (`started`; what failed in `failed`,
    and `applied` is false). A birthright policy may name groups of a directory not synced yet
    (`corp:dbusers`; a bare name is stored qualified with the one directory not synced yet) and roles of
    an integration not discovered yet: they are listed in `open_references` and grant nothing until they
    resolve.
    """
    return await org.load_org_file(settings, client, user, body)


@router.get("/open-references")
def list_open_references(user: AdminUser, settings: SettingsDep) -> list[org.OpenReferenceOut]:
    """Birthright policies' groups and roles that name nothing now: unknown, ambiguous, or missing from their
    target. They grant nothing: `waiting` ones until the directory sync or discovery they wait for brings
    them; `unresolved` ones (that run is over and did not bring them, or nothing is to) until the policy
    changes."""
    return org.list_open_references(settings, user)
