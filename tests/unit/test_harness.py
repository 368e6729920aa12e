"""The benchmarks' data plane (mirrorsandbox.harness): its resources as mirror_istio renders them, and
the real processes it starts, mirrors through and stops by PID."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

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
    """The dev inventory's user-service pool and outlier detection give the golden's trafficPolicy
    (its load balancer aside: the harness does not translate it)."""
    (user_service,) = [
        s for s in yaml.safe_load(DEV_SERVICES.read_text())["mirror_services"] if s["name"] == "user-service"
    ]
    golden = yaml.safe_load((GOLDEN / "destinationrule-shop-dev-user-service.yml.golden").read_text())
    policy = {key: user_service[key] for key in ("connection_pool", "outlier_detection")}

    resources = istio_resources(local_service(**policy), "sandbox", "local")

    expected = {key: value for key, value in golden["spec"]["trafficPolicy"].items() if key != "loadBalancer"}
    assert resources.destination_rule["spec"]["trafficPolicy"] == expected


def test_a_field_the_harness_does_not_translate_is_refused_by_name() -> None:
    with pytest.raises(HarnessError, match="grpc, mirror_match not translated"):
        istio_resources(local_service(grpc={"port": 50051}, mirror_match={"uri": {"prefix": "/"}}), "sandbox", "local")


def test_local_resources_take_the_callers_traffic_policy() -> None:
    policy = {"outlier_detection": {"consecutive_5xx_errors": 3, "interval": "1s"}}
    resources = local_resources(traffic_policy=policy)
    assert resources.destination_rule["spec"]["trafficPolicy"] == {
        "outlierDetection": {"consecutive5xxErrors": 3, "interval": "1s"}
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
