"""The sandbox's translation of an HTTPRoute and its version Services into Envoy routes and clusters."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

import pytest
import yaml

from mirrorramp.drivers.envoy import live_mirror, shape_route_config
from mirrorramp.errors import ConfigError
from mirrorsandbox.envoy_httproute import fraction_millionths, httproute_config

NAMESPACE = "sandbox"
VERSIONS = ("primary", "candidate", "perf")
PRIMARY = "outbound|8080||demo-service-primary.sandbox.svc.cluster.local"
CANDIDATE = "outbound|8080||demo-service-candidate.sandbox.svc.cluster.local"
PERF = "outbound|8080||demo-service-perf.sandbox.svc.cluster.local"
BACKENDS = {f"demo-service-{v}": f"127.0.0.1:{18001 + i}" for i, v in enumerate(VERSIONS)}
# As roles/mirror_gateway_api writes the annotation: entries {name, port}.
TARGETS = '[{"name":"demo-service-candidate","port":8080}]'
TWO_TARGETS = '[{"name":"demo-service-candidate","port":8080},{"name":"demo-service-perf","port":8080}]'


def service(version: str, ports: tuple[int, ...] = (8080,)) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"demo-service-{version}", "namespace": NAMESPACE, "labels": {"app": "demo-service"}},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": "demo-service", "version": version},
            "ports": [
                {"name": f"http-{port}", "port": port, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
                for port in ports
            ],
        },
    }


SERVICES = [service(version) for version in VERSIONS]


def mirror_filter(version: str, **share: Any) -> dict[str, Any]:
    return {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {"name": f"demo-service-{version}", "port": 8080}, **share},
    }


def http_route(filters: list[dict] | None = None, targets: str | None = TARGETS, **rule_fields: Any) -> dict:
    """What the project renders for the local service with gateway-api: a rule `mirror` for GET and
    HEAD (Gateway API matches one method per entry) carrying the mirror filters, then the
    catch-all rule `primary`; `rule_fields` go on both rules."""
    to_primary = {
        "backendRefs": [{"name": "demo-service-primary", "port": 8080}],
        "timeouts": {"request": "5s"},
        **rule_fields,
    }
    mirror_rule = {
        "name": "mirror",
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}, "method": method} for method in ("GET", "HEAD")],
        **copy.deepcopy(to_primary),
    }
    if filters is not None:
        mirror_rule["filters"] = filters
    annotations = {"mirror-ramp.io/mirror-targets": targets} if targets is not None else {}
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "demo-service", "namespace": NAMESPACE, "annotations": annotations},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "demo-service", "port": 8080}],
            "rules": [mirror_rule, {"name": "primary", **to_primary}],
        },
    }


def routes_of(route: dict, services: list[dict] | None = None) -> list[dict]:
    config = httproute_config(route, services or SERVICES, BACKENDS)
    return config.route_configuration["virtual_hosts"][0]["routes"]


def policy(cluster: str, numerator: int) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "runtime_fraction": {"default_value": {"numerator": numerator, "denominator": "MILLION"}},
        "trace_sampled": False,
        "disable_shadow_host_suffix_append": True,
    }


@pytest.mark.parametrize(
    ("filters", "targets", "policies", "marked"),
    [
        pytest.param(
            [mirror_filter("candidate", percent=10)],
            TARGETS,
            [policy(CANDIDATE, 100_000)],
            [CANDIDATE],
            id="percent-10",
        ),
        pytest.param(
            [mirror_filter("candidate")], TARGETS, [policy(CANDIDATE, 1_000_000)], [CANDIDATE], id="absent-is-100"
        ),
        pytest.param(
            [mirror_filter("candidate", percent=100)],
            None,
            [policy(CANDIDATE, 1_000_000)],
            [CANDIDATE],
            id="marked-from-filters",
        ),
        pytest.param(
            [mirror_filter("candidate", fraction={"numerator": 5, "denominator": 1000})],
            TARGETS,
            [policy(CANDIDATE, 5_000)],
            [CANDIDATE],
            id="fraction-0.5-percent",
        ),
        pytest.param(
            [mirror_filter("candidate", fraction={"numerator": 39, "denominator": 10000})],
            TARGETS,
            [policy(CANDIDATE, 3_900)],
            [CANDIDATE],
            id="fraction-0.39-exact-not-float32",
        ),
        pytest.param(
            [mirror_filter("candidate", fraction={"numerator": 1})],
            TARGETS,
            [policy(CANDIDATE, 10_000)],
            [CANDIDATE],
            id="fraction-default-denominator-100",
        ),
        pytest.param([mirror_filter("candidate", percent=0)], TARGETS, [], [CANDIDATE], id="percent-0-none"),
        pytest.param(
            [mirror_filter("candidate", fraction={"numerator": 0, "denominator": 1000})],
            TARGETS,
            [],
            [CANDIDATE],
            id="fraction-0-none",
        ),
        pytest.param(None, TARGETS, [], [CANDIDATE], id="rendered-at-0-marked-from-annotation"),
        pytest.param(
            [
                mirror_filter("candidate", percent=20),
                mirror_filter("perf", fraction={"numerator": 1, "denominator": 8}),
            ],
            TWO_TARGETS,
            [policy(CANDIDATE, 200_000), policy(PERF, 125_000)],
            [CANDIDATE, PERF],
            id="two-mirrors-one-policy-each-in-order",
        ),
        pytest.param(
            [mirror_filter("candidate", percent=0), mirror_filter("perf")],
            TWO_TARGETS,
            [policy(PERF, 1_000_000)],
            [CANDIDATE, PERF],
            id="two-mirrors-0-skipped",
        ),
        pytest.param(None, TWO_TARGETS, [], [CANDIDATE, PERF], id="two-targets-at-0"),
    ],
)
def test_mirror_policies_and_marker(
    filters: list[dict] | None, targets: str | None, policies: list[dict], marked: list[str]
) -> None:
    get_route, head_route, primary_route = routes_of(http_route(filters, targets))
    for route in (get_route, head_route):
        assert route["route"].get("request_mirror_policies", []) == policies
        assert route["metadata"] == {"filter_metadata": {"mirror_ramp": {"mirror_clusters": marked}}}
    assert "request_mirror_policies" not in primary_route["route"] and "metadata" not in primary_route
    assert "-shadow" not in yaml.safe_dump(policies)


@pytest.mark.parametrize(
    ("numerator", "denominator", "millionths"),
    [
        (5, 1000, 5_000),
        (1, 1, 1_000_000),
        (0, 7, 0),
        (57, 10_000, 5_700),
        (1, 1_000_000, 1),
        (3, 8, 375_000),
        (1, 64, 15_625),
    ],
    ids=str,
)
def test_fraction_millionths_is_exact(numerator: int, denominator: int, millionths: int) -> None:
    assert fraction_millionths(numerator, denominator, "f") == millionths


def test_every_fraction_over_ten_thousand_is_exact() -> None:
    """Against Fraction, independently: Envoy Gateway's float32 path gets 613 of these one millionth low."""
    for numerator in range(10_001):
        expected = Fraction(numerator, 10_000) * 1_000_000
        assert expected.denominator == 1
        assert fraction_millionths(numerator, 10_000, "f") == expected.numerator


@pytest.mark.parametrize(("numerator", "denominator"), [(1, 3), (1, 7_000_000), (2, 1), (-1, 10), (1, 0)], ids=str)
def test_fraction_envoy_cannot_say_or_the_crd_refuses_is_refused(numerator: int, denominator: int) -> None:
    with pytest.raises(ConfigError, match="f: "):
        fraction_millionths(numerator, denominator, "f")


def test_local_render_translates_to_routes_and_one_cluster_per_service_port() -> None:
    config = httproute_config(http_route([mirror_filter("candidate", percent=5)]), SERVICES, BACKENDS)
    host = config.route_configuration["virtual_hosts"][0]
    assert config.route_configuration["name"] == "8080", "as the istio translation, so the route file keeps its name"
    assert config.route_configuration["validate_clusters"] is True
    assert host["name"] == "demo-service.sandbox.svc.cluster.local:8080" and host["domains"] == ["*"]
    get_route, head_route, primary_route = host["routes"]
    assert [route["name"] for route in host["routes"]] == [
        "httproute/sandbox/demo-service/rule/0/match/0",
        "httproute/sandbox/demo-service/rule/0/match/1",
        "httproute/sandbox/demo-service/rule/1/match/0",
    ]
    assert get_route["match"] == {"prefix": "/", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]}
    assert head_route["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "HEAD"}}]
    assert primary_route["match"] == {"prefix": "/"}, "no matches: the catch-all"
    for route in host["routes"]:
        assert route["route"]["cluster"] == PRIMARY and route["route"]["timeout"] == "5s"
    assert get_route["route"] is not head_route["route"], "the driver edits each route's action on its own"
    assert [cluster["name"] for cluster in config.clusters] == [PRIMARY, CANDIDATE]
    endpoint = config.clusters[1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint == {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 18002}}}
    assert config.http_filters == []
    dumped = yaml.safe_dump({"routes": config.route_configuration, "clusters": config.clusters})
    assert "&id" not in dumped, "no YAML anchors: every route owns its dicts"


@pytest.mark.parametrize(
    "targets",
    [
        '[{"host":"demo-service-candidate","port":8080}]',
        '[{"name":"demo-service-candidate","namespace":"sandbox","port":8080}]',
    ],
    ids=["host-for-name", "own-namespace"],
)
def test_the_annotation_is_read_as_the_gateway_api_driver_reads_it(targets: str) -> None:
    marked = httproute_config(http_route(None, targets), SERVICES, BACKENDS)
    assert marked == httproute_config(http_route(None, TARGETS), SERVICES, BACKENDS)
    assert marked.route_configuration["virtual_hosts"][0]["routes"][0]["metadata"]["filter_metadata"]["mirror_ramp"][
        "mirror_clusters"
    ] == [CANDIDATE]


def test_the_driver_sets_and_reads_back_the_translation_without_drift() -> None:
    """The envoy driver's own shape is the translation's: setting 20 % on a translation at 0 %
    gives the translation at 20 % (but for the driver's token), and it reads back without drift."""
    at_zero = httproute_config(http_route(None, TWO_TARGETS), SERVICES, BACKENDS).route_configuration
    at_twenty = httproute_config(
        http_route([mirror_filter("candidate", percent=20), mirror_filter("perf", percent=20)], TWO_TARGETS),
        SERVICES,
        BACKENDS,
    ).route_configuration
    shaped = shape_route_config(at_zero, 20, "token-1")
    for route in shaped["virtual_hosts"][0]["routes"]:
        marker = route.get("metadata", {}).get("filter_metadata", {}).get("mirror_ramp")
        if marker is not None:
            assert marker.pop("write_token") == "token-1" and marker.pop("percent") == 20
    assert shaped == at_twenty
    live = live_mirror(at_twenty)
    assert live.percent == 20 and live.drift == ""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param({"type": "PathPrefix", "value": "/"}, {"prefix": "/"}, id="root"),
        pytest.param({"type": "PathPrefix", "value": "/api"}, {"path_separated_prefix": "/api"}, id="segment"),
        pytest.param({"type": "PathPrefix", "value": "/api/"}, {"path_separated_prefix": "/api"}, id="trailing-slash"),
        pytest.param({"value": "/beta"}, {"path_separated_prefix": "/beta"}, id="type-defaults-to-prefix"),
    ],
)
def test_path_prefix_matches_whole_segments_as_envoy_gateway(path: dict, expected: dict) -> None:
    route = http_route()
    route["spec"]["rules"][0]["matches"] = [{"path": path}]
    assert routes_of(route)[0]["match"] == expected


def test_headers_and_method_are_exact_header_matchers() -> None:
    route = http_route()
    route["spec"]["rules"][0]["matches"] = [
        {
            "headers": [
                {"name": "x-user-type", "value": "beta-tester"},
                {"type": "Exact", "name": "x-b", "value": "1"},
            ],
            "method": "GET",
        }
    ]
    assert routes_of(route)[0]["match"] == {
        "prefix": "/",
        "headers": [
            {"name": "x-user-type", "string_match": {"exact": "beta-tester"}},
            {"name": "x-b", "string_match": {"exact": "1"}},
            {"name": ":method", "string_match": {"exact": "GET"}},
        ],
    }


@pytest.mark.parametrize(
    ("timeouts", "envoy"),
    [
        ({"request": "5s"}, "5s"),
        ({"request": "250ms"}, "0.25s"),
        ({"request": "1m30s"}, "90s"),
        ({"request": "0s"}, "0s"),
        ({"request": "10s", "backendRequest": "2s"}, "2s"),
        ({"backendRequest": "3s"}, "3s"),
        (None, None),
    ],
    ids=str,
)
def test_timeout_is_backend_request_else_request_as_envoy_gateway(timeouts: dict | None, envoy: str | None) -> None:
    route = http_route()
    for rule in route["spec"]["rules"]:
        if timeouts is None:
            del rule["timeouts"]
        else:
            rule["timeouts"] = timeouts
    assert [envoy_route["route"].get("timeout") for envoy_route in routes_of(route)] == [envoy] * 3


def test_weighted_backends_become_weighted_clusters_and_weight_0_is_left_out() -> None:
    route = http_route()
    route["spec"]["rules"][1]["backendRefs"] = [
        {"name": "demo-service-primary", "port": 8080, "weight": 90},
        {"name": "demo-service-candidate", "port": 8080},
        {"name": "demo-service-perf", "port": 8080, "weight": 0},
    ]
    catch_all = routes_of(route)[-1]["route"]
    assert catch_all["weighted_clusters"] == {
        "clusters": [{"name": PRIMARY, "weight": 90}, {"name": CANDIDATE, "weight": 1}]
    }
    assert "cluster" not in catch_all


def test_clusters_per_service_and_port_only_those_referenced() -> None:
    services = [service("primary", (8080, 9090)), service("candidate", (8080, 9090)), service("perf")]
    route = http_route([mirror_filter("candidate", percent=1)])
    route["spec"]["rules"].insert(
        1,
        {
            "name": "admin",
            "matches": [{"path": {"value": "/admin"}}],
            "backendRefs": [{"name": "demo-service-primary", "port": 9090}],
        },
    )
    config = httproute_config(route, services, BACKENDS)
    assert [cluster["name"] for cluster in config.clusters] == [
        PRIMARY,
        "outbound|9090||demo-service-primary.sandbox.svc.cluster.local",
        CANDIDATE,
    ]


def test_a_gateway_parent_names_the_virtual_host_after_gateway_and_listener() -> None:
    route = http_route()
    route["spec"]["parentRefs"] = [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "shop", "sectionName": "http"}
    ]
    config = httproute_config(route, SERVICES, BACKENDS)
    assert config.route_configuration["virtual_hosts"][0]["name"] == "sandbox/shop/http"
    route["spec"]["parentRefs"] = [{"name": "shop", "namespace": "gateways"}]  # kind and group default to a Gateway
    config = httproute_config(route, SERVICES, BACKENDS)
    assert config.route_configuration["virtual_hosts"][0]["name"] == "gateways/shop/*"


def test_output_shares_nothing_and_inputs_are_untouched() -> None:
    route = http_route([mirror_filter("candidate", percent=5)])
    before = copy.deepcopy((route, SERVICES))
    httproute_config(route, SERVICES, BACKENDS)
    assert (route, SERVICES) == before


def _with(resource: dict, path: tuple[Any, ...], value: Any) -> dict:
    out = copy.deepcopy(resource)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


ROUTE = http_route([mirror_filter("candidate", percent=10)])
RULE = ("spec", "rules", 0)
MIRROR = (*RULE, "filters", 0, "requestMirror")


@pytest.mark.parametrize(
    ("route", "message"),
    [
        pytest.param(
            _with(ROUTE, ("spec", "hostnames"), ["demo"]), r"HTTPRoute\.spec\.hostnames: not supported", id="hostnames"
        ),
        pytest.param(_with(ROUTE, ("status",), {}), r"HTTPRoute\.status: not supported", id="status"),
        pytest.param(
            _with(ROUTE, (*RULE, "retry"), {"attempts": 2}),
            r"HTTPRoute\.spec\.rules\[0\]\.retry: not supported .*supported here: name, matches, backendRefs, timeouts, filters",
            id="retry",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "sessionPersistence"), {}),
            r"rules\[0\]\.sessionPersistence: not supported",
            id="session",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "matches", 0, "queryParams"), [{"name": "a", "value": "b"}]),
            r"rules\[0\]\.matches\[0\]\.queryParams: not supported",
            id="query-params",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "matches", 0, "path", "type"), "Exact"),
            r"matches\[0\]\.path\.type 'Exact'",
            id="path-exact",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "matches", 0, "path", "type"), "RegularExpression"),
            r"matches\[0\]\.path\.type 'RegularExpression': the sandbox translates PathPrefix only",
            id="path-regex",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "matches", 0, "headers"), [{"type": "RegularExpression", "name": "a", "value": ".*"}]),
            r"matches\[0\]\.headers\[0\]\.type 'RegularExpression'",
            id="header-regex",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "backendRefs", 0, "namespace"), "other"),
            r"rules\[0\]\.backendRefs\[0\]\.namespace: not supported",
            id="backend-namespace",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "backendRefs", 0, "kind"), "Service"),
            r"backendRefs\[0\]\.kind: not supported",
            id="backend-kind",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "backendRefs", 0, "filters"), []),
            r"backendRefs\[0\]\.filters: not supported",
            id="backend-filters",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "backendRefs", 0, "name"), "demo-service-blue"),
            r"backendRefs\[0\]\.name 'demo-service-blue' is not one of the version Services",
            id="unknown-service",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "backendRefs", 0, "port"), 9090),
            r"backendRefs\[0\]\.port 9090 is not a port",
            id="unknown-port",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "backendRefs", 0, "weight"), 0),
            r"rules\[0\]\.backendRefs: no backend with a weight above 0",
            id="all-weight-0",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "timeouts", "request"), "1.5s"),
            r"timeouts\.request: '1\.5s' is not a Gateway API duration",
            id="go-duration",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "timeouts"), {"request": "1s", "backendRequest": "2s"}),
            r"rules\[0\]\.timeouts: backendRequest must not exceed request",
            id="backend-over-request",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "filters", 0), {"type": "RequestHeaderModifier", "requestHeaderModifier": {}}),
            r"filters\[0\]\.requestHeaderModifier: not supported",
            id="header-modifier",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "filters", 0, "type"), "URLRewrite"),
            r"filters\[0\]\.type 'URLRewrite'",
            id="filter-type",
        ),
        pytest.param(
            _with(ROUTE, (*RULE, "filters", 0), {"type": "RequestMirror"}),
            r"filters\[0\]\.requestMirror is missing",
            id="mirror-missing",
        ),
        pytest.param(
            _with(ROUTE, (*MIRROR, "percent"), 101),
            r"requestMirror\.percent 101: a percent between 0 and 100",
            id="over-100",
        ),
        pytest.param(
            _with(ROUTE, (*MIRROR, "percent"), 0.5), r"requestMirror\.percent: 0\.5 is not a int", id="float-percent"
        ),
        pytest.param(
            _with(ROUTE, (*MIRROR, "percent"), True), r"requestMirror\.percent: True is not a int", id="bool-percent"
        ),
        pytest.param(
            _with(ROUTE, (*MIRROR, "fraction"), {"numerator": 5, "denominator": 1000}),
            r"requestMirror: both percent and fraction",
            id="percent-and-fraction",
        ),
        pytest.param(
            _with(
                ROUTE,
                MIRROR,
                {
                    "backendRef": {"name": "demo-service-candidate", "port": 8080},
                    "fraction": {"numerator": 1, "denominator": 3},
                },
            ),
            r"requestMirror\.fraction: 1/3 is not a whole number of millionths",
            id="fraction-inexact",
        ),
        pytest.param(
            _with(
                ROUTE,
                MIRROR,
                {
                    "backendRef": {"name": "demo-service-candidate", "port": 8080},
                    "fraction": {"numerator": 2, "denominator": 1},
                },
            ),
            r"requestMirror\.fraction: 2/1: a fraction needs",
            id="fraction-over-1",
        ),
        pytest.param(
            _with(ROUTE, (*MIRROR, "backendRef", "kind"), "Service"),
            r"requestMirror\.backendRef\.kind: not supported",
            id="mirror-kind",
        ),
        pytest.param(
            _with(ROUTE, (*MIRROR, "backendRef", "name"), "demo-service-perf"),
            r"rules\[0\]: mirrors to .*perf.* but the annotation mirror-ramp\.io/mirror-targets names",
            id="annotation-disagrees",
        ),
        pytest.param(
            _with(ROUTE, ("spec", "rules", 1, "filters"), [mirror_filter("candidate")]),
            r"rules\[1\] \(name 'primary'\) mirrors, but the ramp owns only the mirror of the rule named 'mirror'",
            id="mirror-on-primary",
        ),
        pytest.param(
            _with(http_route(None, None), ("spec", "rules", 0, "filters"), []),
            r"rules\[0\]: the rule 'mirror' has no RequestMirror filter and the HTTPRoute no annotation",
            id="nothing-to-mark",
        ),
        pytest.param(
            http_route(None, '[{"host":"demo-service","port":8080,"subset":"candidate"}]'),
            r"mirror-targets\[0\]: subset 'candidate': Gateway API has no subsets",
            id="annotation-subset",
        ),
        pytest.param(
            http_route(None, '[{"name":"demo-service-candidate","port":8080,"namespace":"other"}]'),
            r"mirror-targets\[0\]\.namespace 'other': the HTTPRoute's backendRefs reach its own namespace",
            id="annotation-namespace",
        ),
        pytest.param(
            http_route(None, '[{"name":"demo-service-candidate"}]'),
            r"mirror-targets: .*needs a name and a port number",
            id="annotation-no-port",
        ),
        pytest.param(
            _with(
                ROUTE,
                ("spec", "parentRefs"),
                [{"kind": "Service", "group": "", "name": "a"}, {"kind": "Service", "group": "", "name": "b"}],
            ),
            r"parentRefs: 2 parents: the sandbox translates exactly one",
            id="two-parents",
        ),
        pytest.param(
            _with(ROUTE, ("spec", "parentRefs", 0, "kind"), "ServiceImport"),
            r"parentRefs\[0\]: kind 'ServiceImport'",
            id="parent-kind",
        ),
        pytest.param(
            _with(ROUTE, ("spec", "parentRefs", 0, "sectionName"), "http"),
            r"parentRefs\[0\]\.sectionName: not supported for a Service parent",
            id="service-section",
        ),
        pytest.param(_with(ROUTE, ("spec", "rules"), []), r"HTTPRoute\.spec\.rules is empty", id="no-rules"),
        pytest.param(_with(ROUTE, ("kind",), "GRPCRoute"), r"HTTPRoute: kind is 'GRPCRoute'", id="kind"),
        pytest.param(
            _with(ROUTE, ("metadata", "namespace"), None),
            r"HTTPRoute\.metadata\.namespace: None is not a str",
            id="namespace-type",
        ),
    ],
)
def test_refuses_what_the_project_does_not_render_by_path(route: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        httproute_config(route, SERVICES, BACKENDS)


@pytest.mark.parametrize(
    ("services", "backends", "message"),
    [
        pytest.param(
            [_with(SERVICES[0], ("spec", "sessionAffinity"), "ClientIP"), *SERVICES[1:]],
            BACKENDS,
            r"Service\[0\]\.spec\.sessionAffinity: not supported",
            id="service-field",
        ),
        pytest.param(
            [_with(SERVICES[0], ("metadata", "namespace"), "other"), *SERVICES[1:]],
            BACKENDS,
            r"Service\[0\]\.metadata\.namespace 'other'",
            id="service-namespace",
        ),
        pytest.param(
            [*SERVICES, SERVICES[0]],
            BACKENDS,
            r"Service\[3\]: a second Service named 'demo-service-primary'",
            id="duplicate",
        ),
        pytest.param(
            SERVICES,
            {k: v for k, v in BACKENDS.items() if "perf" not in k},
            r"every version Service \['demo-service-primary', 'demo-service-candidate', 'demo-service-perf'\] "
            r"needs one \(missing \['demo-service-perf'\]",
            id="missing-backend",
        ),
        pytest.param(
            SERVICES,
            {**BACKENDS, "demo-service-blue": "127.0.0.1:4"},
            r"every version Service .* unknown \['demo-service-blue'\]",
            id="unknown-backend",
        ),
        pytest.param(
            SERVICES,
            {**BACKENDS, "demo-service-perf": "10.0.0.1:80"},
            r"backends\['demo-service-perf'\]: '10\.0\.0\.1:80' is not a loopback",
            id="not-loopback",
        ),
    ],
)
def test_refuses_services_and_backends_that_do_not_fit(
    services: list[dict], backends: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        httproute_config(ROUTE, services, backends)
