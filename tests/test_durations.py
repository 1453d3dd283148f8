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
        (3600.0, timedelta(hours=1)),
        ("+60", timedelta(minutes=1)),
        ("P3660D", timedelta(days=3660)),
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


@pytest.mark.parametrize("text", ["PT2H", "P1D", "P1DT1H", "PT1S", "PT1H30M", "PT5M", "PT30S", "P7DT23H59M59S"])
def test_printed_durations_parse_back_to_the_same_text(text: str):
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    "value",
    [timedelta(seconds=1), timedelta(minutes=90), timedelta(days=1, hours=1), timedelta(days=30)],
)
def test_parsed_durations_round_trip_to_the_same_timedelta(value: timedelta):
    assert parse_duration(format_duration(value)) == value


# --- finding 15: every duration is whole seconds within the limits, refused clearly otherwise ---------


@pytest.mark.parametrize("value", [1e20, "99999999999999999999", 10**30, "P3000000D", "P3661D", "P99999999D"])
def test_f15_huge_number_duration_is_refused_naming_the_input(value: Any):
    with pytest.raises(ValueError, match=r"too long: a duration is at most P3660D") as caught:
        parse_duration(value)
    assert repr(value)[:20] in str(caught.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan", "inf", "Infinity", "1e20"])
def test_f15_nan_and_infinity_are_not_durations(value: Any):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["PT1.9S", "PT0.000001S", 1.5, "1.5", ".5", "PT0,5S", timedelta(seconds=1.5)])
def test_f15_fractional_seconds_are_refused_not_truncated(value: Any):
    with pytest.raises(ValueError, match="fraction of a second"):
        parse_duration(value)


@pytest.mark.parametrize("value", [0, "0", "PT0S", -1, "-PT1H", timedelta(0), timedelta(seconds=-5)])
def test_f15_durations_shorter_than_the_minimum_are_refused(value: Any):
    with pytest.raises(ValueError, match="longer than zero, at least PT1S"):
        parse_duration(value)


def test_f15_a_very_long_string_is_refused_without_quoting_all_of_it():
    with pytest.raises(ValueError, match="is not a duration") as caught:
        parse_duration("P" + "9" * 100_000 + "D")
    assert len(str(caught.value)) < 200


def test_f15_policy_files_and_settings_still_parse_their_durations():
    from access.types import Rule
    from store.org import DEMO_ORG, OrgFile
    from store.settings import Settings

    org = OrgFile.read(DEMO_ORG)
    assert org.approval_workflows
    assert Rule.model_validate({"name": "r", "max_duration": "PT8H"}).max_duration == timedelta(hours=8)
    with pytest.raises(ValueError, match="fraction of a second"):
        Rule.model_validate({"name": "r", "max_duration": "PT0.5S"})
    settings = Settings(approval_timeout="PT2S", submit_timeout=30)  # type: ignore[arg-type]
    assert settings.approval_timeout == timedelta(seconds=2)
    assert settings.submit_timeout == timedelta(seconds=30)
