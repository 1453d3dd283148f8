"""Bounds on everything a caller can put into a request, so no one can grow a workflow's history.

The API refuses input over these limits (4xx naming the field) before anything reaches Temporal;
the workflow's update validators check them again, since the workflow trusts no caller's size.
"""

from __future__ import annotations

from datetime import timedelta

MAX_TEXT = 2000
"""Characters in a justification or a decision comment."""
MAX_ROLE_PATH = 400
"""Characters in an ``integration/resource/role`` path."""
MAX_NAME = 200
"""Characters in a name: a group, a policy, an integration, a resource, a request id, an audit filter."""
MAX_EMAIL = 320
"""Characters in an email address (RFC 5321's limit)."""
MAX_ITEMS = 500
"""Entries in one list in a request body (groups, roles, policy names)."""
MAX_EXTENSIONS = 20
"""Extensions one request may ask for over its whole life (approved, denied or pending)."""
MIN_DURATION = timedelta(seconds=1)
"""The shortest duration accepted anywhere (grants, extensions, policy limits)."""
MAX_DURATION = timedelta(days=3660)
"""The longest duration accepted anywhere: ten years; a policy limits grants far below this."""
MIN_REAUTHENTICATE = timedelta(minutes=1)
"""The shortest ``reauthenticate_within`` a policy may ask for: less would send people round the identity
provider faster than they can decide."""
MAX_REAUTHENTICATE = timedelta(days=1)
"""The longest ``reauthenticate_within`` a policy may ask for: longer asks for nothing a session does not give."""
MIN_REMIND_EVERY = timedelta(minutes=1)
"""The shortest ``remind_every`` an approval step may ask for: reminders closer together are noise."""
MAX_REMINDERS = 100
"""Reminders one step sends at most: each is a timer and a record in the request's history, which no
policy may grow without bound (a pending request never continues as new)."""
MAX_BODY_BYTES = 64 * 1024
"""The largest request body the API reads; anything larger is a 413."""
HISTORY_EVENTS_BEFORE_CONTINUE = 2000
"""A request's run continues as new once its history holds this many events (far below Temporal's
51,200-event and 50 MB limits), carrying its status over: a grant held or revoked for months stays small.
Running workflows replay against it: change it only behind ``workflow.patched``."""


def control_characters(text: str) -> list[str]:
    """The control characters in ``text`` other than tab and newline, as ``U+000B`` codes."""
    return sorted({f"U+{ord(c):04X}" for c in text if (ord(c) < 32 and c not in "\t\n") or 0x7F <= ord(c) < 0xA0})


def check_text(field: str, text: str, *, limit: int = MAX_TEXT) -> str | None:
    """Why ``text`` is not acceptable as ``field`` (too long, control characters), or None."""
    if len(text) > limit:
        return f"{field} is {len(text)} characters long; at most {limit} are allowed"
    bad = control_characters(text)
    if bad:
        return f"{field} contains control characters ({', '.join(bad[:5])}); remove them"
    return None
