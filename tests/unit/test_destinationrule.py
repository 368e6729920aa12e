"""The DestinationRule builder (mirrorramp.destinationrule) that role mirror_istio renders through
the filter mirror_istio_destination_rule and the sandbox harness loads into Envoy."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible.plugins.filter.core import to_nice_yaml

from mirrorramp.destinationrule import destination_rule
from mirrorramp.errors import ConfigError
from tests.support.plugin_files import load_filter

REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN = REPO_ROOT / "tests" / "manifests" / "golden" / "istio-dev"
LABELS = {"app.kubernetes.io/part-of": "mirror-ramp", "mirror-ramp.io/environment": "dev"}
# What the template writes before the resource (roles/mirror_istio/templates/destinationrule.yml.j2).
RENDER_HEADER = "---\n# Rendered by the role mirror_istio.\n"


FILTER = load_filter("mirror_istio_destination_rule")


def service(**keys: Any) -> dict[str, Any]:
    return {
        "name": "user-service",
        "port": 8080,
        "subsets": [
            {"name": "stable", "labels": {"version": "v1"}, "workload": "user-service-v1"},
            {"name": "candidate", "labels": {"version": "v2"}, "workload": "user-service-v2"},
        ],
        **keys,
    }


def build(svc: dict[str, Any]) -> dict[str, Any]:
    return destination_rule(svc, host=svc["name"], namespace="shop", labels=LABELS)


def test_subsets_and_metadata_without_a_policy() -> None:
    rule = build(service(host="ignored-here"))

    assert rule == {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "user-service", "namespace": "shop", "labels": LABELS},
        "spec": {
            "host": "user-service",
            # The workload is the gates' (destination_workload), not the DestinationRule's.
            "subsets": [
                {"name": "stable", "labels": {"version": "v1"}},
                {"name": "candidate", "labels": {"version": "v2"}},
            ],
        },
    }


def test_host_is_the_callers() -> None:
    svc = service()
    rule = destination_rule(svc, host="user-service.shop.svc.cluster.local", namespace="shop", labels={})
    assert rule["spec"]["host"] == "user-service.shop.svc.cluster.local"


# One row per inventory key: where it goes in the trafficPolicy and how it is written.
FIELDS = [
    pytest.param(
        "load_balancer",
        {"consistent_hash_header": "x-user-id"},
        {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user-id"}}},
        id="consistent_hash_header",
    ),
    pytest.param(
        "connection_pool",
        {"tcp": {"max_connections": 100}},
        {"connectionPool": {"tcp": {"maxConnections": 100}}},
        id="max_connections",
    ),
    pytest.param(
        "connection_pool",
        {"tcp": {"connect_timeout": "1s"}},
        {"connectionPool": {"tcp": {"connectTimeout": "1s"}}},
        id="connect_timeout",
    ),
    pytest.param(
        "connection_pool",
        {"http": {"http1_max_pending_requests": 10}},
        {"connectionPool": {"http": {"http1MaxPendingRequests": 10}}},
        id="http1_max_pending_requests",
    ),
    pytest.param(
        "connection_pool",
        {"http": {"http2_max_requests": 20}},
        {"connectionPool": {"http": {"http2MaxRequests": 20}}},
        id="http2_max_requests",
    ),
    pytest.param(
        "connection_pool",
        {"http": {"max_requests_per_connection": 7}},
        {"connectionPool": {"http": {"maxRequestsPerConnection": 7}}},
        id="max_requests_per_connection",
    ),
    pytest.param(
        "outlier_detection",
        {"consecutive_5xx_errors": 0},
        {"outlierDetection": {"consecutive5xxErrors": 0}},
        id="consecutive_5xx_errors",
    ),
    pytest.param(
        "outlier_detection",
        {"consecutive_gateway_errors": 3},
        {"outlierDetection": {"consecutiveGatewayErrors": 3}},
        id="consecutive_gateway_errors",
    ),
    pytest.param("outlier_detection", {"interval": "1s"}, {"outlierDetection": {"interval": "1s"}}, id="interval"),
    pytest.param(
        "outlier_detection",
        {"base_ejection_time": "30s"},
        {"outlierDetection": {"baseEjectionTime": "30s"}},
        id="base_ejection_time",
    ),
    pytest.param(
        "outlier_detection",
        {"max_ejection_percent": 100},
        {"outlierDetection": {"maxEjectionPercent": 100}},
        id="max_ejection_percent",
    ),
    # A count given as a string of digits (an extra var written key=value) is still a count.
    pytest.param(
        "connection_pool",
        {"tcp": {"max_connections": "100"}},
        {"connectionPool": {"tcp": {"maxConnections": 100}}},
        id="count-as-digits",
    ),
    # Empty groups render nothing.
    pytest.param("connection_pool", {"tcp": {}, "http": {}}, None, id="empty-pool-groups"),
    pytest.param("outlier_detection", {}, None, id="empty-outlier-detection"),
    pytest.param("load_balancer", {}, None, id="empty-load-balancer"),
    pytest.param("connection_pool", None, None, id="null-pool"),
]


@pytest.mark.parametrize(("key", "value", "policy"), FIELDS)
def test_each_field_of_the_service_policy(key: str, value: Any, policy: dict | None) -> None:
    rule = build(service(**{key: value}))

    assert rule["spec"].get("trafficPolicy") == policy
    assert all("trafficPolicy" not in subset for subset in rule["spec"]["subsets"])


@pytest.mark.parametrize(("key", "value", "policy"), [row for row in FIELDS if row.values[0] != "load_balancer"])
def test_each_field_of_a_subset_policy(key: str, value: Any, policy: dict | None) -> None:
    svc = service()
    svc["subsets"][1][key] = value

    rule = build(svc)

    assert "trafficPolicy" not in rule["spec"]
    assert "trafficPolicy" not in rule["spec"]["subsets"][0]
    assert rule["spec"]["subsets"][1].get("trafficPolicy") == policy


def test_a_subset_policy_beside_the_service_policy() -> None:
    """Both are written as given: istiod merges them (a subset's group replaces the service's)."""
    svc = service(
        connection_pool={"tcp": {"max_connections": 100, "connect_timeout": "1s"}},
        outlier_detection={"consecutive_5xx_errors": 5, "interval": "10s"},
        load_balancer={"consistent_hash_header": "x-user-id"},
    )
    svc["subsets"][1]["outlier_detection"] = {
        "consecutive_5xx_errors": 0,
        "consecutive_gateway_errors": 3,
        "interval": "1s",
        "base_ejection_time": "5s",
        "max_ejection_percent": 100,
    }
    svc["subsets"][1]["connection_pool"] = {"http": {"http2_max_requests": 50}}

    spec = build(svc)["spec"]

    assert spec["trafficPolicy"] == {
        "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user-id"}},
        "connectionPool": {"tcp": {"maxConnections": 100, "connectTimeout": "1s"}},
        "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s"},
    }
    assert spec["subsets"][1] == {
        "name": "candidate",
        "labels": {"version": "v2"},
        "trafficPolicy": {
            "connectionPool": {"http": {"http2MaxRequests": 50}},
            "outlierDetection": {
                "consecutive5xxErrors": 0,
                "consecutiveGatewayErrors": 3,
                "interval": "1s",
                "baseEjectionTime": "5s",
                "maxEjectionPercent": 100,
            },
        },
    }


def test_a_load_balancer_of_a_subset_is_not_rendered() -> None:
    """Preflight allows only connection_pool and outlier_detection in a subset."""
    svc = service()
    svc["subsets"][1]["load_balancer"] = {"consistent_hash_header": "x-user-id"}
    assert "trafficPolicy" not in build(svc)["spec"]["subsets"][1]


def test_the_output_shares_nothing_with_the_input() -> None:
    svc = service(connection_pool={"tcp": {"max_connections": 1}})
    before = copy.deepcopy(svc)
    rule = build(svc)
    rule["spec"]["subsets"][0]["labels"]["version"] = "changed"
    rule["metadata"]["labels"]["changed"] = "yes"

    assert svc == before
    assert "changed" not in LABELS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"connection_pool": {"tcp": {"max_connections": 1.5}}},
            "service 'user-service': connection_pool.tcp.max_connections = 1.5: must be a whole number",
            id="count-not-whole",
        ),
        pytest.param(
            {"outlier_detection": {"max_ejection_percent": True}},
            "service 'user-service': outlier_detection.max_ejection_percent = True: must be a whole number",
            id="count-boolean",
        ),
        pytest.param(
            {"outlier_detection": {"interval": 10}},
            "service 'user-service': outlier_detection.interval = 10: must be a string",
            id="duration-not-a-string",
        ),
        pytest.param(
            {"connection_pool": {"tcp": "100"}},
            "service 'user-service': connection_pool.tcp = '100': must be a mapping",
            id="group-not-a-mapping",
        ),
        pytest.param(
            {"outlier_detection": "on"},
            "service 'user-service': outlier_detection = 'on': must be a mapping",
            id="policy-not-a-mapping",
        ),
        pytest.param(
            {"load_balancer": {"consistent_hash_header": 7}},
            "service 'user-service': load_balancer.consistent_hash_header = 7: must be a string",
            id="header-not-a-string",
        ),
        pytest.param(
            {"subsets": []}, "service 'user-service': subsets = []: must be a non-empty list", id="no-subsets"
        ),
    ],
)
def test_a_value_it_cannot_write_is_refused_with_its_path(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build(service(**change))
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    ("subset", "message"),
    [
        pytest.param(
            {
                "name": "candidate",
                "labels": {"version": "v2"},
                "outlier_detection": {"consecutive_gateway_errors": "3x"},
            },
            "service 'user-service': subsets[1].outlier_detection.consecutive_gateway_errors = '3x': must be a whole number",
            id="subset-count",
        ),
        pytest.param(
            {"name": "candidate", "labels": {"version": "v2"}, "connection_pool": {"tcp": {"connect_timeout": 1}}},
            "service 'user-service': subsets[1].connection_pool.tcp.connect_timeout = 1: must be a string",
            id="subset-duration",
        ),
        pytest.param(
            {"name": "candidate"},
            "service 'user-service': subsets[1].labels is missing",
            id="subset-without-labels",
        ),
        pytest.param(
            "candidate", "service 'user-service': subsets[1] = 'candidate': must be a mapping", id="subset-a-string"
        ),
    ],
)
def test_a_bad_subset_is_refused_with_its_path(subset: Any, message: str) -> None:
    svc = service()
    svc["subsets"][1] = subset
    with pytest.raises(ConfigError) as error:
        build(svc)
    assert str(error.value).startswith(message)


# --- against the old Jinja render ---------------------------------------------------------------


def dev_service(name: str) -> dict[str, Any]:
    services = yaml.safe_load((REPO_ROOT / "inventories" / "dev" / "group_vars" / "all" / "services.yml").read_text())
    return next(svc for svc in services["mirror_services"] if svc["name"] == name)


@pytest.mark.parametrize("name", ["user-service", "order-service"])
def test_the_dev_services_write_the_goldens_of_the_jinja_template_byte_for_byte(name: str) -> None:
    """The goldens were written by the template before it called the builder (every key of the
    service policy, and none): the template's header and to_nice_yaml as it calls it."""
    labels = {
        "app.kubernetes.io/managed-by": "mirror-ramp",
        "app.kubernetes.io/part-of": "mirror-ramp",
        "mirror-ramp.io/environment": "dev",
    }
    rule = destination_rule(dev_service(name), host=name, namespace="shop-dev", labels=labels)

    text = RENDER_HEADER + to_nice_yaml(rule, indent=2, sort_keys=True, width=1024)

    assert text == (GOLDEN / f"destinationrule-shop-dev-{name}.yml.golden").read_text()


def test_the_filter_wraps_the_builder_and_names_itself() -> None:
    svc = service()
    assert FILTER(svc, "user-service", "shop", LABELS) == build(svc)
    svc["subsets"][0]["connection_pool"] = {"tcp": {"max_connections": "many"}}
    with pytest.raises(
        AnsibleFilterError, match=r"^mirror_istio_destination_rule: service 'user-service': subsets\[0\]"
    ):
        FILTER(svc, "user-service", "shop", LABELS)
    with pytest.raises(AnsibleFilterError, match="mirror_istio_destination_rule: expected a service"):
        FILTER(["user-service"], "user-service", "shop", LABELS)
    with pytest.raises(AnsibleFilterError, match="namespace '' is not a name"):
        FILTER(svc, "user-service", "", LABELS)
