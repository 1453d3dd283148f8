"""Bounded input types for what callers send the services: the API's bodies, paths and query parameters.

Every string a caller sends is bounded (``access.limits``) and free of control characters (free text
may hold tabs and newlines; names, paths and ids none at all), so nothing oversized or unprintable
reaches the app DB, a workflow's history, a log line or a terminal. A refusal is a 422 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints, WithJsonSchema

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
