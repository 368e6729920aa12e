"""The mirror filters of an HTTPRoute: read, set, remove and keep across a re-apply."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mirrorramp import httproute, virtualservice
from mirrorramp.errors import ConfigError, DriverError
from mirrorramp.httproute import (
    check_percent,
    keep_live_mirror,
    mirror_settings,
    read_mirror_percent,
    with_mirror_percent,
)
from mirrorramp.routes import STATE_ANNOTATION, TARGETS_ANNOTATION, mirror_drift, route_api_for_kind
from mirrorramp.routes import keep_live_mirror as keep_live_mirror_of_kind
from tests.support.crd_validation import apply_defaults, load_crd, version_schema

HTTPROUTE_CRD = (
    Path(__file__).resolve().parents[2].parent / "shared/schemas/gateway-api-v1.6.1-standard-httproutes.yaml"
)

CANDIDATE = {"name": "user-service-v2", "port": 8080}
BASELINE = {"name": "user-service-v1-baseline", "port": 8080}
HEADER_FILTER = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-env", "value": "dev"}]}}
REWRITE_FILTER = {"type": "URLRewrite", "urlRewrite": {"hostname": "user-service"}}


def http_route(targets: list[dict], filters: list[dict] | None = None, state: str | None = None) -> dict:
    annotations = {TARGETS_ANNOTATION: json.dumps(targets)}
    if state is not None:
        annotations[STATE_ANNOTATION] = state
    mirror_rule: dict = {
        "name": "mirror",
        "matches": [{"method": "GET"}, {"method": "HEAD"}],
        "backendRefs": [{"name": "user-service-v1", "port": 8080}],
    }
    if filters is not None:
        mirror_rule["filters"] = filters
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "user-service", "namespace": "shop", "annotations": annotations},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "user-service", "port": 8080}],
            "rules": [
                mirror_rule,
                {"name": "primary", "backendRefs": [{"name": "user-service-v1", "port": 8080}]},
            ],
        },
    }


def mirrors_of(route: dict, rule: int = 0) -> list[dict]:
    return [f["requestMirror"] for f in route["spec"]["rules"][rule].get("filters", []) if f["type"] == "RequestMirror"]


def backend(target: dict) -> dict:
    return {"group": "", "kind": "Service", "name": target["name"], "port": target["port"]}


# Every percent the ramp's plans set, with the share Gateway API must carry: written out by hand.
SHARES = [
    pytest.param(0.1, {"fraction": {"numerator": 1, "denominator": 1000}}, id="0.1"),
    pytest.param(0.25, {"fraction": {"numerator": 25, "denominator": 10000}}, id="0.25"),
    pytest.param(0.5, {"fraction": {"numerator": 5, "denominator": 1000}}, id="0.5"),
    pytest.param(1, {"percent": 1}, id="1"),
    pytest.param(1.0, {"percent": 1}, id="1.0-float-is-whole"),
    pytest.param(2.5, {"fraction": {"numerator": 25, "denominator": 1000}}, id="2.5"),
    pytest.param(5, {"percent": 5}, id="5"),
    pytest.param(10, {"percent": 10}, id="10"),
    pytest.param(20, {"percent": 20}, id="20"),
    pytest.param(33.3, {"fraction": {"numerator": 333, "denominator": 1000}}, id="33.3"),
    pytest.param(50, {"percent": 50}, id="50"),
    pytest.param(100, {"percent": 100}, id="100"),
]


@pytest.mark.parametrize(("percent", "share"), SHARES)
def test_the_share_is_exact_and_reads_back_as_the_percent_set(percent, share):
    route = with_mirror_percent(http_route([CANDIDATE]), percent)
    assert mirrors_of(route) == [{"backendRef": backend(CANDIDATE), **share}]
    assert read_mirror_percent(route) == float(percent)  # equal, not approximately
    # The share means that percent exactly: numerator/denominator * 100, in rationals.
    if "fraction" in share:
        fraction = share["fraction"]
        assert fraction["numerator"] * 100 * 10**6 == round(percent * 10**6) * fraction["denominator"]


@pytest.mark.parametrize(
    ("request_mirror", "percent"),
    [
        pytest.param({"percent": 7}, 7.0, id="percent"),
        pytest.param({"fraction": {"numerator": 1, "denominator": 200}}, 0.5, id="reduced-fraction"),
        pytest.param({"fraction": {"numerator": 3}}, 3.0, id="denominator-defaults-to-100"),
        pytest.param({"fraction": {"numerator": 1, "denominator": 3}}, 100 / 3, id="a-third"),
        pytest.param({}, 100.0, id="neither-means-all-requests"),
    ],
)
def test_a_share_written_by_someone_else_reads_as_its_percent(request_mirror, percent):
    filters = [{"type": "RequestMirror", "requestMirror": {"backendRef": backend(CANDIDATE), **request_mirror}}]
    assert read_mirror_percent(http_route([CANDIDATE], filters)) == pytest.approx(percent, abs=1e-12)


def test_several_targets_get_one_filter_each_at_the_same_share():
    route = with_mirror_percent(http_route([CANDIDATE, BASELINE]), 0.5)
    assert mirrors_of(route) == [
        {"backendRef": backend(CANDIDATE), "fraction": {"numerator": 5, "denominator": 1000}},
        {"backendRef": backend(BASELINE), "fraction": {"numerator": 5, "denominator": 1000}},
    ]
    again = with_mirror_percent(route, 20)
    assert [(m["backendRef"]["name"], m["percent"]) for m in mirrors_of(again)] == [
        ("user-service-v2", 20),
        ("user-service-v1-baseline", 20),
    ]
    assert "fraction" not in json.dumps(mirrors_of(again))


def test_a_target_in_another_namespace_and_one_named_by_host():
    targets = [{"host": "user-service-v2", "port": 8080}, {"name": "shadow", "namespace": "perf", "port": 9090}]
    refs = [m["backendRef"] for m in mirrors_of(with_mirror_percent(http_route(targets), 1))]
    assert refs == [
        {"group": "", "kind": "Service", "name": "user-service-v2", "port": 8080},
        {"group": "", "kind": "Service", "name": "shadow", "namespace": "perf", "port": 9090},
    ]


def test_zero_removes_every_mirror_filter_and_keeps_the_others_in_order():
    route = with_mirror_percent(http_route([CANDIDATE, BASELINE], [HEADER_FILTER, REWRITE_FILTER]), 5)
    rule = route["spec"]["rules"][0]
    assert [f["type"] for f in rule["filters"]] == ["RequestHeaderModifier", "URLRewrite", *["RequestMirror"] * 2]

    off = with_mirror_percent(route, 0)
    assert off["spec"]["rules"][0]["filters"] == [HEADER_FILTER, REWRITE_FILTER]
    assert read_mirror_percent(off) == 0.0
    assert mirror_settings(off) == {}
    # A rule with nothing but the mirror is left without a filters list, not an empty one.
    bare = with_mirror_percent(with_mirror_percent(http_route([CANDIDATE]), 10), 0)
    assert "filters" not in bare["spec"]["rules"][0]


def test_the_mirror_filters_stay_where_they_were_among_the_other_filters():
    placed = [HEADER_FILTER, *with_mirror_percent(http_route([CANDIDATE]), 1)["spec"]["rules"][0]["filters"]]
    placed.append(REWRITE_FILTER)
    route = with_mirror_percent(http_route([CANDIDATE, BASELINE], placed), 10)
    assert [f["type"] for f in route["spec"]["rules"][0]["filters"]] == [
        "RequestHeaderModifier",
        "RequestMirror",
        "RequestMirror",
        "URLRewrite",
    ]


def test_other_rules_and_the_input_are_untouched():
    original = http_route([CANDIDATE], [HEADER_FILTER])
    before = copy.deepcopy(original)
    route = with_mirror_percent(original, 33.3)
    assert original == before
    assert route["spec"]["rules"][1] == before["spec"]["rules"][1]
    assert route["spec"]["rules"][0]["backendRefs"] == before["spec"]["rules"][0]["backendRefs"]
    assert route["metadata"] == before["metadata"]


def test_a_rollback_then_a_restart_brings_every_target_back():
    route = with_mirror_percent(http_route([CANDIDATE, BASELINE]), 10)
    restarted = with_mirror_percent(with_mirror_percent(route, 0), 1)
    assert [m["backendRef"]["name"] for m in mirrors_of(restarted)] == ["user-service-v2", "user-service-v1-baseline"]


def test_no_drift_when_the_filters_are_the_ramps():
    route = with_mirror_percent(http_route([CANDIDATE, BASELINE], [HEADER_FILTER]), 0.5)
    assert mirror_drift(httproute, route, 0.5) == ""
    assert mirror_drift(httproute, with_mirror_percent(route, 0), 0.0) == ""


def mirror_filter(name: str, **share) -> dict:
    return {"type": "RequestMirror", "requestMirror": {"backendRef": backend({"name": name, "port": 8080}), **share}}


@pytest.mark.parametrize(
    ("filters", "percent"),
    [
        pytest.param([mirror_filter("user-service-v2", percent=5)], 5.0, id="a-target-missing"),
        pytest.param(
            [mirror_filter("user-service-v2", percent=5), mirror_filter("user-service-v1-baseline", percent=10)],
            10.0,
            id="unequal-shares",
        ),
        pytest.param(
            [mirror_filter("user-service-v2", percent=5), mirror_filter("somewhere-else", percent=5)],
            5.0,
            id="another-target",
        ),
        pytest.param(
            [
                mirror_filter("user-service-v2", fraction={"numerator": 5, "denominator": 100}),
                mirror_filter("user-service-v1-baseline", fraction={"numerator": 5, "denominator": 100}),
            ],
            5.0,
            id="a-whole-percent-as-a-fraction",
        ),
    ],
)
def test_drift_when_the_live_filters_are_not_what_the_ramp_writes(filters, percent):
    route = http_route([CANDIDATE, BASELINE], [HEADER_FILTER, *filters])
    assert read_mirror_percent(route) == percent
    drift = mirror_drift(httproute, route, percent)
    assert drift.startswith("live mirror fields ")
    assert "expected" in drift


def test_a_live_mirror_without_a_targets_annotation_is_drift_with_the_reason():
    route = http_route([CANDIDATE], [mirror_filter("user-service-v2", percent=5)])
    del route["metadata"]["annotations"][TARGETS_ANNOTATION]
    assert TARGETS_ANNOTATION in mirror_drift(httproute, route, 5.0)
    assert mirror_drift(httproute, with_mirror_percent(http_route([CANDIDATE]), 0), 0.0) == ""


@pytest.mark.parametrize(
    ("route", "percent", "reason"),
    [
        pytest.param(
            {"metadata": {"name": "x"}, "spec": {"rules": [{"name": "primary"}]}}, 5, "no rule named", id="no-rule"
        ),
        pytest.param(
            {"metadata": {"name": "x", "annotations": {}}, "spec": {"rules": [{"name": "mirror"}]}},
            5,
            "has no annotation",
            id="no-targets",
        ),
        pytest.param(http_route([{"name": "user-service-v2"}]), 5, "port", id="target-without-port"),
        pytest.param(http_route([{"port": 8080}]), 5, "name", id="target-without-name"),
        pytest.param(http_route([CANDIDATE]), 0.00000001, "7 decimal places", id="denominator-beyond-int32"),
        pytest.param(http_route([CANDIDATE]), 101, "at most 100", id="above-100"),
        pytest.param(http_route([CANDIDATE] * 15, [HEADER_FILTER, REWRITE_FILTER]), 5, "17 filters", id="17-filters"),
    ],
)
def test_a_route_the_ramp_cannot_set_is_refused_with_a_reason(route, percent, reason):
    with pytest.raises(DriverError, match=reason):
        with_mirror_percent(route, percent)


@pytest.mark.parametrize("percent", [0, 0.5, 33.3, 100, 0.0000125])
def test_a_percent_an_httproute_can_carry_passes_the_check_before_the_run(percent):
    assert check_percent(percent) == percent


@pytest.mark.parametrize("percent", [0.00000001, 100.5, -1])
def test_a_percent_an_httproute_cannot_carry_is_refused_before_the_run(percent):
    with pytest.raises(ConfigError, match="HTTPRoute mirror percent"):
        check_percent(percent)


def test_corrupt_targets_annotation_is_refused():
    route = http_route([CANDIDATE])
    route["metadata"]["annotations"][TARGETS_ANNOTATION] = "{"
    with pytest.raises(DriverError, match="not a JSON list"):
        with_mirror_percent(route, 5)


def test_keep_live_takes_the_ramps_filters_once_the_ramp_owns_them():
    rendered = with_mirror_percent(http_route([CANDIDATE], [HEADER_FILTER]), 1)
    rendered["spec"]["rules"][0]["filters"][0] = REWRITE_FILTER  # a change of the manifests, kept
    live = with_mirror_percent(http_route([CANDIDATE], [HEADER_FILTER], state="{}"), 0.5)

    kept = keep_live_mirror(rendered, live)
    assert read_mirror_percent(kept) == 0.5
    assert kept["spec"]["rules"][0]["filters"][0] == REWRITE_FILTER
    rolled_back = with_mirror_percent(live, 0)
    assert read_mirror_percent(keep_live_mirror(rendered, rolled_back)) == 0.0
    assert keep_live_mirror(rendered, rolled_back)["spec"]["rules"][0]["filters"] == [REWRITE_FILTER]


def test_keep_live_leaves_the_rendered_mirror_before_the_ramp_ran():
    rendered = with_mirror_percent(http_route([CANDIDATE]), 1)
    live = with_mirror_percent(http_route([CANDIDATE]), 30)
    assert read_mirror_percent(keep_live_mirror(rendered, live)) == 1.0
    assert keep_live_mirror(rendered, None) is rendered


@pytest.mark.parametrize(
    ("kind", "api"),
    [
        pytest.param("HTTPRoute", httproute, id="httproute"),
        pytest.param("VirtualService", virtualservice, id="virtualservice"),
        pytest.param("Service", None, id="no-mirror-in-a-service"),
        pytest.param(None, None, id="no-kind"),
    ],
)
def test_the_route_api_is_chosen_by_kind(kind, api):
    assert route_api_for_kind(kind) is api


def test_keep_live_by_kind_dispatches_to_the_route_api_and_leaves_other_kinds():
    rendered = with_mirror_percent(http_route([CANDIDATE]), 1)
    live = with_mirror_percent(http_route([CANDIDATE], state="{}"), 20)
    assert read_mirror_percent(keep_live_mirror_of_kind(rendered, live)) == 20.0
    service = {"kind": "Service", "metadata": {"name": "user-service"}}
    assert keep_live_mirror_of_kind(service, live) is service


@pytest.fixture(scope="module")
def httproute_crd() -> dict:
    if not HTTPROUTE_CRD.exists():
        pytest.skip(f"the Gateway API v1.6.1 HTTPRoute CRD is not at {HTTPROUTE_CRD} (no registry package carries it)")
    return load_crd(HTTPROUTE_CRD)


# Validity against the CRD at every percent: tests/manifests/test_httproute_schema.py.
@pytest.mark.parametrize(("percent", "share"), [*SHARES, pytest.param(0, None, id="0")])
def test_the_api_servers_defaults_leave_the_ramps_filters_as_written(httproute_crd, percent, share):
    # A real API server fills in the CRD's defaults on every write; were the ramp to leave one out
    # (backendRef group and kind, fraction.denominator), every read-back would look like drift.
    route = with_mirror_percent(http_route([CANDIDATE, BASELINE], [HEADER_FILTER]), percent)
    defaulted = apply_defaults(copy.deepcopy(route), version_schema(httproute_crd, "v1"))
    assert defaulted != route  # the defaults are there to fill (the parentRefs, the rules' matches)
    assert mirror_settings(defaulted) == mirror_settings(route)
    assert mirror_drift(httproute, defaulted, float(percent)) == ""
