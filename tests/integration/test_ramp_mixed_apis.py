"""One mirror_ramp task over services on two mesh APIs: a VirtualService and an HTTPRoute ramped
in the same run, each by its own driver (services[].driver, as mirror_ramp_targets sets it from
each service's mesh_api), against the Kubernetes API test double.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mirrorramp.adapter import execute_all
from mirrorramp.arguments import requests_from_arguments
from mirrorramp.httproute import read_mirror_percent as http_route_percent
from mirrorramp.routes import STATE_ANNOTATION, TARGETS_ANNOTATION
from mirrorramp.virtualservice import read_mirror_percent as virtual_service_percent
from tests.fakes.kube_api import KubeApiServer
from tests.fakes.kube_fixtures import kube_api, kube_api_server  # noqa: F401
from tests.support.prometheus_server import ScriptedPrometheus, vector_reply
from tests.support.task_arguments import double_arguments

pytestmark = pytest.mark.slow

NAMESPACE = "shop-dev"
STEPS = [{"percent": 0.5, "hold": "1h"}, {"percent": 5, "hold": "1h"}]


@pytest.fixture(scope="module")
def prometheus() -> Iterator[ScriptedPrometheus]:
    scripted = ScriptedPrometheus()
    scripted.default = vector_reply("0")  # no errors: every gate passes
    scripted.start()
    yield scripted
    scripted.stop()


def virtual_service(name: str) -> dict[str, Any]:
    targets = [{"host": name, "subset": "v2", "port": 8080}]
    to_primary = {"route": [{"destination": {"host": name, "subset": "v1", "port": {"number": 8080}}}]}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": {TARGETS_ANNOTATION: json.dumps(targets)}},
        "spec": {"hosts": [name], "http": [{"name": "mirror", **to_primary}]},
    }


def http_route(name: str) -> dict[str, Any]:
    targets = [{"name": f"{name}-v2", "port": 8080}]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": {TARGETS_ANNOTATION: json.dumps(targets)}},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": name, "port": 8080}],
            "rules": [{"name": "mirror", "backendRefs": [{"name": f"{name}-v1", "port": 8080}]}],
        },
    }


def arguments(kube: KubeApiServer, prometheus: ScriptedPrometheus, services: list[dict]) -> dict[str, Any]:
    """The task's arguments for `services` (the istio driver unless a service names its own)."""
    return double_arguments(
        kube.url, kube.token, prometheus.url, service=None, workloads=None, services=services, steps=STEPS
    )


def service(name: str, driver: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "workloads": {"primary": f"{name}-v1", "mirror": [f"{name}-v2"]}}
    if driver:
        entry["driver"] = driver
    return entry


def test_one_run_ramps_a_virtual_service_and_an_http_route_each_by_its_driver(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
) -> None:
    kube_api.put_object(virtual_service("cart-service"))
    kube_api.put_object(http_route("user-service"))
    args = arguments(kube_api, prometheus, [service("cart-service"), service("user-service", "gateway-api")])
    requests = requests_from_arguments(args, check_mode=False, diff=False)
    assert [r.driver_name for r in requests] == ["istio", "gateway-api"]
    kube_api.clear_requests()

    result = execute_all(requests)

    assert not result.get("failed"), result
    vs = kube_api.get_object("networking.istio.io", "v1", "VirtualService", NAMESPACE, "cart-service")
    route = kube_api.get_object("gateway.networking.k8s.io", "v1", "HTTPRoute", NAMESPACE, "user-service")
    # Each object carries its own API's mirror at the first step, and the ramp's state.
    assert virtual_service_percent(vs) == 0.5
    assert vs["spec"]["http"][0]["mirrorPercentage"] == {"value": 0.5}
    assert http_route_percent(route) == 0.5
    assert route["spec"]["rules"][0]["filters"][0]["requestMirror"]["fraction"] == {"numerator": 5, "denominator": 1000}
    assert STATE_ANNOTATION in vs["metadata"]["annotations"] and STATE_ANNOTATION in route["metadata"]["annotations"]
    # Each driver patched its own kind only.
    patched = {r.path.rsplit("/", 2)[-2] for r in kube_api.requests if r.method == "PATCH"}
    assert patched == {"virtualservices", "httproutes"}
