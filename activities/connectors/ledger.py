"""The built-in ledger connector: Lapse's own grants ledger is the access record."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from access.connectors import ConnectorConfig, Credentials, DiscoveredRole, Discovery, HeldRole, Target
from activities.connectors.base import ConnectorBase


class LedgerConnector(ConnectorBase):
    """For systems without a connector yet: Lapse's own grants ledger is the access record.

    Granting and revoking change nothing outside Lapse; the ledger rows the activities
    write are the grant, and operators act on them (or on the audit log) by hand.
    """

    discovers = False
    accounts_by_rule = True
    per_grant_accounts = False

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config = ConnectorConfig.model_validate(dict(config or {}))

    def account_for(self, email: str) -> str:
        return email

    def test_connection(self) -> str:
        return "the Lapse ledger (no external system)"

    def discover(self) -> Discovery:
        return Discovery(resources={}, roles=[])

    def list_grants(self, roles: Iterable[DiscoveredRole]) -> Iterable[HeldRole]:
        return []

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> Credentials | None:
        return None

    def extend(self, account: str, target: Target, expires_at: datetime | None) -> None:
        return None

    def revoke(self, account: str, target: Target) -> None:
        return None
