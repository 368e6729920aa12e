"""The benchmarks' data plane (mirrorsandbox.harness): its resources as mirror_istio renders them, and
the real processes it starts, mirrors through and stops by PID."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirrorsandbox.envoy_process import admin_get
from mirrorsandbox.harness import (
    Harness,
    HarnessError,
    istio_resources,
    local_resources,
    running_harness,
)

GOLDEN = Path(__file__).resolve().parents[1] / "manifests" / "golden" / "istio-dev"
DEV_SERVICES = Path(__file__).resolve().parents[2] / "inventories" / "dev" / "group_vars" / "all" / "services.yml"


def local_service(**fields: Any) -> dict[str, Any]:
    """The shape of inventories/local's service, with `fields` on top."""
    return {
        "name": "demo-service",
        "port": 8080,
        "subsets": [
            {"name": "primary", "labels": {"version": "v1"}, "workload": "demo-service-v1"},
            {"name": "candidate", "labels": {"version": "v2"}, "workload": "demo-service-v2"},
        ],
        "primary_subset": "primary",
        "mirrors": [{"subset": "candidate"}],
        "mirror_percent": 0,
        "mirror_all_methods": False,
        "timeout": "5s",
        **fields,
    }


def test_the_local_service_renders_as_the_role_renders_it() -> None:
    """Checked against the role's render of inventories/local (build/local/k8s, 5 December 2026)."""
    resources = istio_resources(local_service(), "sandbox", "local")

    assert resources.virtual_service["metadata"]["annotations"] == {
        "mirror-ramp.io/mirror-targets": '[{"host":"demo-service","port":8080,"subset":"candidate"}]'
    }
    to_primary = [{"destination": {"host": "demo-service", "port": {"number": 8080}, "subset": "primary"}}]
    assert resources.virtual_service["spec"] == {
        "hosts": ["demo-service"],
        "http": [
            {"name": "mirror", "match": [{"method": {"regex": "GET|HEAD"}}], "route": to_primary, "timeout": "5s"},
            {"name": "primary", "route": to_primary, "timeout": "5s"},
        ],
    }
    assert resources.destination_rule["spec"] == {
        "host": "demo-service",
        "subsets": [
            {"name": "primary", "labels": {"version": "v1"}},
            {"name": "candidate", "labels": {"version": "v2"}},
        ],
    }
    assert resources.workloads == {"primary": "demo-service-v1", "candidate": "demo-service-v2"}
    assert (resources.service, resources.namespace, resources.primary_subset) == ("demo-service", "sandbox", "primary")


def test_a_percent_and_all_methods_render_one_catch_all_route_with_its_mirror() -> None:
    resources = istio_resources(local_service(mirror_percent=20, mirror_all_methods=True), "sandbox", "local")

    (route,) = resources.virtual_service["spec"]["http"]
    assert route["name"] == "mirror" and "match" not in route
    assert route["mirror"] == {"host": "demo-service", "subset": "candidate", "port": {"number": 8080}}
    assert route["mirrorPercentage"] == {"value": 20.0}


def test_the_traffic_policy_is_the_golden_renders_for_the_dev_service() -> None:
    """The dev inventory's user-service load balancer, pool and outlier detection give the golden's
    trafficPolicy: the harness builds the DestinationRule with the role's builder."""
    (user_service,) = [
        s for s in yaml.safe_load(DEV_SERVICES.read_text())["mirror_services"] if s["name"] == "user-service"
    ]
    golden = yaml.safe_load((GOLDEN / "destinationrule-shop-dev-user-service.yml.golden").read_text())
    policy = {key: user_service[key] for key in ("load_balancer", "connection_pool", "outlier_detection")}

    resources = istio_resources(local_service(**policy), "sandbox", "local")

    assert resources.destination_rule["spec"]["trafficPolicy"] == golden["spec"]["trafficPolicy"]


def test_a_field_the_harness_does_not_translate_is_refused_by_name() -> None:
    with pytest.raises(HarnessError, match="grpc, mirror_match not translated"):
        istio_resources(local_service(grpc={"port": 50051}, mirror_match={"uri": {"prefix": "/"}}), "sandbox", "local")


def test_a_value_the_builder_cannot_write_is_refused_with_its_path() -> None:
    subsets = local_service()["subsets"]
    subsets[1]["outlier_detection"] = {"consecutive_gateway_errors": "three"}
    with pytest.raises(HarnessError, match=r"subsets\[1\]\.outlier_detection\.consecutive_gateway_errors = 'three'"):
        istio_resources(local_service(subsets=subsets), "sandbox", "local")


def test_the_local_candidate_alone_has_outlier_detection_on_gateway_errors() -> None:
    """inventories/local: a down candidate is ejected, the single-host primary never."""
    resources = local_resources()

    assert "trafficPolicy" not in resources.destination_rule["spec"]
    assert resources.subset_traffic_policies == {
        "candidate": {
            "outlierDetection": {
                "consecutive5xxErrors": 0,
                "consecutiveGatewayErrors": 3,
                "interval": "1s",
                "baseEjectionTime": "5s",
                "maxEjectionPercent": 100,
            }
        }
    }


def get(harness: Harness, paths: list[str]) -> list[int]:
    connection = http.client.HTTPConnection("127.0.0.1", harness.proxy_port, timeout=5)
    try:
        statuses = []
        for path in paths:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        return statuses
    finally:
        connection.close()


def refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def served_after(harness: Harness, subset: str, prefix: str, count: int, timeout: float = 3.0) -> int:
    """The backend's count under `prefix` once it reached `count` (copies arrive after the answer)."""
    deadline = time.monotonic() + timeout
    while (served := harness.served(subset, prefix)["count"]) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return served


@pytest.mark.slow
def test_the_harness_mirrors_through_envoy_and_stops_every_process_by_pid(tmp_path: Path) -> None:
    with running_harness(tmp_path, local_resources()) as harness:
        pids = harness.pids()
        assert set(pids) == {"primary", "candidate", "envoy"}

        assert get(harness, [f"/off/{n}" for n in range(5)]) == [200] * 5
        harness.set_percent(100)
        assert get(harness, [f"/all/{n}" for n in range(20)]) == [200] * 20
        assert served_after(harness, "candidate", "/all/", 20) == 20
        assert harness.served("candidate", "/off/")["count"] == 0, "nothing mirrored at 0 %"
        assert harness.served("primary", "/")["count"] == 25

        candidate = harness.backends["candidate"]
        candidate.stop()
        assert refused(candidate.port), "a stopped candidate refuses connections"
        assert get(harness, [f"/down/{n}" for n in range(5)]) == [200] * 5, "the primary answers without it"
        candidate.start()
        assert harness.served("candidate", "/")["count"] == 0, "started again: a new process"
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists(), f"{name} (PID {pid}) still runs"


def outlier_ejected(harness: Harness) -> dict[str, bool]:
    """subset -> Envoy's outlier detection holds its host out now (admin /clusters)."""
    assert harness.envoy is not None
    statuses = json.loads(admin_get(harness.envoy.admin_url, "/clusters?format=json"))["cluster_statuses"]
    return {
        cluster["name"].split("|")[2]: any(
            host.get("health_status", {}).get("failed_outlier_check", False)
            for host in cluster.get("host_statuses", [])
        )
        for cluster in statuses
        if cluster["name"].startswith("outbound|")
    }


def ejected_within(harness: Harness, subset: str, timeout: float) -> bool:
    """The subset's host is ejected now or within `timeout` seconds (copies land after the answer)."""
    deadline = time.monotonic() + timeout
    while not (ejected := outlier_ejected(harness)[subset]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return ejected


@pytest.mark.slow
def test_the_local_policy_ejects_a_down_candidate_and_never_watches_the_primary(tmp_path: Path) -> None:
    """inventories/local's candidate-only outlier detection in the running Envoy: copies to a
    candidate that refuses connections get it ejected; the primary's cluster has none to eject it."""
    with running_harness(tmp_path, local_resources()) as harness:
        assert harness.envoy is not None
        dump = json.loads(admin_get(harness.envoy.admin_url, "/config_dump?resource=static_clusters"))
        clusters = {entry["cluster"]["name"].split("|")[2]: entry["cluster"] for entry in dump["configs"]}
        assert "outlier_detection" not in clusters["primary"]
        assert clusters["candidate"]["outlier_detection"]["consecutive_gateway_failure"] == 3

        harness.set_percent(100)
        harness.backends["candidate"].stop()
        # 3 refused connects eject it: a batch of 5 copies is enough, 4 batches are the bound.
        for batch in range(4):
            assert get(harness, [f"/down/{batch}/{n}" for n in range(5)]) == [200] * 5, "the primary answers"
            if ejected_within(harness, "candidate", 0.5):
                break
        else:
            pytest.fail("the down candidate was not ejected after 20 mirrored requests")
        assert outlier_ejected(harness) == {"primary": False, "candidate": True}
