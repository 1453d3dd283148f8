"""The connector interface between activities and target systems, and the built-in ledger.

A connector grants and revokes one role for one account. Both calls are idempotent:
granting what is already there, or revoking what is already gone, is success.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


class ConnectorError(Exception):
    """A target system refused or failed a call."""

    retryable = True


class RetryableError(ConnectorError):
    """Worth trying again: the network, a lock timeout, the target restarting."""


class PermanentError(ConnectorError):
    """Trying again will not help (bad credentials, unknown role) until someone fixes it."""

    retryable = False


@dataclass(frozen=True)
class Target:
    """A role in a target system, as a connector sees it."""

    integration: str
    resource: str
    role: str
    config: Mapping[str, Any]

    @property
    def path(self) -> str:
        return f"{self.integration}/{self.resource}/{self.role}"


class Connector(Protocol):
    def account_for(self, email: str) -> str:
        """The account a user has in the target."""
        ...

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> None: ...

    def revoke(self, account: str, target: Target) -> None: ...


class LedgerConnector:
    """For systems without a connector yet: Lapse's own grants ledger is the access record.

    Granting and revoking change nothing outside Lapse; the ledger rows the activities
    write are the grant, and operators act on them (or on the audit log) by hand.
    """

    def account_for(self, email: str) -> str:
        return email

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> None:
        return None

    def revoke(self, account: str, target: Target) -> None:
        return None


ConnectorFactory = Callable[[Target], Connector]


def _postgres(target: Target) -> Connector:
    from activities.postgres import PostgresConnector  # imported on use: the driver is optional here

    return PostgresConnector.for_target(target)


BUILT_IN: dict[str, ConnectorFactory] = {"ledger": lambda _target: LedgerConnector(), "postgres": _postgres}
"""Connector factories by integration kind."""
