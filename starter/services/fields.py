"""Bounded input types for what callers send the services: the API's bodies, paths and query parameters.

Every string a caller sends is bounded (``access.limits``) and free of control characters (free text
may hold tabs and newlines; names, paths and ids none at all), so nothing oversized or unprintable
reaches the app DB, a workflow's history, a log line or a terminal. A refusal is a 422 naming the field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints, WithJsonSchema

from access.errors import Refusal, RefusalKind
from access.limits import MAX_EMAIL, MAX_NAME, MAX_ROLE_PATH, MAX_TEXT, control_characters

_PLAIN_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
_FREE_PATTERN = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$"
MAX_CONFIG_DEPTH = 5
"""How deeply a connector's settings may nest."""


def _refuse(bad: list[str]) -> None:
    if bad:
        raise ValueError(f"contains control characters ({', '.join(bad[:5])}); remove them")


def free_text(value: str) -> str:
    """Free text (a justification, a comment, a description): tabs and newlines allowed."""
    _refuse(control_characters(value))
    return value


def plain_text(value: str) -> str:
    """A name, a path or an id: no control characters at all, not even a tab or a newline."""
    _refuse(sorted(set(control_characters(value)) | {f"U+{ord(c):04X}" for c in value if c in "\t\n"}))
    return value


def _schema(limit: int, pattern: str, description: str | None = None) -> WithJsonSchema:
    schema: dict[str, Any] = {"type": "string", "maxLength": limit, "pattern": pattern}
    if description:
        schema["description"] = description
    return WithJsonSchema(schema)


FreeText = Annotated[
    str, StringConstraints(max_length=MAX_TEXT), AfterValidator(free_text), _schema(MAX_TEXT, _FREE_PATTERN)
]
"""A justification, comment or description: at most ``MAX_TEXT`` characters, tabs and newlines allowed."""

Name = Annotated[
    str, StringConstraints(max_length=MAX_NAME), AfterValidator(plain_text), _schema(MAX_NAME, _PLAIN_PATTERN)
]
"""A name or an id: at most ``MAX_NAME`` characters, no control characters."""

RolePath = Annotated[
    str,
    StringConstraints(max_length=MAX_ROLE_PATH),
    AfterValidator(plain_text),
    _schema(MAX_ROLE_PATH, _PLAIN_PATTERN, "`integration/resource/role`"),
]
"""An ``integration/resource/role`` path (or part of one): at most ``MAX_ROLE_PATH`` characters."""

Email = Annotated[
    str, StringConstraints(max_length=MAX_EMAIL), AfterValidator(plain_text), _schema(MAX_EMAIL, _PLAIN_PATTERN)
]
"""An email address: at most ``MAX_EMAIL`` characters, no control characters."""

MAX_CURSOR = 4096
"""The longest page cursor: one holds a sort key (a role path, an email) of up to ``MAX_ROLE_PATH`` characters,
encoded."""

Cursor = Annotated[
    str, StringConstraints(max_length=MAX_CURSOR), AfterValidator(plain_text), _schema(MAX_CURSOR, _PLAIN_PATTERN)
]
"""A page cursor Lapse made (opaque; validated again by whoever reads it): at most ``MAX_CURSOR`` characters."""

FIRST_YEAR, LAST_YEAR = 1, 9998
"""The years a time a caller sends may fall in, once in UTC: no app DB stores a time past year 9999, and the
year's margin keeps a day's arithmetic on it (or another zone's view of it) from overflowing."""


def utc_moment(value: datetime) -> datetime:
    """A time a caller sent, in UTC (one without a zone is UTC, as everywhere in Lapse); a ``ValueError`` for
    one outside the years ``FIRST_YEAR`` to ``LAST_YEAR``, which no database could compare with anything."""
    try:
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        moment = None
    if moment is None or not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ValueError(
            f"{value.isoformat()} is out of range: give a time in the years {FIRST_YEAR} to {LAST_YEAR} (UTC)"
        )
    return moment


Moment = Annotated[datetime, AfterValidator(utc_moment)]
"""A time (ISO 8601; without a zone, UTC), converted to UTC and within the years ``FIRST_YEAR`` to ``LAST_YEAR``."""


def moment_of(value: datetime | None, field: str) -> datetime | None:
    """``utc_moment`` for a service's argument ``field``: a 422 naming it."""
    if value is None:
        return None
    try:
        return utc_moment(value)
    except ValueError as error:
        raise Refusal(RefusalKind.INVALID, f"{field}: {error}", field=field) from None


MAX_ID = 2**31 - 1
"""The largest numeric id (a grant's): the app DB's integer columns hold no more."""


def _unicode(value: str) -> None:
    """A lone surrogate (``"\\ud800"`` in JSON) is no character: no database would store it."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode (a lone surrogate)") from None


def check_json(value: Any, *, depth: int = 0) -> Any:
    """Refuse control characters anywhere in a JSON value (keys and strings) and nesting past ``MAX_CONFIG_DEPTH``."""
    if depth > MAX_CONFIG_DEPTH:
        raise ValueError(f"nests deeper than {MAX_CONFIG_DEPTH} levels")
    if isinstance(value, str):
        _unicode(value)
        plain_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _unicode(str(key))
            plain_text(str(key))
            check_json(item, depth=depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json(item, depth=depth + 1)
    return value
