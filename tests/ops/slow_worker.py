"""``python -m tests.ops.slow_worker``: ``lapse worker`` as it is, except that the ledger's grants wait at a gate.

A grant writes ``started`` in ``LAPSE_TEST_GATE`` (a directory), waits there until the test creates ``open``, then
appends ``granted``: so a test can send SIGTERM while an activity is in flight and see what becomes of it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import worker
from access.connectors import Credentials, Target
from activities.connectors import BUILT_IN
from activities.connectors.ledger import LedgerConnector
from store.logs import configure_logging
from store.settings import get_settings


class GatedLedger:
    """The ledger's connector, but one whose grants are calls (as a real target's are), held at the gate."""

    discovers = False
    accounts_by_rule = True
    per_grant_accounts = False

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.ledger = LedgerConnector(config)
        self.config = self.ledger.config
        self.gate = Path(os.environ["LAPSE_TEST_GATE"])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> Credentials | None:
        (self.gate / "started").write_text(account)
        while not (self.gate / "open").exists():
            time.sleep(0.05)
        with (self.gate / "granted").open("a") as granted:
            granted.write(f"{account}\n")
        return None


if __name__ == "__main__":
    settings = get_settings()
    configure_logging(settings, "worker")
    asyncio.run(worker.serve(settings, connectors={**BUILT_IN, "ledger": GatedLedger}))
    os._exit(0)
