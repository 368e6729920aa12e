"""The mirror fields of a VirtualService: read, set, remove and keep across a re-apply."""

from __future__ import annotations

import json

import pytest

from mirrorramp.errors import DriverError
from mirrorramp.virtualservice import (
    STATE_ANNOTATION,
    TARGETS_ANNOTATION,
    keep_live_mirror,
    read_mirror_percent,
    with_mirror_percent,
)


def virtual_service(targets: list[dict], route_extra: dict | None = None, state: str | None = None) -> dict:
    annotations = {TARGETS_ANNOTATION: json.dumps(targets)}
    if state is not None:
        annotations[STATE_ANNOTATION] = state
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "user-service", "namespace": "shop", "annotations": annotations},
        "spec": {
            "hosts": ["user-service"],
            "http": [
                {
                    "name": "mirror",
                    "match": [{"method": {"regex": "GET|HEAD"}}],
                    "route": [{"destination": {"host": "user-service", "subset": "stable"}}],
                    **(route_extra or {}),
                },
                {"name": "primary", "route": [{"destination": {"host": "user-service", "subset": "stable"}}]},
            ],
        },
    }


ONE = [{"host": "user-service", "subset": "candidate"}]
TWO = [
    {"host": "user-service", "subset": "candidate"},
    {"host": "user-service", "subset": "perf", "port": 8080},
]


@pytest.mark.parametrize(
    ("targets", "percent", "expected_route_keys"),
    [
        pytest.param(ONE, 0.5, {"mirror", "mirrorPercentage"}, id="one-target-fractional"),
        pytest.param(ONE, 20, {"mirror", "mirrorPercentage"}, id="one-target"),
        pytest.param(TWO, 5, {"mirrors"}, id="two-targets-use-mirrors"),
        pytest.param(ONE, 0, set(), id="zero-removes-everything"),
    ],
)
def test_with_mirror_percent_sets_only_the_fields_istio_accepts(targets, percent, expected_route_keys):
    vs = with_mirror_percent(virtual_service(targets), percent)
    route = vs["spec"]["http"][0]
    assert {k for k in route if k.startswith("mirror")} == expected_route_keys
    assert read_mirror_percent(vs) == pytest.approx(float(percent))
    # The catch-all route never carries a mirror.
    assert not {k for k in vs["spec"]["http"][1] if k.startswith("mirror")}


def test_two_targets_each_get_the_percent_and_their_port():
    vs = with_mirror_percent(virtual_service(TWO), 10)
    mirrors = vs["spec"]["http"][0]["mirrors"]
    assert [m["percentage"]["value"] for m in mirrors] == [10.0, 10.0]
    assert mirrors[1]["destination"] == {"host": "user-service", "subset": "perf", "port": {"number": 8080}}


# As role mirror_istio renders a service with baseline_subset: the baseline shadow is the last target.
WITH_BASELINE = [
    {"host": "user-service", "port": 8080, "subset": "candidate"},
    {"host": "user-service", "port": 8080, "subset": "baseline"},
]


def test_the_ramp_sets_the_candidate_and_the_baseline_together_at_every_step():
    vs = virtual_service(WITH_BASELINE)
    for percent in (1, 5, 20, 0.5):
        vs = with_mirror_percent(vs, percent)
        mirrors = vs["spec"]["http"][0]["mirrors"]
        assert [(m["destination"]["subset"], m["percentage"]["value"]) for m in mirrors] == [
            ("candidate", float(percent)),
            ("baseline", float(percent)),
        ]
        assert read_mirror_percent(vs) == float(percent)
    # A rollback takes the baseline away with the candidate; a restart brings both back.
    rolled_back = with_mirror_percent(vs, 0)
    assert not {k for k in rolled_back["spec"]["http"][0] if k.startswith("mirror")}
    restarted = with_mirror_percent(rolled_back, 1)["spec"]["http"][0]["mirrors"]
    assert [m["destination"]["subset"] for m in restarted] == ["candidate", "baseline"]


def test_a_live_mirror_from_before_the_baseline_is_set_again_with_it_at_the_same_percent():
    # The rendered annotation lists the baseline; the live route (kept by mirror_keep_live) does not.
    live = virtual_service(WITH_BASELINE, {"mirror": {"host": "user-service", "subset": "candidate"}})
    live["spec"]["http"][0]["mirrorPercentage"] = {"value": 5.0}

    again = with_mirror_percent(live, read_mirror_percent(live))["spec"]["http"][0]

    assert "mirror" not in again and "mirrorPercentage" not in again
    assert [(m["destination"]["subset"], m["percentage"]["value"]) for m in again["mirrors"]] == [
        ("candidate", 5.0),
        ("baseline", 5.0),
    ]


def test_removal_drops_a_mirror_left_by_hand_too():
    vs = virtual_service(ONE, {"mirror": {"host": "x"}, "mirrors": [{"destination": {"host": "y"}}]})
    route = with_mirror_percent(vs, 0)["spec"]["http"][0]
    assert not {"mirror", "mirrorPercentage", "mirrors"} & set(route)


def test_bare_mirror_without_percentage_means_all_traffic():
    assert read_mirror_percent(virtual_service(ONE, {"mirror": {"host": "user-service"}})) == 100.0


def test_input_is_not_modified():
    vs = virtual_service(ONE)
    before = json.dumps(vs, sort_keys=True)
    with_mirror_percent(vs, 5)
    assert json.dumps(vs, sort_keys=True) == before


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param({"spec": {"http": [{"name": "primary"}]}, "metadata": {"name": "x"}}, id="no-mirror-route"),
        pytest.param(
            {"spec": {"http": [{"name": "mirror"}]}, "metadata": {"name": "x", "annotations": {}}},
            id="no-targets",
        ),
        pytest.param(
            {
                "spec": {"http": [{"name": "mirror"}]},
                "metadata": {"name": "x", "annotations": {TARGETS_ANNOTATION: "{"}},
            },
            id="corrupt-targets",
        ),
    ],
)
def test_a_virtual_service_not_rendered_by_us_is_refused_with_a_reason(broken):
    with pytest.raises(DriverError):
        with_mirror_percent(broken, 5)


def test_keep_live_takes_the_ramps_mirror_once_the_ramp_owns_it():
    rendered = with_mirror_percent(virtual_service(ONE), 1)
    live = with_mirror_percent(virtual_service(ONE, state="{}"), 10)
    kept = keep_live_mirror(rendered, [live][0])
    assert read_mirror_percent(kept) == 10.0
    rolled_back = with_mirror_percent(virtual_service(ONE, state="{}"), 0)
    assert read_mirror_percent(keep_live_mirror(rendered, rolled_back)) == 0.0


def test_keep_live_leaves_the_rendered_mirror_before_the_ramp_ran():
    rendered = with_mirror_percent(virtual_service(ONE), 1)
    live = with_mirror_percent(virtual_service(ONE), 30)
    assert read_mirror_percent(keep_live_mirror(rendered, live)) == 1.0
    assert keep_live_mirror(rendered, None) is rendered
