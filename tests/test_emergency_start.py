"""An emergency request's start is claimed in the app DB, one per person and role, so that API processes starting
two at the same moment cannot both pass the "one at a time" check (``store.break_glass.claim_start``). Run on
SQLite and PostgreSQL, with the claimants in processes of their own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from store import break_glass
from store.db import migrate, session_scope
from store.tables import EmergencyStart

pytestmark = pytest.mark.every_app_db

CLAIMANT = """
import sys, time
from datetime import UTC, datetime, timedelta
from store import break_glass
from store.db import engine_for, session_scope
url, request_id, at = sys.argv[1], sys.argv[2], float(sys.argv[3])
engine_for(url, writer=True).connect().close()  # the claim's engine, connected before the moment
early = at - time.time()
time.sleep(max(0.0, early))
now = datetime.now(UTC)
with session_scope(url) as session:
    held = break_glass.claim_start(session, "linus@example.com", "ledger/prod-db/write", request_id, now,
                                   now - timedelta(seconds=60))
    print("claimed" if held is None else f"held by {held.request_id}")
print(f"early {early:.3f}")
"""


@pytest.fixture
def db_url(app_db: str) -> str:
    migrate(app_db)
    return app_db


def test_of_several_processes_claiming_one_start_at_once_exactly_one_gets_it(db_url: str) -> None:
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    at = time.time() + 8  # after every process has imported and connected, on a loaded machine too
    claimants = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMANT, db_url, f"request-{n}", str(at)],
            env=environment,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    outputs = [claimant.communicate(timeout=120)[0].split("\n") for claimant in claimants]
    assert [claimant.returncode for claimant in claimants] == [0] * 4
    # Every process was ready before the moment, so that they did claim at once.
    assert all(float(lines[1].removeprefix("early ")) > 0 for lines in outputs), outputs
    said = [lines[0] for lines in outputs]
    winners = [f"request-{n}" for n, line in enumerate(said) if line == "claimed"]
    assert len(winners) == 1, said
    assert sorted(said) == ["claimed"] + [f"held by {winners[0]}"] * 3
    with session_scope(db_url, write=False) as session:
        row = session.get(EmergencyStart, ("linus@example.com", "ledger/prod-db/write"))
        assert row is not None and row.request_id == winners[0]


def test_a_claim_is_released_by_its_own_start_only_and_a_stale_one_is_taken_over(db_url: str) -> None:
    key = ("linus@example.com", "ledger/prod-db/write")
    then = datetime.now(UTC) - timedelta(minutes=5)
    with session_scope(db_url) as session:
        assert break_glass.claim_start(session, *key, "first", then, then - timedelta(minutes=1)) is None
    now = datetime.now(UTC)
    with session_scope(db_url) as session:  # still fresh by a longer window: held
        held = break_glass.claim_start(session, *key, "second", now, now - timedelta(minutes=10))
        assert held is not None and held.request_id == "first"
    with session_scope(db_url) as session:  # older than the window: its process died mid-start, taken over
        assert break_glass.claim_start(session, *key, "second", now, now - timedelta(minutes=1)) is None
    with session_scope(db_url) as session:  # the first start, ending late, does not release the second's claim
        break_glass.release_start(session, *key, "first")
    with session_scope(db_url, write=False) as session:
        row = session.get(EmergencyStart, key)
        assert row is not None and row.request_id == "second"
    with session_scope(db_url) as session:
        break_glass.release_start(session, *key, "second")
        assert session.get(EmergencyStart, key) is None
    with session_scope(db_url) as session:  # another role of the same person is its own claim
        assert break_glass.claim_start(session, key[0], "ledger/prod-db/read", "third", now, now) is None
