"""Durations: every accepted form, every refusal, and the two ways of writing them back."""

from __future__ import annotations

import pytest

from mirrorramp.durations import format_duration, parse_duration, prometheus_duration
from mirrorramp.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("30s", 30.0, id="seconds"),
        pytest.param("10m", 600.0, id="minutes"),
        pytest.param("12h", 43200.0, id="hours"),
        pytest.param("1d", 86400.0, id="day"),
        pytest.param("2w", 14 * 86400.0, id="weeks"),
        pytest.param("1.5h", 5400.0, id="fractional-hours"),
        pytest.param(".5m", 30.0, id="leading-dot"),
        pytest.param("500ms", 0.5, id="milliseconds"),
        pytest.param("1h30m", 5400.0, id="compound"),
        pytest.param("1d 2h", 93600.0, id="compound-with-space-as-printed"),
        pytest.param("4m 10s", 250.0, id="minutes-seconds-as-printed"),
        pytest.param("1m30s500ms", 90.5, id="compound-down-to-ms"),
        pytest.param("  5s  ", 5.0, id="surrounding-whitespace"),
        pytest.param("5 s", 5.0, id="space-before-unit"),
        pytest.param(90, 90.0, id="int-is-seconds"),
        pytest.param(2.5, 2.5, id="float-is-seconds"),
        pytest.param("90", 90.0, id="numeric-string-is-seconds"),
        pytest.param("0.25", 0.25, id="fractional-numeric-string"),
    ],
)
def test_parse_duration_accepts(value, seconds):
    assert parse_duration(value, name="hold") == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("   ", "empty", id="blank"),
        pytest.param(None, "not a duration", id="none"),
        pytest.param(True, "not a duration", id="bool-true"),
        pytest.param(False, "not a duration", id="bool-false"),
        pytest.param(-5, "negative", id="negative-number"),
        pytest.param("-5s", "negative", id="negative-text"),
        pytest.param("-5", "negative", id="negative-numeric-string"),
        pytest.param(0, "zero", id="zero"),
        pytest.param("0s", "zero", id="zero-text"),
        pytest.param("0h0m", "zero", id="zero-compound"),
        pytest.param("5y", "cannot read", id="unknown-unit-y"),
        pytest.param("5min", "unknown unit", id="unknown-unit-min"),
        pytest.param("3sec", "unknown unit", id="unknown-unit-sec"),
        pytest.param("10 minutes", "unknown unit", id="unit-spelt-out"),
        pytest.param("1h30", "cannot read", id="trailing-number-without-unit"),
        pytest.param("abc", "cannot read", id="garbage"),
        pytest.param("1e3s", "cannot read", id="exponent"),
        pytest.param("30m1h", "out of order", id="units-out-of-order"),
        pytest.param("1h1h", "out of order", id="unit-repeated"),
        pytest.param("nan", "cannot read", id="nan-text"),
        pytest.param(float("nan"), "not a finite number", id="nan-float"),
        pytest.param(float("inf"), "not a finite number", id="inf-float"),
        pytest.param([5], "a list", id="list"),
        pytest.param({"s": 5}, "a dict", id="dict"),
    ],
)
def test_parse_duration_refuses_naming_argument_value_and_allowed(value, problem):
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, name="steps[1].hold")
    message = str(caught.value)
    assert message.startswith("steps[1].hold: got ")
    assert repr(value) in message
    assert problem in message
    assert "30s, 10m, 12h, 1d" in message


def test_parse_duration_allows_zero_when_the_caller_says_so():
    assert parse_duration("0s", name="delay", allow_zero=True) == 0.0
    assert parse_duration(0, name="delay", allow_zero=True) == 0.0
    with pytest.raises(ConfigError, match=r"delay: got -1 \(negative\).*>= 0"):
        parse_duration(-1, name="delay", allow_zero=True)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(0.0004, "1ms", id="below-a-millisecond"),
        pytest.param(0.5, "500ms", id="milliseconds"),
        pytest.param(0.9996, "1s", id="ms-rounding-to-a-second"),
        pytest.param(1.5, "1.5s", id="fractional-seconds"),
        pytest.param(45, "45s", id="seconds"),
        pytest.param(59.97, "1m", id="rounds-up-to-a-minute"),
        pytest.param(60, "1m", id="minute"),
        pytest.param(250, "4m 10s", id="minutes-seconds"),
        pytest.param(249.6, "4m 10s", id="whole-seconds-rounded"),
        pytest.param(3 * 3600 + 12 * 60 + 7, "3h 12m", id="two-units-only"),
        pytest.param(86400, "1d", id="day"),
        pytest.param(86400 + 7200 + 300, "1d 2h", id="day-hours"),
        pytest.param(86400 + 300, "1d", id="zero-second-unit-dropped"),
        pytest.param(-90, "-1m 30s", id="negative"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["1d 2h", "4m 10s", "45s", "500ms", "1.5s", "3h 12m"])
def test_format_duration_output_parses_back(text):
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    ("seconds", "promql"),
    [
        pytest.param(86400, "86400s", id="day"),
        pytest.param(90, "90s", id="int"),
        pytest.param(90.0, "90s", id="float-whole"),
        pytest.param(90.2, "91s", id="rounded-up-never-shorter"),
        pytest.param(0.5, "1s", id="at-least-one-second"),
        pytest.param(0, "1s", id="zero-is-one-second"),
        pytest.param(3600.0000000001, "3600s", id="float-noise-ignored"),
    ],
)
def test_prometheus_duration(seconds, promql):
    assert prometheus_duration(seconds) == promql


@pytest.mark.parametrize(
    "seconds",
    [
        pytest.param(-1, id="negative"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param("90s", id="text"),
        pytest.param(True, id="bool"),
    ],
)
def test_prometheus_duration_refuses(seconds):
    with pytest.raises(ConfigError, match="range: got"):
        prometheus_duration(seconds)
