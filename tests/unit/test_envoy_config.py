"""The sandbox's translation of a rendered VirtualService + DestinationRule into istiod's Envoy config."""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirrorramp.errors import ConfigError
from mirrorsandbox.envoy_config import FAULT_FILTER_NAME, mirror_numerator, sidecar_config

GOLDEN = Path(__file__).resolve().parents[1] / "manifests" / "golden" / "istio-dev"
FQDN = "demo-service.sandbox.svc.cluster.local"
PRIMARY = f"outbound|8080|primary|{FQDN}"
CANDIDATE = f"outbound|8080|candidate|{FQDN}"
PERF = f"outbound|8080|perf|{FQDN}"
BACKENDS = {"primary": "127.0.0.1:18001", "candidate": "127.0.0.1:18002", "perf": "127.0.0.1:18003"}
TARGETS = '[{"host":"demo-service","port":8080,"subset":"candidate"}]'
TWO_TARGETS = (
    '[{"host":"demo-service","port":8080,"subset":"candidate"},{"host":"demo-service","port":8080,"subset":"perf"}]'
)


def destination(subset: str, port: int = 8080) -> dict[str, Any]:
    return {"host": "demo-service", "port": {"number": port}, "subset": subset}


def virtual_service(mirror_fields: dict[str, Any] | None = None, targets: str = TARGETS, **route_fields: Any) -> dict:
    """The shape mirror_istio renders for inventories/local: a GET|HEAD route `mirror` carrying the
    mirror fields, then the catch-all `primary`; `route_fields` go on both routes."""
    to_primary = {"route": [{"destination": destination("primary")}], "timeout": "5s", **route_fields}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": "demo-service",
            "namespace": "sandbox",
            "labels": {"app.kubernetes.io/managed-by": "mirror-ramp"},
            "annotations": {"mirror-ramp.io/mirror-targets": targets},
        },
        "spec": {
            "hosts": ["demo-service"],
            "http": [
                {"name": "mirror", "match": [{"method": {"regex": "GET|HEAD"}}], **to_primary, **(mirror_fields or {})},
                {"name": "primary", **copy.deepcopy(to_primary)},
            ],
        },
    }


def destination_rule(traffic_policy: dict[str, Any] | None = None) -> dict:
    subsets = [
        {"name": name, "labels": {"version": f"v{i}"}} for i, name in enumerate(["primary", "candidate", "perf"])
    ]
    spec: dict[str, Any] = {"host": "demo-service", "subsets": subsets}
    if traffic_policy is not None:
        spec["trafficPolicy"] = traffic_policy
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "demo-service", "namespace": "sandbox"},
        "spec": spec,
    }


def routes_of(vs: dict, dr: dict | None = None) -> list[dict]:
    config = sidecar_config(vs, dr or destination_rule(), BACKENDS)
    return config.route_configuration["virtual_hosts"][0]["routes"]


def clusters_of(dr: dict) -> dict[str, dict]:
    return {cluster["name"]: cluster for cluster in sidecar_config(virtual_service(), dr, BACKENDS).clusters}


def policy(cluster: str, numerator: int) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "runtime_fraction": {"default_value": {"numerator": numerator, "denominator": "MILLION"}},
        "trace_sampled": False,
        "disable_shadow_host_suffix_append": True,
    }


@pytest.mark.parametrize(
    ("percent", "numerator"),
    [
        (100, 1_000_000),
        (20, 200_000),
        (1, 10_000),
        (0.5, 5_000),
        (0.1, 1_000),
        (0.0001, 1),
        # Go's uint32(0.57 * 10000): the float product is 5699.999999999999, truncated (the notes).
        (0.57, 5_699),
        (0.00005, 0),
    ],
    ids=lambda value: str(value),
)
def test_numerator_truncates_like_istiod(percent: float, numerator: int) -> None:
    assert mirror_numerator(percent) == numerator


def test_numerator_is_the_correctly_rounded_product_truncated() -> None:
    """Go's uint32(p * 10000): IEEE multiplication (the exact product rounded to the nearest
    double, which float(Fraction) computes independently), then truncation toward zero."""
    percents = [step / 10000 for step in range(1, 1_000_001, 37)] + [0.57, 0.07, 1.15, 4.35, 99.99]
    for percent in percents:
        assert mirror_numerator(percent) == math.trunc(float(Fraction(percent) * 10000)), percent


@pytest.mark.parametrize(
    ("mirror_fields", "targets", "policies", "marked"),
    [
        pytest.param(
            {"mirror": destination("candidate"), "mirrorPercentage": {"value": 10.0}},
            TARGETS,
            [policy(CANDIDATE, 100_000)],
            [CANDIDATE],
            id="one-target-10",
        ),
        pytest.param(
            {"mirror": destination("candidate")},
            TARGETS,
            [policy(CANDIDATE, 1_000_000)],
            [CANDIDATE],
            id="absent-is-100",
        ),
        pytest.param(
            {"mirror": destination("candidate"), "mirrorPercentage": {"value": 0.57}},
            TARGETS,
            [policy(CANDIDATE, 5_699)],
            [CANDIDATE],
            id="0.57-truncated",
        ),
        pytest.param(
            {"mirror": destination("candidate"), "mirrorPercentage": {"value": 0.0}},
            TARGETS,
            [],
            [CANDIDATE],
            id="0-none",
        ),
        pytest.param(None, TARGETS, [], [CANDIDATE], id="rendered-at-0-marked-from-annotation"),
        pytest.param(
            {
                "mirrors": [
                    {"destination": destination("candidate"), "percentage": {"value": 10.0}},
                    {"destination": destination("perf"), "percentage": {"value": 10.0}},
                ]
            },
            TWO_TARGETS,
            [policy(CANDIDATE, 100_000), policy(PERF, 100_000)],
            [CANDIDATE, PERF],
            id="two-mirrors-in-order",
        ),
        pytest.param(
            {
                "mirrors": [
                    {"destination": destination("candidate"), "percentage": {"value": 0.0}},
                    {"destination": destination("perf")},
                ]
            },
            TWO_TARGETS,
            [policy(PERF, 1_000_000)],
            [CANDIDATE, PERF],
            id="mirrors-0-skipped-absent-100",
        ),
        pytest.param(None, TWO_TARGETS, [], [CANDIDATE, PERF], id="two-targets-at-0"),
    ],
)
def test_mirror_policies_and_marker(
    mirror_fields: dict | None, targets: str, policies: list[dict], marked: list[str]
) -> None:
    mirror_route, primary_route = routes_of(virtual_service(mirror_fields, targets))
    assert mirror_route["route"].get("request_mirror_policies", []) == policies
    assert mirror_route["metadata"] == {"filter_metadata": {"mirror_ramp": {"mirror_clusters": marked}}}
    assert "request_mirror_policies" not in primary_route["route"] and "metadata" not in primary_route


def test_local_render_translates_to_two_routes_and_clusters_per_subset() -> None:
    config = sidecar_config(virtual_service(), destination_rule(), BACKENDS)
    mirror_route, primary_route = config.route_configuration["virtual_hosts"][0]["routes"]
    assert config.route_configuration["name"] == "8080"
    assert config.route_configuration["validate_clusters"] is True
    assert mirror_route["name"] == "mirror" and primary_route["name"] == "primary"
    assert mirror_route["match"] == {
        "prefix": "/",
        "case_sensitive": True,
        "headers": [{"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}}],
    }
    assert primary_route["match"] == {"prefix": "/", "case_sensitive": True}, "the catch-all"
    for route in (mirror_route, primary_route):
        assert route["route"]["cluster"] == PRIMARY
        assert route["route"]["timeout"] == "5s"
    assert [cluster["name"] for cluster in config.clusters] == [PRIMARY, CANDIDATE, PERF]
    endpoint = config.clusters[1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint == {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 18002}}}
    assert config.http_filters == [
        {
            "name": FAULT_FILTER_NAME,
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"},
        }
    ]


def test_output_shares_nothing_and_inputs_are_untouched() -> None:
    vs = virtual_service({"mirror": destination("candidate"), "mirrorPercentage": {"value": 5.0}})
    dr = destination_rule({"outlierDetection": {"consecutive5xxErrors": 1}})
    before = copy.deepcopy((vs, dr))
    config = sidecar_config(vs, dr, BACKENDS)
    assert (vs, dr) == before
    dumped = yaml.safe_dump({"routes": config.route_configuration, "clusters": config.clusters})
    assert "&id" not in dumped, "no YAML anchors: every route owns its dicts (the driver edits them one by one)"


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        pytest.param(
            [{"headers": {"x-user-type": {"exact": "beta-tester"}}, "method": {"regex": "GET|HEAD"}}],
            {
                "prefix": "/",
                "case_sensitive": True,
                "headers": [
                    {"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}},
                    {"name": "x-user-type", "string_match": {"exact": "beta-tester"}},
                ],
            },
            id="dev-beta-testers",
        ),
        pytest.param(
            [{"headers": {"content-type": {"prefix": "application/grpc"}}}],
            {
                "prefix": "/",
                "case_sensitive": True,
                "headers": [{"name": "content-type", "string_match": {"prefix": "application/grpc"}}],
            },
            id="grpc",
        ),
        pytest.param([{"uri": {"exact": "/a"}}], {"path": "/a", "case_sensitive": True}, id="uri-exact"),
        pytest.param([{"uri": {"prefix": "/api"}}], {"prefix": "/api", "case_sensitive": True}, id="uri-prefix"),
        pytest.param(
            [{"uri": {"regex": "/v[0-9]+/.*"}}],
            {"safe_regex": {"regex": "/v[0-9]+/.*"}, "case_sensitive": True},
            id="uri-regex",
        ),
        pytest.param(
            [{"queryParams": {"debug": {"exact": "1"}}}],
            {
                "prefix": "/",
                "case_sensitive": True,
                "query_parameters": [{"name": "debug", "string_match": {"exact": "1"}}],
            },
            id="query",
        ),
    ],
)
def test_route_match(match: list[dict], expected: dict) -> None:
    vs = virtual_service()
    vs["spec"]["http"][0]["match"] = match
    assert routes_of(vs)[0]["match"] == expected


def test_several_match_entries_become_one_marked_route_each() -> None:
    """mirror_match as a list: istiod writes one Envoy route per entry (OR), each a full copy."""
    vs = virtual_service({"mirror": destination("candidate"), "mirrorPercentage": {"value": 5.0}})
    vs["spec"]["http"][0]["match"] = [
        {"headers": {"x-user-type": {"exact": "beta-tester"}}, "method": {"regex": "GET|HEAD"}},
        {"uri": {"prefix": "/beta"}, "method": {"regex": "GET|HEAD"}},
    ]
    routes = routes_of(vs)
    assert [route["name"] for route in routes] == ["mirror", "mirror", "primary"]
    assert routes[0]["match"]["headers"][1] == {"name": "x-user-type", "string_match": {"exact": "beta-tester"}}
    assert routes[1]["match"]["prefix"] == "/beta"
    for route in routes[:2]:
        assert route["route"]["request_mirror_policies"] == [policy(CANDIDATE, 50_000)]
        assert route["metadata"]["filter_metadata"]["mirror_ramp"]["mirror_clusters"] == [CANDIDATE]
    assert routes[0]["route"] is not routes[1]["route"], "the driver edits each route's action on its own"


DEFAULT_RETRY = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retriable_status_codes": [503],
    "host_selection_retry_max_attempts": 5,
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            },
        }
    ],
}
PREDICATE = DEFAULT_RETRY["retry_host_predicate"]


@pytest.mark.parametrize(
    ("retries", "expected"),
    [
        pytest.param(None, DEFAULT_RETRY, id="unset-istiod-default"),
        pytest.param({"attempts": 0}, None, id="zero-attempts-none"),
        pytest.param(
            {"attempts": 3, "perTryTimeout": "2s", "retryOn": "connect-failure,refused-stream,unavailable"},
            {
                "retry_on": "connect-failure,refused-stream,unavailable",
                "num_retries": 3,
                "host_selection_retry_max_attempts": 5,
                "retry_host_predicate": PREDICATE,
                "per_try_timeout": "2s",
            },
            id="staging-like",
        ),
        pytest.param(
            {"attempts": 1, "retryOn": "5xx, 503 ,599"},
            {
                "retry_on": "5xx,599,retriable-status-codes",
                "num_retries": 1,
                "retriable_status_codes": [503],
                "host_selection_retry_max_attempts": 5,
                "retry_host_predicate": PREDICATE,
            },
            id="codes-split-out-only-known-statuses",
        ),
    ],
)
def test_retry_policy_follows_istiod(retries: dict | None, expected: dict | None) -> None:
    vs = virtual_service()
    if retries is not None:
        vs["spec"]["http"][0]["retries"] = retries
    assert routes_of(vs)[0]["route"].get("retry_policy") == expected


def test_consistent_hash_hashes_the_header_and_keeps_retries_on_the_same_host() -> None:
    dr = destination_rule({"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user-id"}}})
    route = routes_of(virtual_service(), dr)[0]["route"]
    assert route["hash_policy"] == [{"header": {"header_name": "x-user-id"}}]
    assert "retry_host_predicate" not in route["retry_policy"]
    assert all(cluster["lb_policy"] == "RING_HASH" for cluster in clusters_of(dr).values())


@pytest.mark.parametrize(
    ("timeout", "envoy"),
    [("5s", "5s"), ("250ms", "0.25s"), ("1m30s", "90s"), ("1.5s", "1.5s"), ("1h", "3600s"), (None, "0s")],
    ids=str,
)
def test_timeout(timeout: str | None, envoy: str) -> None:
    vs = virtual_service()
    for route in vs["spec"]["http"]:
        if timeout is None:
            del route["timeout"]
        else:
            route["timeout"] = timeout
    assert [route["route"]["timeout"] for route in routes_of(vs)] == [envoy, envoy]


def test_fault_goes_to_the_fault_filter_of_every_route() -> None:
    fault = {
        "abort": {"httpStatus": 503, "percentage": {"value": 0.5}},
        "delay": {"fixedDelay": "2s", "percentage": {"value": 1.0}},
    }
    for route in routes_of(virtual_service(fault=fault)):
        assert route["typed_per_filter_config"] == {
            FAULT_FILTER_NAME: {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "delay": {"fixed_delay": "2s", "percentage": {"numerator": 10_000, "denominator": "MILLION"}},
                "abort": {"http_status": 503, "percentage": {"numerator": 5_000, "denominator": "MILLION"}},
            }
        }


def test_clusters_without_traffic_policy_have_istiods_defaults() -> None:
    cluster = clusters_of(destination_rule())[CANDIDATE]
    assert cluster["connect_timeout"] == "10s" and cluster["lb_policy"] == "LEAST_REQUEST"
    assert cluster["circuit_breakers"] == {
        "thresholds": [
            {
                "max_connections": 4294967295,
                "max_pending_requests": 4294967295,
                "max_requests": 4294967295,
                "max_retries": 4294967295,
                "track_remaining": True,
            }
        ]
    }
    assert not {"outlier_detection", "common_lb_config", "typed_extension_protocol_options"} & set(cluster)


def test_connection_pool_and_outlier_detection_on_every_subset() -> None:
    dr = destination_rule(
        {
            "connectionPool": {
                "tcp": {"maxConnections": 100, "connectTimeout": "1s"},
                "http": {"http1MaxPendingRequests": 10, "http2MaxRequests": 50, "maxRequestsPerConnection": 7},
            },
            "outlierDetection": {
                "consecutive5xxErrors": 3,
                "interval": "10s",
                "baseEjectionTime": "30s",
                "maxEjectionPercent": 50,
            },
        }
    )
    clusters = clusters_of(dr)
    assert list(clusters) == [PRIMARY, CANDIDATE, PERF]
    for cluster in clusters.values():
        assert cluster["connect_timeout"] == "1s"
        assert cluster["circuit_breakers"]["thresholds"][0] == {
            "max_connections": 100,
            "max_pending_requests": 10,
            "max_requests": 50,
            "max_retries": 4294967295,
            "track_remaining": True,
        }
        options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert options["common_http_protocol_options"] == {"max_requests_per_connection": 7}
        assert cluster["outlier_detection"] == {
            "enforcing_success_rate": 0,
            "consecutive_5xx": 3,
            "enforcing_consecutive_5xx": 100,
            "interval": "10s",
            "base_ejection_time": "30s",
            "max_ejection_percent": 50,
        }
        assert cluster["common_lb_config"] == {"healthy_panic_threshold": {"value": 0}}


GATEWAY_ERRORS = {
    "consecutive5xxErrors": 0,
    "consecutiveGatewayErrors": 3,
    "interval": "1s",
    "baseEjectionTime": "5s",
    "maxEjectionPercent": 100,
}


def with_subset_policy(dr: dict, subset: int, traffic_policy: dict[str, Any]) -> dict:
    return _with(dr, ("spec", "subsets", subset, "trafficPolicy"), traffic_policy)


def test_a_candidate_only_outlier_detection_ejects_the_candidate_only() -> None:
    """inventories/local: the subset's own policy; the single-host primary keeps istiod's defaults
    (no outlier detection, no panic threshold 0 that would let it be ejected)."""
    clusters = clusters_of(with_subset_policy(destination_rule(), 1, {"outlierDetection": GATEWAY_ERRORS}))

    assert clusters[CANDIDATE]["outlier_detection"] == {
        "enforcing_success_rate": 0,
        "consecutive_5xx": 0,
        "enforcing_consecutive_5xx": 0,
        "consecutive_gateway_failure": 3,
        "enforcing_consecutive_gateway_failure": 100,
        "interval": "1s",
        "base_ejection_time": "5s",
        "max_ejection_percent": 100,
    }
    assert clusters[CANDIDATE]["common_lb_config"] == {"healthy_panic_threshold": {"value": 0}}
    for other in (PRIMARY, PERF):
        assert not {"outlier_detection", "common_lb_config"} & set(clusters[other]), other
    assert clusters[PRIMARY] == clusters_of(destination_rule())[PRIMARY]


def test_a_subset_connection_pool_replaces_the_top_level_one_whole() -> None:
    """istiod's MergeSubsetTrafficPolicy: the subset's connectionPool is taken as it is, so what it
    leaves out (the top-level tcp settings here) falls back to istiod's defaults, not the top level's."""
    top = {
        "connectionPool": {
            "tcp": {"maxConnections": 100, "connectTimeout": "1s"},
            "http": {"http1MaxPendingRequests": 10, "maxRequestsPerConnection": 7},
        },
        "outlierDetection": {"consecutive5xxErrors": 5},
    }
    dr = with_subset_policy(destination_rule(top), 1, {"connectionPool": {"http": {"http2MaxRequests": 50}}})

    clusters = clusters_of(dr)

    candidate = clusters[CANDIDATE]
    assert candidate["connect_timeout"] == "10s"
    assert candidate["circuit_breakers"]["thresholds"][0] == {
        "max_connections": 4294967295,
        "max_pending_requests": 4294967295,
        "max_requests": 50,
        "max_retries": 4294967295,
        "track_remaining": True,
    }
    assert "typed_extension_protocol_options" not in candidate
    # The subset did not set outlierDetection: the top-level one applies to it too.
    assert candidate["outlier_detection"]["consecutive_5xx"] == 5
    for other in (PRIMARY, PERF):
        assert clusters[other]["connect_timeout"] == "1s"
        assert clusters[other]["circuit_breakers"]["thresholds"][0]["max_connections"] == 100
        assert clusters[other]["circuit_breakers"]["thresholds"][0]["max_requests"] == 4294967295


def test_a_subset_outlier_detection_replaces_the_top_level_one_whole() -> None:
    top = {"outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s", "maxEjectionPercent": 50}}
    dr = with_subset_policy(destination_rule(top), 1, {"outlierDetection": {"consecutiveGatewayErrors": 3}})

    clusters = clusters_of(dr)

    assert clusters[CANDIDATE]["outlier_detection"] == {
        "enforcing_success_rate": 0,
        "consecutive_gateway_failure": 3,
        "enforcing_consecutive_gateway_failure": 100,
    }
    assert clusters[PRIMARY]["outlier_detection"]["interval"] == "10s"


def test_a_subset_consistent_hash_hashes_the_routes_to_that_subset_only() -> None:
    """istiod's hashForHTTPDestination: the hash of the destination's subset, else the top level's."""
    by_user = {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user-id"}}}
    dr = with_subset_policy(destination_rule(), 0, by_user)

    clusters = clusters_of(dr)
    routes = routes_of(virtual_service(), dr)

    assert [route["route"]["hash_policy"] for route in routes] == [[{"header": {"header_name": "x-user-id"}}]] * 2
    assert clusters[PRIMARY]["lb_policy"] == "RING_HASH"
    assert clusters[CANDIDATE]["lb_policy"] == "LEAST_REQUEST"
    by_session = {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-session"}}}
    overridden = with_subset_policy(destination_rule(by_user), 0, by_session)
    assert routes_of(virtual_service(), overridden)[0]["route"]["hash_policy"] == [
        {"header": {"header_name": "x-session"}}
    ]
    to_candidate_only = with_subset_policy(destination_rule(), 1, by_user)
    assert all("hash_policy" not in route["route"] for route in routes_of(virtual_service(), to_candidate_only))


@pytest.mark.parametrize(
    ("outlier", "expected"),
    [
        pytest.param(
            {"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 3},
            {"consecutive_5xx": 0, "enforcing_consecutive_5xx": 0, "consecutive_gateway_failure": 3},
            id="gateway-errors-only",
        ),
        pytest.param(
            {"consecutiveGatewayErrors": 2},
            {"consecutive_gateway_failure": 2},  # Envoy's consecutive_5xx (5, enforced) stays
            id="gateway-errors-beside-envoys-5xx-default",
        ),
        pytest.param(
            {"consecutive5xxErrors": 5, "consecutiveGatewayErrors": 0},
            {"consecutive_5xx": 5, "consecutive_gateway_failure": 0, "enforcing_consecutive_gateway_failure": 0},
            id="gateway-errors-off",
        ),
    ],
)
def test_gateway_errors_as_istiod_translates_them(outlier: dict, expected: dict) -> None:
    """istiod (cluster_traffic_policy.go, applyOutlierDetection): each count given is enforced at
    100 %, a count of 0 at 0 %; a count not given is left to Envoy's default."""
    cluster = clusters_of(destination_rule({"outlierDetection": outlier}))[CANDIDATE]
    enforced = {
        f"enforcing_{field}": 100
        for field in ("consecutive_5xx", "consecutive_gateway_failure")
        if expected.get(field, 0) > 0
    }
    assert cluster["outlier_detection"] == {"enforcing_success_rate": 0, **expected, **enforced}
    assert cluster["common_lb_config"] == {"healthy_panic_threshold": {"value": 0}}


@pytest.mark.parametrize("service", ["user-service", "order-service"])
def test_dev_goldens_translate(service: str) -> None:
    """The role's real output for inventories/dev (the goldens the render tests compare against)."""
    vs = yaml.safe_load((GOLDEN / f"virtualservice-shop-dev-{service}.yml.golden").read_text())
    dr = yaml.safe_load((GOLDEN / f"destinationrule-shop-dev-{service}.yml.golden").read_text())
    subsets = [subset["name"] for subset in dr["spec"]["subsets"]]
    config = sidecar_config(vs, dr, {name: f"127.0.0.1:{18000 + i}" for i, name in enumerate(subsets)})
    routes = {route["name"]: route for route in config.route_configuration["virtual_hosts"][0]["routes"]}
    fqdn = f"{service}.shop-dev.svc.cluster.local"
    marked = routes["mirror"]["metadata"]["filter_metadata"]["mirror_ramp"]["mirror_clusters"]
    policies = routes["mirror"]["route"]["request_mirror_policies"]
    assert [p["cluster"] for p in policies] == marked
    if service == "order-service":
        assert marked == [f"outbound|8080|candidate|{fqdn}", f"outbound|8080|perf|{fqdn}"]
        assert {p["runtime_fraction"]["default_value"]["numerator"] for p in policies} == {100_000}
        assert routes["grpc"]["route"]["cluster"] == f"outbound|50051|stable|{fqdn}"
        assert {cluster["name"].split("|")[1] for cluster in config.clusters} == {"8080", "50051"}
    else:
        assert marked == [f"outbound|8080|candidate|{fqdn}"]
        assert policies[0]["runtime_fraction"]["default_value"]["numerator"] == 5_000
        assert config.clusters[0]["lb_policy"] == "RING_HASH"
    assert list(routes)[-1] == "primary" and config.route_configuration["name"] == "8080"


def _with(resource: dict, path: tuple[Any, ...], value: Any) -> dict:
    out = copy.deepcopy(resource)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


VS = virtual_service({"mirror": destination("candidate"), "mirrorPercentage": {"value": 10.0}})
DR = destination_rule()


@pytest.mark.parametrize(
    ("vs", "dr", "message"),
    [
        pytest.param(
            _with(VS, ("spec", "gateways"), ["mesh"]),
            DR,
            r"VirtualService\.spec\.gateways: not supported",
            id="gateways",
        ),
        pytest.param(_with(VS, ("spec", "tcp"), []), DR, r"VirtualService\.spec\.tcp: not supported", id="tcp"),
        pytest.param(
            _with(VS, ("spec", "http", 0, "rewrite"), {"uri": "/"}),
            DR,
            r"spec\.http\[0\]\.rewrite: not supported",
            id="rewrite",
        ),
        pytest.param(
            _with(VS, ("spec", "http", 1, "match"), [{"ignoreUriCase": True}]),
            DR,
            r"spec\.http\[1\]\.match\[0\]\.ignoreUriCase: not supported .*supported here: method, uri, headers, queryParams",
            id="ignoreUriCase",
        ),
        pytest.param(
            _with(VS, ("spec", "http", 0, "route", 0, "weight"), 100),
            DR,
            r"spec\.http\[0\]\.route\[0\]\.weight",
            id="weight",
        ),
        pytest.param(
            _with(VS, ("spec", "http", 0, "retries"), {"attempts": 1, "retryRemoteLocalities": True}),
            DR,
            r"spec\.http\[0\]\.retries\.retryRemoteLocalities: not supported",
            id="retry-field",
        ),
        pytest.param(
            _with(VS, ("spec", "http", 0, "mirror", "port"), {"name": "http"}),
            DR,
            r"spec\.http\[0\]\.mirror\.port\.name",
            id="port-name",
        ),
        pytest.param(
            _with(VS, ("spec", "http", 0, "match", 0, "method"), {"exact": "GET", "prefix": "G"}),
            DR,
            r"method: exactly one of exact, prefix, regex",
            id="two-string-matches",
        ),
        pytest.param(
            _with(VS, ("spec", "http", 0, "mirrorPercentage", "value"), "10"),
            DR,
            r"mirrorPercentage\.value: '10' is not a int or float",
            id="type",
        ),
        pytest.param(
            _with(VS, ("spec", "http", 0, "mirrorPercentage", "value"), 101), DR, r"between 0 and 100", id="over-100"
        ),
        pytest.param(
            _with(
                VS,
                ("spec", "http", 0, "route"),
                [{"destination": destination("primary")}, {"destination": destination("candidate")}],
            ),
            DR,
            r"2 destinations",
            id="split",
        ),
        pytest.param(
            _with(VS, ("spec", "http", 0, "route", 0, "destination", "subset"), "blue"),
            DR,
            r"subset 'blue' is not a DestinationRule subset",
            id="subset",
        ),
        pytest.param(
            _with(VS, ("spec", "http", 0, "mirror", "host"), "other"), DR, r"mirror\.host 'other'", id="other-host"
        ),
        pytest.param(
            _with(VS, ("spec", "http", 1, "mirror"), destination("candidate")),
            DR,
            r"spec\.http\[1\] \(name 'primary'\) mirrors",
            id="mirror-on-primary",
        ),
        pytest.param(
            _with(VS, ("spec", "http", 0, "mirror", "subset"), "perf"),
            DR,
            r"mirrors to .*perf.* but the annotation",
            id="annotation-disagrees",
        ),
        pytest.param(
            _with(VS, ("spec", "http", 0, "timeout"), "5"), DR, r"timeout: '5' is not a duration", id="duration"
        ),
        pytest.param(_with(VS, ("kind",), "Gateway"), DR, r"kind is 'Gateway'", id="kind"),
        pytest.param(
            VS,
            _with(DR, ("spec", "trafficPolicy"), {"tls": {"mode": "ISTIO_MUTUAL"}}),
            r"DestinationRule\.spec\.trafficPolicy\.tls: not supported .*loadBalancer, connectionPool, outlierDetection",
            id="tls",
        ),
        pytest.param(
            VS,
            _with(DR, ("spec", "trafficPolicy"), {"outlierDetection": {"consecutiveLocalOriginFailures": 1}}),
            r"outlierDetection\.consecutiveLocalOriginFailures",
            id="local-origin-failures",
        ),
        pytest.param(
            VS,
            _with(DR, ("spec", "trafficPolicy"), {"connectionPool": {"http": {"maxRetries": 3}}}),
            r"connectionPool\.http\.maxRetries",
            id="max-retries",
        ),
        pytest.param(
            VS,
            _with(DR, ("spec", "subsets", 1, "trafficPolicy"), {"tls": {"mode": "ISTIO_MUTUAL"}}),
            r"DestinationRule\.spec\.subsets\[1\]\.trafficPolicy\.tls: not supported .*loadBalancer, connectionPool",
            id="subset-policy-tls",
        ),
        pytest.param(
            VS,
            _with(
                DR,
                ("spec", "subsets", 1, "trafficPolicy"),
                {"outlierDetection": {"consecutiveGatewayErrors": 3, "splitExternalLocalOriginErrors": True}},
            ),
            r"^DestinationRule\.spec\.subsets\[1\]\.trafficPolicy\.outlierDetection\.splitExternalLocalOriginErrors: "
            r"not supported",
            id="subset-policy-unknown-field",
        ),
        pytest.param(
            VS,
            _with(DR, ("spec", "subsets", 1, "trafficPolicy"), {"connectionPool": {"tcp": {"maxConnections": "10"}}}),
            r"subsets\[1\]\.trafficPolicy\.connectionPool\.tcp\.maxConnections: '10' is not a int",
            id="subset-policy-type",
        ),
        pytest.param(
            VS,
            _with(DR, ("spec", "subsets", 1, "trafficPolicy"), {"outlierDetection": {"interval": "1 s"}}),
            r"^DestinationRule\.spec\.subsets\[1\]\.trafficPolicy\.outlierDetection\.interval: '1 s' is not a duration",
            id="subset-policy-duration",
        ),
        pytest.param(
            VS,
            _with(DR, ("spec", "trafficPolicy"), {"connectionPool": {"tcp": {"connectTimeout": "1 s"}}}),
            r"^DestinationRule\.spec\.trafficPolicy\.connectionPool\.tcp\.connectTimeout: '1 s' is not a duration",
            id="top-policy-duration",
        ),
        pytest.param(
            VS,
            _with(DR, ("spec", "host"), "other"),
            r"spec\.host 'other' is not the VirtualService's host",
            id="dr-host",
        ),
    ],
)
def test_refuses_what_the_role_does_not_render_by_name(vs: dict, dr: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sidecar_config(vs, dr, BACKENDS)


@pytest.mark.parametrize(
    ("backends", "message"),
    [
        (
            {"primary": "127.0.0.1:1", "candidate": "127.0.0.1:2"},
            r"every DestinationRule subset \['primary', 'candidate', 'perf'\] needs one \(missing \['perf'\]",
        ),
        ({**BACKENDS, "blue": "127.0.0.1:4"}, r"every DestinationRule subset .* unknown \['blue'\]"),
        ({**BACKENDS, "perf": "10.0.0.1:80"}, r"backends\['perf'\]: '10.0.0.1:80' is not a loopback"),
        ({**BACKENDS, "perf": "127.0.0.1"}, r"is not a loopback 'address:port'"),
    ],
    ids=["missing", "unknown", "not-loopback", "no-port"],
)
def test_refuses_backends_that_do_not_match_the_subsets(backends: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sidecar_config(VS, DR, backends)
