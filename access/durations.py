"""Parsing and printing the durations users type: ISO 8601 (``PT2H``) or seconds."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, TypeAdapter

_TIMEDELTA = TypeAdapter(timedelta)


def parse_duration(value: Any) -> timedelta:
    """Parse ``PT2H``, ``P1D``, ``3600`` or ``"3600"`` into a timedelta.

    Raises ``ValueError`` with a message fit to show a user.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or value is None:
        raise ValueError("expected an ISO 8601 duration such as PT2H, or a number of seconds")
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").replace(".", "", 1).isdigit():
            return timedelta(seconds=float(text))
        if not text.upper().startswith(("P", "-P")):
            raise ValueError(f"{value!r} is not a duration: use ISO 8601 such as PT2H, or a number of seconds")
        value = text.upper()
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    try:
        return _TIMEDELTA.validate_python(value)
    except Exception as error:  # pydantic's message names its internals; ours names the input
        raise ValueError(f"{value!r} is not a duration: use ISO 8601 such as PT2H, or a number of seconds") from error


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


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A timedelta field that accepts ISO 8601 or seconds and serialises as ISO 8601."""
