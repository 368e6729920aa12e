"""The filter mirror_preflight_rows as role mirror_preflight calls it: every kind of row in one call,
each row with the inventory path the messages name, held to rows written out by hand."""

from __future__ import annotations

import re
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from tests.support.plugin_files import load_filter

mirror_preflight_rows = load_filter("mirror_preflight_rows")

ALERT_FOR = {"warning": "5m", "critical": "1m"}
STABLE = {"name": "stable", "labels": {"version": "v1"}, "workload": "a-v1"}
CANDIDATE = {"name": "candidate", "labels": {"version": "v2"}, "workload": "a-v2"}


def rows(services: list[Any], **inputs: Any) -> dict[str, list[dict[str, Any]]]:
    return mirror_preflight_rows(
        services,
        **{
            "namespace": "shop",
            "mesh_api": "istio",
            "gateway_hpa": {},
            "alert_window": "5m",
            "no_traffic_for": "10m",
            "alert_for": ALERT_FOR,
            "monitoring": {"kind": "PodMonitor"},
            "fault": {},
            **inputs,
        },
    )


def test_a_name_is_taken_only_by_an_earlier_entry() -> None:
    services = [
        {"name": "a", "subsets": [STABLE, "not a mapping", {"labels": {}}, STABLE]},
        {"name": "b"},
        {"name": "a"},
        {"name": ["a"]},
        {},
        {"name": "b"},
    ]
    found = rows(services)
    assert [row["name_taken"] for row in found["services"]] == [False, False, True, False, False, True]
    assert [row["path"] for row in found["services"]] == [f"mirror_services[{i}]" for i in range(6)]
    assert found["services"][3]["svc"] == {"name": ["a"]}
    assert found["subsets"] == [
        {"path": "mirror_services[0].subsets[0]", "sub": STABLE, "name_taken": False},
        {"path": "mirror_services[0].subsets[1]", "sub": {}, "name_taken": False},
        {"path": "mirror_services[0].subsets[2]", "sub": {"labels": {}}, "name_taken": False},
        {"path": "mirror_services[0].subsets[3]", "sub": STABLE, "name_taken": True},
    ]


def test_mirrors_carry_the_subset_names_and_the_primary() -> None:
    service = {"name": "a", "subsets": [STABLE, "x", CANDIDATE], "primary_subset": "stable"}
    found = rows([{**service, "mirrors": [{"subset": "candidate"}, "candidate", {"host": "h"}]}, {"mirrors": "x"}])
    row = {"subset_names": ["stable", "candidate"], "primary": "stable"}
    assert found["mirrors"] == [
        {"path": "mirror_services[0].mirrors[0]", "subset": "candidate", **row},
        {"path": "mirror_services[0].mirrors[1]", "subset": None, **row},
        {"path": "mirror_services[0].mirrors[2]", "subset": None, **row},
    ]


def test_a_mapping_as_subsets_is_walked_as_jinja_walks_it() -> None:
    """Jinja's `sequence` test takes a mapping: its keys are the entries, none a mapping."""
    found = rows([{"name": "a", "subsets": {"name": "x"}}, {"name": "b", "subsets": "stable"}])
    assert found["subsets"] == [{"path": "mirror_services[0].subsets[0]", "sub": {}, "name_taken": False}]


def test_baselines_name_the_labels_set_to_other_values() -> None:
    baseline = {"name": "baseline", "labels": {"version": 1, "track": "b"}}
    services = [
        {"name": "no-baseline", "subsets": [STABLE]},
        {"name": "b", "subsets": [STABLE, baseline], "primary_subset": "stable", "baseline_subset": "baseline"},
        {
            "name": "c",
            "subsets": [{**STABLE, "labels": {"version": "1"}}, baseline],
            "primary_subset": "stable",
            "baseline_subset": "baseline",
        },
        {"name": "d", "subsets": [STABLE], "primary_subset": "stable", "baseline_subset": "stable"},
        {
            "name": "e",
            "subsets": [STABLE, {"name": "baseline"}],
            "primary_subset": "stable",
            "baseline_subset": "baseline",
        },
    ]
    assert rows(services)["baselines"] == [
        {
            "path": "mirror_services[1]",
            "subset": "baseline",
            "baseline_labels": {"version": 1, "track": "b"},
            "primary_labels": {"version": "v1"},
            "conflicts": ["version"],
        },
        {
            # 1 and "1" are the same label value to Kubernetes: no conflict.
            "path": "mirror_services[2]",
            "subset": "baseline",
            "baseline_labels": {"version": 1, "track": "b"},
            "primary_labels": {"version": "1"},
            "conflicts": [],
        },
    ]


def test_namespaces_mesh_apis_and_ports_have_each_services_own_index() -> None:
    services = [
        {"name": "a", "port": 8080},
        {"name": "b", "namespace": "Bad_NS", "mesh_api": "linkerd", "grpc": {"port": 0}},
        {"name": "c", "port": True, "grpc": "x"},
    ]
    found = rows(services, gateway_hpa={"enabled": True, "namespace": "istio-system"})
    assert found["namespaces"] == [
        {"path": "mirror_namespace", "value": "shop"},
        {"path": "mirror_services[1].namespace", "value": "Bad_NS"},
        {"path": "mirror_gateway_hpa.namespace", "value": "istio-system"},
    ]
    assert found["mesh_apis"] == [
        {"path": "mirror_mesh_api", "value": "istio"},
        {"path": "mirror_services[1].mesh_api", "value": "linkerd"},
    ]
    assert found["ports"] == [
        {"path": "mirror_services[0].port", "value": 8080},
        {"path": "mirror_services[1].port", "value": None},
        {"path": "mirror_services[1].grpc.port", "value": 0},
        {"path": "mirror_services[2].port", "value": True},
    ]
    assert rows(services, gateway_hpa={"enabled": False, "namespace": "x"})["namespaces"][-1]["path"] == (
        "mirror_services[1].namespace"
    )


def test_durations_in_the_order_the_messages_take() -> None:
    pool = {"tcp": {"connect_timeout": "1s"}}
    outlier = {"interval": "10s", "base_ejection_time": "30s"}
    services = [
        {
            "name": "a",
            "timeout": "10s",
            "retries": {"per_try_timeout": "2s"},
            "connection_pool": pool,
            "outlier_detection": outlier,
            "subsets": [{"name": "s", "outlier_detection": {"interval": 5}}, "x"],
        },
        {"name": "b", "timeout": None, "retries": "3", "connection_pool": {"tcp": "x"}},
        {"name": "c", "timeout": "1m", "subsets": [{"name": "t", "connection_pool": pool}]},
    ]
    found = rows(
        services,
        alert_for={"warning": "5m", "Zeta": "1x", "alpha": 5},
        monitoring={},
        fault={"delay": {"fixed_delay": 2}},
    )
    assert found["durations"] == [
        {"path": "mirror_alert_window", "value": "5m"},
        {"path": "mirror_no_traffic_for", "value": "10m"},
        {"path": "mirror_monitoring.interval", "value": None},
        {"path": "mirror_alert_for.warning", "value": "5m"},
        {"path": "mirror_alert_for.critical", "value": None},
        {"path": "mirror_alert_for.alpha", "value": 5},
        {"path": "mirror_alert_for.Zeta", "value": "1x"},
        {"path": "mirror_services[0].retries.per_try_timeout", "value": "2s"},
        {"path": "mirror_services[0].timeout", "value": "10s"},
        {"path": "mirror_services[2].timeout", "value": "1m"},
        {"path": "mirror_services[0].connection_pool.tcp.connect_timeout", "value": "1s"},
        {"path": "mirror_services[0].outlier_detection.base_ejection_time", "value": "30s"},
        {"path": "mirror_services[0].outlier_detection.interval", "value": "10s"},
        {"path": "mirror_services[0].subsets[0].outlier_detection.interval", "value": 5},
        {"path": "mirror_services[2].subsets[0].connection_pool.tcp.connect_timeout", "value": "1s"},
        {"path": "mirror_proxy.fault.delay.fixed_delay", "value": 2},
    ]


@pytest.mark.parametrize(
    ("services", "alert_for", "says"),
    [
        ({"name": "a"}, ALERT_FOR, "services = {'name': 'a'}: must be a list"),
        ("a", ALERT_FOR, "services = 'a': must be a list"),
        ([], ["warning"], "alert_for = ['warning']: must be a mapping"),
    ],
    ids=["services-mapping", "services-string", "alert-for-list"],
)
def test_refuses_what_is_not_the_preflights_input(services: Any, alert_for: Any, says: str) -> None:
    with pytest.raises(AnsibleFilterError, match=f"^mirror_preflight_rows: {re.escape(says)}"):
        rows(services, alert_for=alert_for)
