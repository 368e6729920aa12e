"""The plan: good step lists become Steps; every bad one names the entry, the value and the rule."""

from __future__ import annotations

from collections import OrderedDict

import pytest

from mirrorramp.errors import ConfigError
from mirrorramp.model import Step
from mirrorramp.plan import describe_steps, parse_steps


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            [{"percent": 1, "hold": "1d"}, {"percent": 5, "hold": "1d"}, {"percent": 10, "hold": "1d"}],
            (Step(1.0, 86400.0), Step(5.0, 86400.0), Step(10.0, 86400.0)),
            id="day-by-day",
        ),
        pytest.param([{"percent": 100, "hold": "30s"}], (Step(100.0, 30.0),), id="single-step-100"),
        pytest.param(
            [{"percent": 0.1, "hold": "5s"}, {"percent": 0.5, "hold": "5s"}, {"percent": 2.5, "hold": "5s"}],
            (Step(0.1, 5.0), Step(0.5, 5.0), Step(2.5, 5.0)),
            id="fractional-percents",
        ),
        pytest.param(
            [{"percent": "1", "hold": 60}, {"percent": "2.5", "hold": "1.5h"}, {"percent": "5%", "hold": "500ms"}],
            (Step(1.0, 60.0), Step(2.5, 5400.0), Step(5.0, 0.5)),
            id="percents-as-text-and-mixed-holds",
        ),
        pytest.param(
            ({"hold": "1h", "percent": 1}, OrderedDict(percent=2, hold="2h")),
            (Step(1.0, 3600.0), Step(2.0, 7200.0)),
            id="tuple-of-mappings",
        ),
    ],
)
def test_parse_steps_accepts(raw, expected):
    assert parse_steps(raw) == expected


GOOD = {"percent": 1, "hold": "1d"}


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        pytest.param(None, ["steps: got None", "non-empty list"], id="none"),
        pytest.param([], ["steps: got []", "non-empty list"], id="empty-list"),
        pytest.param("1%,5%", ["steps: got '1%,5%'", "list"], id="string"),
        pytest.param({"percent": 1, "hold": "1d"}, ["steps: got {", "list"], id="single-mapping-not-list"),
        pytest.param([5], ["steps[0]: got 5", "mapping {percent, hold}"], id="entry-not-mapping"),
        pytest.param([{"hold": "1d"}], ["steps[0].percent is missing"], id="percent-missing"),
        pytest.param([{"percent": 1}], ["steps[0].hold is missing"], id="hold-missing"),
        pytest.param([{"percent": 1, "hold": "1d", "hodl": "2d"}], ["steps[0]: unknown key(s) hodl"], id="unknown-key"),
        pytest.param([{"percent": 0, "hold": "1d"}], ["steps[0].percent: got 0", "0 < percent <= 100"], id="zero"),
        pytest.param([{"percent": -1, "hold": "1d"}], ["steps[0].percent: got -1", "0 < percent"], id="negative"),
        pytest.param([{"percent": "-1", "hold": "1d"}], ["steps[0].percent: got '-1'"], id="negative-text"),
        pytest.param([{"percent": 100.5, "hold": "1d"}], ["steps[0].percent: got 100.5", "<= 100"], id="above-100"),
        pytest.param([{"percent": True, "hold": "1d"}], ["steps[0].percent: got True"], id="bool"),
        pytest.param([{"percent": None, "hold": "1d"}], ["steps[0].percent: got None"], id="null"),
        pytest.param([{"percent": "five", "hold": "1d"}], ["steps[0].percent: got 'five'", "not a number"], id="word"),
        pytest.param([{"percent": "", "hold": "1d"}], ["steps[0].percent: got ''", "not a number"], id="empty-text"),
        pytest.param([{"percent": float("nan"), "hold": "1d"}], ["steps[0].percent: got nan"], id="nan"),
        pytest.param([{"percent": float("inf"), "hold": "1d"}], ["steps[0].percent: got inf"], id="inf"),
        pytest.param([{"percent": [1], "hold": "1d"}], ["steps[0].percent: got [1]", "a list"], id="list"),
        pytest.param(
            [GOOD, {"percent": 1, "hold": "1d"}],
            ["steps[1].percent: got 1", "more than steps[0].percent (1)", "strictly increase"],
            id="equal-to-previous",
        ),
        pytest.param(
            [GOOD, {"percent": 10, "hold": "1d"}, {"percent": 5, "hold": "1d"}],
            ["steps[2].percent: got 5", "more than steps[1].percent (10)"],
            id="decreasing",
        ),
        pytest.param([{"percent": 1, "hold": "0s"}], ["steps[0].hold: got '0s'", "zero"], id="hold-zero"),
        pytest.param([{"percent": 1, "hold": -60}], ["steps[0].hold: got -60", "negative"], id="hold-negative"),
        pytest.param([{"percent": 1, "hold": "1y"}], ["steps[0].hold: got '1y'"], id="hold-unknown-unit"),
        pytest.param([{"percent": 1, "hold": ""}], ["steps[0].hold: got ''", "empty"], id="hold-empty"),
        pytest.param([{"percent": 1, "hold": None}], ["steps[0].hold: got None"], id="hold-null"),
        pytest.param([{"percent": 1, "hold": True}], ["steps[0].hold: got True"], id="hold-bool"),
        pytest.param([GOOD, {"percent": 5, "hold": "soon"}], ["steps[1].hold: got 'soon'"], id="hold-garbage"),
    ],
)
def test_parse_steps_refuses(raw, fragments):
    with pytest.raises(ConfigError) as caught:
        parse_steps(raw)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_describe_steps():
    assert describe_steps(parse_steps([{"percent": 0.5, "hold": 1}, {"percent": 20, "hold": 1}])) == "0.5% -> 20%"
