"""Parsing and printing the durations users type: ISO 8601 or a number of seconds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from access.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT2H", timedelta(hours=2)),
        ("P1D", timedelta(days=1)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("PT45S", timedelta(seconds=45)),
        ("P1DT1H", timedelta(days=1, hours=1)),
        (" pt2h ", timedelta(hours=2)),
        (3600, timedelta(hours=1)),
        ("3600", timedelta(hours=1)),
        (1.5, timedelta(seconds=1.5)),
        ("1.5", timedelta(seconds=1.5)),
        (timedelta(minutes=5), timedelta(minutes=5)),
    ],
)
def test_parse_duration_accepts_iso_8601_and_seconds(text: Any, expected: timedelta):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("value", ["2 hours", "", "   ", "PT", "P2X", "soon", None, True, False])
def test_parse_duration_rejects_anything_else_naming_iso_8601(value: Any):
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_duration(value)


def test_parse_duration_quotes_the_rejected_input():
    with pytest.raises(ValueError, match="'2 hours'"):
        parse_duration("2 hours")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(hours=2), "PT2H"),
        (timedelta(days=1), "P1D"),
        (timedelta(days=1, hours=1), "P1DT1H"),
        (timedelta(0), "PT0S"),
        (timedelta(hours=1, minutes=30), "PT1H30M"),
        (timedelta(minutes=5), "PT5M"),
        (timedelta(seconds=30), "PT30S"),
        (timedelta(days=2, seconds=61), "P2DT1M1S"),
    ],
)
def test_format_duration_prints_iso_8601(value: timedelta, text: str):
    assert format_duration(value) == text


@pytest.mark.parametrize("text", ["PT2H", "P1D", "P1DT1H", "PT0S", "PT1H30M", "PT5M", "PT30S", "P7DT23H59M59S"])
def test_printed_durations_parse_back_to_the_same_text(text: str):
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    "value",
    [timedelta(0), timedelta(seconds=1), timedelta(minutes=90), timedelta(days=1, hours=1), timedelta(days=30)],
)
def test_parsed_durations_round_trip_to_the_same_timedelta(value: timedelta):
    assert parse_duration(format_duration(value)) == value
