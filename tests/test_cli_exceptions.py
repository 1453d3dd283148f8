"""``lapse reviews exceptions``: an admin lists the birthright exceptions access reviews made (all, or one
policy's) and removes one. The commands run through typer's ``CliRunner`` against an app with no Temporal behind
it (the sync the removal starts cannot start here: the removal stands all the same, and the daily sync grants)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlmodel import select
from typer.testing import Result

from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, BirthrightException, BirthrightPolicy
from tests.test_cli_reviews import Lapse, lapse, settings

__all__ = ["lapse", "settings"]  # the reviews CLI tests' fixtures: an offline API the CLI calls

ADA = ["--as", "ada@example.com", "reviews", "exceptions"]
CAMPAIGN = "quarterly-20260101T000000"
VIEWER = "ledger/billing-reports/viewer"
READ = "ledger/payments-api/read"


def _policies_with_exceptions(settings: Settings) -> dict[str, int]:
    """Two policies, three exceptions (one made otherwise than by a campaign): their ids, by user and policy."""
    made = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)
    with session_scope(settings.db_url) as session:
        session.add(BirthrightPolicy(name="finance", position=0, groups=["finance"], roles=[VIEWER]))
        session.add(BirthrightPolicy(name="eng read", position=1, groups=["engineering"], roles=[READ]))
        rows = {
            "katherine/finance": BirthrightException(
                policy="finance",
                user_email="katherine@example.com",
                role=VIEWER,
                created_by="radia@example.com",
                created_at=made,
                comment=f"access review {CAMPAIGN}: left the finance team",
                campaign_id=CAMPAIGN,
                item_id=7,
            ),
            "alan/eng read": BirthrightException(
                policy="eng read",
                user_email="alan@example.com",
                role=READ,
                created_by="linus@example.com",
                created_at=made,
                comment=f"access review {CAMPAIGN}: moved to research",
                campaign_id=CAMPAIGN,
                item_id=8,
            ),
            "ken/eng read": BirthrightException(
                policy="eng read",
                user_email="ken@example.com",
                role=READ,
                created_by="ada@example.com",
                created_at=made,
            ),
        }
        for row in rows.values():
            session.add(row)
        session.flush()
        return {key: row.id or 0 for key, row in rows.items()}


def _ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


async def test_an_admin_lists_the_exceptions_and_removes_one(lapse: Lapse, settings: Settings) -> None:
    ids = _policies_with_exceptions(settings)

    listed = _ok(await lapse(*ADA))
    assert f"{ids['katherine/finance']}  finance  katherine@example.com  {VIEWER}" in listed
    assert f"made by radia@example.com 2026-01-02T09:30:00Z, in campaign {CAMPAIGN}: left the finance team" in listed
    assert f"{ids['ken/eng read']}  eng read  ken@example.com  {READ}" in listed
    assert "made by ada@example.com 2026-01-02T09:30:00Z, not by a campaign\n" in listed
    assert listed.index("finance  katherine") < listed.index("eng read  alan")  # in the policies' order

    one = _ok(await lapse(*ADA, "--policy", "eng read"))
    assert "alan@example.com" in one and "ken@example.com" in one and "katherine" not in one
    as_json = json.loads(_ok(await lapse("--json", *ADA, "--policy", "finance")))
    assert [(e["id"], e["policy"], e["user"], e["campaign_id"]) for e in as_json] == [
        (ids["katherine/finance"], "finance", "katherine@example.com", CAMPAIGN)
    ]
    missing = await lapse(*ADA, "--policy", "nope")
    assert missing.exit_code == 1 and "nope" in missing.output and "(404)" in missing.output

    # Only admins: listing and removing alike.
    for command in ([], ["delete", str(ids["alan/eng read"])]):
        denied = await lapse("--as", "linus@example.com", "reviews", "exceptions", *command)
        assert denied.exit_code == 1 and "only admins" in denied.output

    # Removed by its id alone (its policy found from the list): audited; the others stay.
    removed = _ok(await lapse(*ADA, "delete", str(ids["alan/eng read"])))
    assert f"removed exception {ids['alan/eng read']}: eng read grants {READ} to alan@example.com again" in removed
    with session_scope(settings.db_url, write=False) as session:
        left = {e.id for e in session.exec(select(BirthrightException))}
        (event,) = session.exec(select(AuditEvent).where(AuditEvent.action == "birthright_exception.removed")).all()
    assert left == {ids["katherine/finance"], ids["ken/eng read"]}
    assert (event.actor, event.target, event.details["user"]) == ("ada@example.com", "eng read", "alan@example.com")
    assert "alan@example.com" not in _ok(await lapse(*ADA))

    # An id no policy has, or one another policy has, is refused naming it; nothing is removed.
    again = await lapse(*ADA, "delete", str(ids["alan/eng read"]))
    assert again.exit_code == 1 and f"no birthright policy has exception {ids['alan/eng read']}" in again.output
    elsewhere = await lapse(*ADA, "delete", str(ids["ken/eng read"]), "--policy", "finance")
    assert elsewhere.exit_code == 1 and f"'finance' has no exception {ids['ken/eng read']}" in elsewhere.output
    by_policy = _ok(await lapse(*ADA, "delete", str(ids["ken/eng read"]), "--policy", "eng read"))
    assert f"removed exception {ids['ken/eng read']}" in by_policy
    with session_scope(settings.db_url, write=False) as session:
        assert {e.id for e in session.exec(select(BirthrightException))} == {ids["katherine/finance"]}
