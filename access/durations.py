"""Parsing and printing the durations users type: ISO 8601 (``PT2H``) or whole seconds.

Every duration Lapse accepts is a whole number of seconds between ``MIN_DURATION`` and
``MAX_DURATION`` (``access.limits``): a fraction of a second is refused rather than truncated, and
a number too large for a date (``1e20``, ``P3000000D``) is refused rather than overflowing later.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, TypeAdapter, WithJsonSchema

from access.limits import MAX_DURATION, MIN_DURATION

_TIMEDELTA = TypeAdapter(timedelta)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_LONGEST_TEXT = 64
"""No duration needs more characters than this; a longer string is refused without being parsed."""
_HOW = "use ISO 8601 such as PT2H, or a whole number of seconds"


def _shown(value: Any) -> str:
    """The input, quoted for a message, cut short if it is long."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _bounded(value: timedelta, original: Any) -> timedelta:
    if value.microseconds:
        raise ValueError(f"{_shown(original)} has a fraction of a second: durations are whole seconds")
    if value < MIN_DURATION:
        raise ValueError(
            f"{_shown(original)} is too short: a duration must be longer than zero, "
            f"at least {format_duration(MIN_DURATION)}"
        )
    if value > MAX_DURATION:
        raise ValueError(f"{_shown(original)} is too long: a duration is at most {format_duration(MAX_DURATION)}")
    return value


def _from_seconds(seconds: Decimal, original: Any) -> timedelta:
    if not seconds.is_finite():
        raise ValueError(f"{_shown(original)} is not a duration: {_HOW}")
    if seconds != seconds.to_integral_value():
        raise ValueError(f"{_shown(original)} has a fraction of a second: durations are whole seconds")
    # Compare before building a timedelta: 1e20 seconds does not fit in one.
    if seconds < Decimal(int(MIN_DURATION.total_seconds())):
        return _bounded(timedelta(0) if seconds >= 0 else -MIN_DURATION, original)
    if seconds > Decimal(int(MAX_DURATION.total_seconds())):
        return _bounded(MAX_DURATION + MIN_DURATION, original)
    return _bounded(timedelta(seconds=int(seconds)), original)


def parse_duration(value: Any) -> timedelta:
    """Parse ``PT2H``, ``P1D``, ``3600`` or ``"3600"`` into a timedelta of whole seconds within the limits.

    Raises ``ValueError`` with a message fit to show a user, quoting the input.
    """
    if isinstance(value, timedelta):
        return _bounded(value, value)
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected an ISO 8601 duration such as PT2H, or a whole number of seconds; got {value!r}")
    if isinstance(value, int):
        return _from_seconds(Decimal(value), value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{_shown(value)} is not a duration: {_HOW}")
        return _from_seconds(Decimal(value), value)
    if not isinstance(value, str):
        raise ValueError(f"{_shown(value)} is not a duration: {_HOW}")
    text = value.strip()
    if len(text) > _LONGEST_TEXT:
        raise ValueError(f"{_shown(value)} is not a duration ({len(text)} characters long): {_HOW}")
    if _NUMBER.fullmatch(text):
        try:
            seconds = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern only lets decimals through
            raise ValueError(f"{_shown(value)} is not a duration: {_HOW}") from None
        return _from_seconds(seconds, value)
    if not text.upper().startswith(("P", "-P", "+P")):
        raise ValueError(f"{_shown(value)} is not a duration: {_HOW}")
    try:
        parsed = _TIMEDELTA.validate_python(text.upper())
    except Exception:  # pydantic's message names its internals; ours names the input
        raise ValueError(f"{_shown(value)} is not a duration: {_HOW}") from None
    return _bounded(parsed, value)


def format_duration(value: timedelta) -> str:
    """Print a timedelta as ISO 8601 (``PT1H30M``), the form the API returns."""
    seconds = int(value.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{sign}P"
    if days:
        text += f"{days}D"
    if hours or minutes or secs or not days:
        text += "T"
        if hours:
            text += f"{hours}H"
        if minutes:
            text += f"{minutes}M"
        if secs or not (hours or minutes):
            text += f"{secs}S"
    return text


_SCHEMA = {
    "anyOf": [
        {"type": "string", "maxLength": _LONGEST_TEXT, "description": "ISO 8601, e.g. PT2H"},
        {
            "type": "integer",
            "minimum": int(MIN_DURATION.total_seconds()),
            "maximum": int(MAX_DURATION.total_seconds()),
            "description": "seconds",
        },
    ],
    "examples": ["PT2H"],
}

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(_SCHEMA),
]
"""A timedelta field that accepts ISO 8601 or whole seconds within the limits, and serialises as ISO 8601."""
