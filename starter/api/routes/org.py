"""/api/org: load an organisation file, and see which of its birthright references name nothing yet (admins)."""

from __future__ import annotations

from fastapi import APIRouter

from starter.api.deps import ClientDep, CurrentUser, SettingsDep
from starter.api.problems import responses
from starter.services import org
from store.org import OrgFile

router = APIRouter(prefix="/api/org", tags=["organisation"], responses=responses(401, 403))

MAX_FILE_BYTES = 4 * 1024 * 1024
"""The largest organisation file the API reads (the body limit of every other route is far smaller)."""


@router.post("", responses=responses(413, 422, 503))
async def load_org(body: OrgFile, user: CurrentUser, settings: SettingsDep, client: ClientDep) -> org.OrgLoaded:
    """Load (or update) users, groups, integrations, approval workflows, assignments and birthright policies.

    The body is the organisation file as JSON: the same structure as its YAML (`lapse load-org FILE` sends
    a YAML file this way). It is checked whole, then stored in one transaction; entries are matched by name
    (email for users) and updated in place. A 422 names the first field at fault (`field`, a dotted path
    such as `birthright_policies.0.groups`) and lists every problem (`errors`); nothing is stored then.

    Then what the file implies is brought up to date: discovery schedules; a first discovery of the
    integrations its birthright roles wait on, then the directory sync its groups wait on (or its new
    directory needs), and the birthright sync when it has policies. A birthright policy may name groups
    of a directory not synced yet and roles of an integration not discovered yet: they are listed in
    `open_references` and grant nothing until they resolve.
    """
    return await org.load_org_file(settings, client, user, body)


@router.get("/open-references")
def list_open_references(user: CurrentUser, settings: SettingsDep) -> list[org.OpenReferenceOut]:
    """Birthright policies' groups and roles that name nothing now: unknown, ambiguous, or missing from their
    target. They grant nothing until a directory sync or discovery brings them (or the policy changes)."""
    return org.list_open_references(settings, user)
