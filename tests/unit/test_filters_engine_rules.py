"""The filters through which the roles ask the ramp engine instead of copying its rules.

mirror_istio_route (role mirror_istio's VirtualService): the mirror route's name, fields and
targets annotation, checked against hand-written VirtualService fields and read back by the
engine's own reader. mirror_ramp_step_problems (role mirror_preflight): a step list passes
exactly when the engine's plan parser reads it, and each refusal names the path, the value and
what is allowed.
"""

from __future__ import annotations

import json
import math

import pytest
from ansible.errors import AnsibleFilterError

from mirrorramp.durations import parse_duration
from mirrorramp.errors import ConfigError
from mirrorramp.plan import STEP_KEYS, parse_steps
from mirrorramp.virtualservice import MirrorTarget, mirror_targets, read_mirror_percent, with_mirror_percent
from tests.support.plugin_files import load_filter

mirror_istio_route = load_filter("mirror_route_filters", "mirror_istio_route")
mirror_ramp_step_problems = load_filter("mirror_step_checks", "mirror_ramp_step_problems")

CANDIDATE = {"host": "user-service", "subset": "v2", "port": 8080}
BASELINE = {"host": "user-service", "subset": "v1-baseline", "port": 8080}
TARGETS_ANNOTATION = "mirror-ramp.io/mirror-targets"


# -- mirror_istio_route -------------------------------------------------------------------------


def test_one_target_is_mirror_and_mirror_percentage() -> None:
    route = mirror_istio_route([CANDIDATE], 5.0)
    assert route == {
        "name": "mirror",
        "fields": {
            "mirror": {"host": "user-service", "subset": "v2", "port": {"number": 8080}},
            "mirrorPercentage": {"value": 5.0},
        },
        "annotations": {TARGETS_ANNOTATION: '[{"host":"user-service","port":8080,"subset":"v2"}]'},
    }


def test_several_targets_are_mirrors_each_at_the_percent() -> None:
    route = mirror_istio_route([CANDIDATE, BASELINE], 2.5)
    assert route["fields"] == {
        "mirrors": [
            {
                "destination": {"host": "user-service", "subset": "v2", "port": {"number": 8080}},
                "percentage": {"value": 2.5},
            },
            {
                "destination": {"host": "user-service", "subset": "v1-baseline", "port": {"number": 8080}},
                "percentage": {"value": 2.5},
            },
        ]
    }
    assert json.loads(route["annotations"][TARGETS_ANNOTATION]) == [CANDIDATE, BASELINE]


def test_zero_percent_renders_no_mirror_field_but_records_the_targets() -> None:
    route = mirror_istio_route([CANDIDATE], 0.0)
    assert route["fields"] == {}
    assert json.loads(route["annotations"][TARGETS_ANNOTATION]) == [CANDIDATE]


@pytest.mark.parametrize("targets", [[CANDIDATE], [CANDIDATE, BASELINE]], ids=["one-target", "two-targets"])
def test_the_engine_reads_back_what_the_filter_writes(targets) -> None:
    """The render at 7 % and the ramp's own write of 7 % over the render at 0 % are the same route."""
    rendered = mirror_istio_route(targets, 0.0)
    vs = {
        "metadata": {"name": "user-service", "annotations": rendered["annotations"]},
        "spec": {"http": [{"name": rendered["name"], **rendered["fields"]}]},
    }
    assert mirror_targets(vs) == [MirrorTarget(t["host"], t["subset"], t["port"]) for t in targets]
    ramped = with_mirror_percent(vs, 7.0)
    assert ramped["spec"]["http"][0] == {"name": "mirror", **mirror_istio_route(targets, 7.0)["fields"]}
    assert read_mirror_percent(ramped) == 7.0


@pytest.mark.parametrize(
    ("targets", "percent", "says"),
    [
        ({"host": "a"}, 5.0, "expected a list of targets, got dict"),
        ([{"subset": "v2"}], 5.0, "target [0] = {'subset': 'v2'}, expected {host, subset, port}"),
        ([{**CANDIDATE, "port": "8080"}], 5.0, "target [0] has port '8080', expected an integer"),
        ([CANDIDATE], True, "percent True is not a number"),
        ([], 5.0, "no mirror targets to mirror to"),
    ],
    ids=["not-a-list", "target-without-host", "port-text", "percent-boolean", "percent-without-targets"],
)
def test_route_filter_refuses_naming_itself_and_the_value(targets, percent, says) -> None:
    with pytest.raises(AnsibleFilterError) as error:
        mirror_istio_route(targets, percent)
    assert str(error.value) == f"mirror_istio_route: {says}"


# -- mirror_ramp_step_problems ------------------------------------------------------------------

VARIABLE = "mirror_ramp_steps"
DURATION_ALLOWED = (
    "must be a duration such as 30s, 10m, 12h, 1d, 1.5h, 1h30m, 500ms (units ms, s, m, h, d, w) "
    "or a number of seconds (> 0)"
)
PERCENT_ALLOWED = "must be a number with 0 < percent <= 100 (fractions allowed, e.g. 0.5)"


def engine_reads(hold: object) -> bool:
    try:
        parse_duration(hold, name="hold")
    except ConfigError:
        return False
    return True


# hold as written -> whether the ramp reads it (the table that held the preflight's former regex
# to the engine), and numbers, which the preflight used to check in Jinja.
HOLDS = [
    *[(hold, True) for hold in ("30s", "10m", "12h", "1d", "1w", "500ms", "0.5s", ".5h", "1.5h", "1h30m")],
    *[(hold, True) for hold in ("1d12h", "1d 12h", "1d  12h", "1 d 12 h", " 1h ", "5 ms", "1m5ms", "1w2d3h4m5s6ms")],
    *[(hold, True) for hold in ("90", "2.5", " 90 ", "+90", "0h30m", "1d 0h", "0.001ms", "00001s")],
    *[(hold, False) for hold in ("", " ", "0", "0.0", "+0", "-90", "-1s", "0s", "0h0m")],
    *[(hold, False) for hold in ("30m1h", "1h1h", "1ms1s", "1s1m", "1ms5s", "5m s", "5sms", "1h30")],
    *[(hold, False) for hold in ("1y", "5min", "3sec", "1H", "1e3", "1e3s", "1,5h", "1.5.2s", "1.s", "+5s", "+ 5")],
    *[(hold, False) for hold in ("s", "h1", "inf", "nan", "1mx")],
    *[(hold, True) for hold in (30, 2.5, 0.001)],
    *[(hold, False) for hold in (0, -1, 0.0, math.inf, math.nan, True, False, None, [], {})],
]


@pytest.mark.parametrize(("hold", "read"), HOLDS, ids=[repr(hold) for hold, _ in HOLDS])
def test_a_hold_passes_exactly_when_the_engine_reads_it(hold: object, read: bool) -> None:
    assert engine_reads(hold) is read  # the table itself, against the engine
    rows = mirror_ramp_step_problems([{"percent": 5, "hold": hold}], VARIABLE)
    if read:
        assert rows == []
    else:
        assert [row["path"] for row in rows] == ["mirror_ramp_steps[0].hold"]
        assert rows[0]["value"] is hold
        # The engine's message was understood: its allowed forms, not the fallback wording.
        assert rows[0]["says"].endswith(DURATION_ALLOWED), rows[0]["says"]


# steps -> every row {path, value, says}, written out by hand.
STEP_CASES = [
    ("empty", [], [(VARIABLE, [], "must be a non-empty list of {percent, hold}")]),
    ("not-a-list", "1%", [(VARIABLE, "1%", "must be a non-empty list of {percent, hold}")]),
    ("entry-not-a-mapping", [3], [("mirror_ramp_steps[0]", 3, "must be a mapping {percent, hold}")]),
    ("percent-zero", [{"percent": 0, "hold": "5s"}], [("mirror_ramp_steps[0].percent", 0, PERCENT_ALLOWED)]),
    (
        "percent-text",
        [{"percent": "ten", "hold": "5s"}],
        [("mirror_ramp_steps[0].percent", "ten", "not a number; " + PERCENT_ALLOWED)],
    ),
    (
        "hold-missing",
        [{"percent": 1, "hodl": "1d"}],
        [("mirror_ramp_steps[0].hold", None, "not a duration; " + DURATION_ALLOWED)],
    ),
    (
        "hold-units-out-of-order",
        [{"percent": 1, "hold": "30m1h"}],
        [
            (
                "mirror_ramp_steps[0].hold",
                "30m1h",
                "unit 'h' out of order or repeated; write the largest first; " + DURATION_ALLOWED,
            )
        ],
    ),
    (
        "percent-not-rising",
        [{"percent": 5, "hold": "5s"}, {"percent": 10, "hold": "5s"}, {"percent": 10, "hold": "5s"}],
        [
            (
                "mirror_ramp_steps[2].percent",
                10,
                "must be more than mirror_ramp_steps[1].percent (10): percents must strictly increase",
            )
        ],
    ),
    (
        # A bad percent is reported once, not again as out of order; a bad hold hides no order.
        "bad-percent-not-again-as-order",
        [
            {"percent": 50, "hold": "5s"},
            {"percent": 150, "hold": "5s"},
            {"percent": 40, "hold": "1y"},
            {"percent": 30, "hold": "5s"},
        ],
        [
            ("mirror_ramp_steps[1].percent", 150, PERCENT_ALLOWED),
            ("mirror_ramp_steps[2].hold", "1y", "cannot read '1y'; " + DURATION_ALLOWED),
            (
                "mirror_ramp_steps[3].percent",
                30,
                "must be more than mirror_ramp_steps[2].percent (40): percents must strictly increase",
            ),
        ],
    ),
    (
        "every-problem-together",
        [
            {"percent": 5, "hold": 0},
            {"percent": 0, "hold": "1y"},
            {"percent": 3, "hold": "1h"},
            {"percent": 2, "hold": "1h"},
        ],
        [
            ("mirror_ramp_steps[0].hold", 0, "zero; " + DURATION_ALLOWED),
            ("mirror_ramp_steps[1].percent", 0, PERCENT_ALLOWED),
            ("mirror_ramp_steps[1].hold", "1y", "cannot read '1y'; " + DURATION_ALLOWED),
            (
                "mirror_ramp_steps[3].percent",
                2,
                "must be more than mirror_ramp_steps[2].percent (3): percents must strictly increase",
            ),
        ],
    ),
    ("unknown-key-left-to-the-key-check", [{"percent": 1, "hold": "1h", "colour": "red"}], []),
    ("forms-the-engine-reads", [{"percent": "0.5%", "hold": 30}, {"percent": 5, "hold": "1d 12h"}], []),
]


@pytest.mark.parametrize(("steps", "rows"), [case[1:] for case in STEP_CASES], ids=[case[0] for case in STEP_CASES])
def test_step_problems_name_the_path_the_value_and_what_is_allowed(steps, rows) -> None:
    found = mirror_ramp_step_problems(steps, VARIABLE)
    assert [(row["path"], row["value"], row["says"]) for row in found] == rows


def without_unknown_keys(entry: object) -> object:
    return {key: entry[key] for key in STEP_KEYS if key in entry} if isinstance(entry, dict) else entry


@pytest.mark.parametrize(("steps", "rows"), [case[1:] for case in STEP_CASES], ids=[case[0] for case in STEP_CASES])
def test_no_problem_exactly_when_the_engine_reads_the_steps(steps, rows) -> None:
    """Unknown keys aside (the preflight's key check reports them), the plan parser agrees."""
    known = [without_unknown_keys(entry) for entry in steps] if isinstance(steps, list) else steps
    try:
        parse_steps(known)
        engine_reads_steps = True
    except ConfigError:
        engine_reads_steps = False
    assert (mirror_ramp_step_problems(steps, VARIABLE) == []) is engine_reads_steps


def test_step_filter_wants_the_variable_name() -> None:
    with pytest.raises(AnsibleFilterError, match=r"^mirror_ramp_step_problems: the variable's name must be a string"):
        mirror_ramp_step_problems([], None)
