"""Integrations: connection tests, discovery and drift."""

from __future__ import annotations

from access.types import Model

# --- integrations: connection tests and discovery -----------------------------------------


class IntegrationInput(Model):
    integration: str
    """The integration's name."""


class ConnectionTestResult(Model):
    ok: bool
    detail: str
    """The target's description when ``ok``; otherwise what is wrong."""
    retryable: bool = False
    """The failure looks temporary (network, a busy server) rather than a configuration problem."""


class DriftItem(Model):
    """A grant of a JIT-only role found in the target that Lapse did not make."""

    account: str
    role: str
    user: str | None = None


class DiscoveryResult(Model):
    """What one discovery run found and changed; also kept on the integration."""

    integration: str
    resources: int = 0
    roles: int = 0
    roles_added: int = 0
    roles_missing: int = 0
    """Catalogued roles the target no longer has."""
    grants_seen: int = 0
    external_found: int = 0
    """Grants in the target that no Lapse grant covers, newly recorded with path ``external``."""
    external_gone: int = 0
    """External grants recorded earlier that the target no longer has."""
    lapse_grants_missing: int = 0
    """Active Lapse grants (jit, birthright) the target does not have: removed by hand outside Lapse."""
    birthright_ended: int = 0
    """Of those, birthright grants ended here: the birthright sync (started at once) grants them again."""
    unlinked_accounts: int = 0
    """Accounts holding a role that match no Lapse user."""
    grants_in_use: int = 0
    """Grants in the target whose account it says was used (a live session now, a last logon): each one's
    ``last_used_at`` moves forward, for reviewers. Targets that cannot tell report none."""
    drift: list[DriftItem] = []
    """External grants of JIT-only roles to revoke (the integration enforces JIT-only)."""
    remediated: int = 0


class RemediateInput(Model):
    integration: str
    items: list[DriftItem]
