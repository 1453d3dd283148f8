"""On-call references in a rule's ``when.on_call``: a PagerDuty or Opsgenie rotation, or else a group.

``pagerduty:<schedule id>`` (``pagerduty:schedule:<id>`` too) is whoever is on call on that schedule now;
``pagerduty:service:<service id>`` whoever is on call at the first level of that service's escalation policy;
``opsgenie:<schedule name>`` whoever is on call on that Opsgenie schedule. Anything else is a group reference
(``store.groups``), as ``when.groups`` takes. Pure: who is on call is read before the policy is evaluated
(``activities.oncall``) and reaches it as ``Requester.on_call``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

PAGERDUTY: Final = "pagerduty"
OPSGENIE: Final = "opsgenie"
PROVIDERS = (PAGERDUTY, OPSGENIE)

_PAGERDUTY_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
MAX_SCHEDULE_NAME = 200


@dataclass(frozen=True)
class Rotation:
    """What a provider reference names: one schedule (or a service's first escalation level) of a provider."""

    provider: Literal["pagerduty", "opsgenie"]
    kind: Literal["schedule", "service"]
    id: str
    """A PagerDuty schedule or service id (``P1A2B3C``), an Opsgenie schedule name."""


def is_provider_ref(ref: str) -> bool:
    """Whether ``ref`` names an on-call provider (well formed or not) rather than a group."""
    provider, sep, _ = ref.strip().partition(":")
    return bool(sep) and provider in PROVIDERS


def parse_rotation(ref: str) -> Rotation:
    """The rotation a provider reference names; a ``ValueError`` saying what is wrong with a malformed one."""
    provider, _, rest = ref.strip().partition(":")
    rest = rest.strip()
    if provider == PAGERDUTY:
        kind, sep, ident = rest.partition(":")
        if not sep:
            kind, ident = "schedule", rest
        if kind not in ("schedule", "service"):
            raise ValueError(
                f"{ref!r} is not a PagerDuty reference: write pagerduty:<schedule id> or pagerduty:service:<service id>"
            )
        ident = ident.strip()
        if not ident:
            raise ValueError(
                f"{ref!r} names no PagerDuty {kind}: write pagerduty:{'service:' if kind == 'service' else ''}<id>"
            )
        if not _PAGERDUTY_ID.match(ident):
            raise ValueError(f"{ref!r}: {ident!r} is not a PagerDuty {kind} id (letters and digits, as in P1A2B3C)")
        return Rotation(PAGERDUTY, "service" if kind == "service" else "schedule", ident)
    if provider == OPSGENIE:
        if not rest:
            raise ValueError(f"{ref!r} names no Opsgenie schedule: write opsgenie:<schedule name>")
        if len(rest) > MAX_SCHEDULE_NAME:
            raise ValueError(f"{ref!r}: an Opsgenie schedule name is at most {MAX_SCHEDULE_NAME} characters")
        return Rotation(OPSGENIE, "schedule", rest)
    raise ValueError(f"{ref!r} names no on-call provider ({', '.join(PROVIDERS)})")
