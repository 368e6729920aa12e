"""The gateway-api driver against the Kubernetes API test double: an HTTPRoute ramped end to end.

The engine runs as the action plugin runs it (RampRequest.from_arguments, then execute) with the
gateway-api driver, talking HTTP to the double through its generic custom-object paths;
Prometheus is the scripted stand-in answering 0 to every query (every gate passes at once), or
0.5 (every error gate fails) for a rollback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from mirrorramp.adapter import execute
from mirrorramp.arguments import RampRequest
from mirrorramp.drivers.base import TargetSnapshot
from mirrorramp.drivers.kube import FIELD_MANAGER, GatewayApiDriver, IstioDriver, preload_namespaces
from mirrorramp.errors import ConfigError, ConflictError
from mirrorramp.httproute import mirror_share, read_mirror_percent, with_mirror_percent
from mirrorramp.routes import STATE_ANNOTATION, TARGETS_ANNOTATION
from mirrorramp.state import RampState
from mirrorramp.wiring import build_driver
from tests.fakes.kube_api import KubeApiServer
from tests.fakes.kube_fixtures import kube_api, kube_api_server  # noqa: F401
from tests.support.prometheus_server import ScriptedPrometheus, vector_reply
from tests.support.ramp_states import ramping_state
from tests.support.task_arguments import double_arguments

pytestmark = pytest.mark.slow

NAMESPACE = "shop-dev"
SERVICE = "user-service"
GATEWAY = "gateway.networking.k8s.io"
ROUTE_PATH = rf"/httproutes/{SERVICE}$"
# The ramp 1 -> 5 -> 10 -> 20 %, entered by a fractional step.
PERCENTS = (0.5, 1.0, 5.0, 10.0, 20.0)
HOLD = 0.3
STEPS = [{"percent": p, "hold": f"{HOLD:g}s"} for p in PERCENTS]
TARGETS = [{"name": "user-service-v2", "port": 8080}, {"name": "user-service-v1-baseline", "port": 8080}]
HEADER_FILTER = {
    "type": "RequestHeaderModifier",
    "requestHeaderModifier": {"set": [{"name": "x-mirror", "value": "1"}]},
}


@pytest.fixture(scope="module")
def prometheus() -> Iterator[ScriptedPrometheus]:
    scripted = ScriptedPrometheus()
    scripted.default = vector_reply("0")  # 0 requests (no minimum), 0 errors: every gate passes
    scripted.start()
    yield scripted
    scripted.stop()


def request_for(
    kube: KubeApiServer, prometheus: ScriptedPrometheus, *, check_mode: bool = False, **overrides: Any
) -> RampRequest:
    """The mirror_ramp arguments as the action plugin passes them on: every default filled in."""
    arguments = double_arguments(
        kube.url,
        kube.token,
        prometheus.url,
        **{"driver": "gateway-api", "steps": STEPS, "poll_interval": "100ms", **overrides},
    )
    return RampRequest.from_arguments(arguments, check_mode=check_mode, diff=check_mode)


def driver_for(kube: KubeApiServer) -> GatewayApiDriver:
    return GatewayApiDriver(kube.api_client(), NAMESPACE, SERVICE)


def run(kube: KubeApiServer, prometheus: ScriptedPrometheus, **overrides: Any) -> dict[str, Any]:
    check_mode = overrides.pop("check_mode", False)
    return execute(request_for(kube, prometheus, check_mode=check_mode, **overrides))


def rendered_route() -> dict[str, Any]:
    """The HTTPRoute as rendered: the mirror rule with a filter of its own, and no mirror yet."""
    return {
        "apiVersion": f"{GATEWAY}/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            "annotations": {TARGETS_ANNOTATION: json.dumps(TARGETS)},
        },
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": SERVICE, "port": 8080}],
            "rules": [
                {
                    "name": "mirror",
                    "matches": [{"method": "GET"}, {"method": "HEAD"}],
                    "filters": [HEADER_FILTER],
                    "backendRefs": [{"name": "user-service-v1", "port": 8080}],
                },
                {"name": "primary", "backendRefs": [{"name": "user-service-v1", "port": 8080}]},
            ],
        },
    }


def seed(kube: KubeApiServer, step_index: int | None, *, held_for: float = 60.0) -> dict[str, Any]:
    """The rendered HTTPRoute, ramping at `step_index` for `held_for` seconds (None: never ramped)."""
    route = rendered_route()
    if step_index is not None:
        state = ramping_state(PERCENTS, step_index, held_for)
        route = with_mirror_percent(route, PERCENTS[step_index])
        route["metadata"]["annotations"][STATE_ANNOTATION] = state.to_json()
    return kube.put_object(route)


def live(kube: KubeApiServer) -> dict[str, Any]:
    route = kube.get_object(GATEWAY, "v1", "HTTPRoute", NAMESPACE, SERVICE)
    assert route is not None
    return route


def live_state(kube: KubeApiServer) -> RampState:
    return RampState.from_json(live(kube)["metadata"]["annotations"][STATE_ANNOTATION])


def mirror_rule_filters(route: dict[str, Any]) -> list[dict[str, Any]]:
    return route["spec"]["rules"][0].get("filters", [])


def expected_filters(percent: float) -> list[dict[str, Any]]:
    """The rule's filters at `percent`, written out: the rendered filter first, then one mirror per target."""
    mirrors = [
        {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": {"group": "", "kind": "Service", **target}, **mirror_share(percent)},
        }
        for target in TARGETS
    ]
    return [HEADER_FILTER, *mirrors] if percent else [HEADER_FILTER]


def patches(kube: KubeApiServer) -> list[int]:
    return [r.status for r in kube.requests_matching("PATCH", ROUTE_PATH)]


class LiveAfterEachWrite:
    """The driver, recording the live HTTPRoute after each write that persists."""

    def __init__(self, inner: Any, kube: KubeApiServer) -> None:
        self.inner = inner
        self.kube = kube
        self.description = inner.description
        self.atomic = inner.atomic
        self.written: list[dict[str, Any]] = []

    def read(self) -> TargetSnapshot:
        return self.inner.read()

    def write(self, current: TargetSnapshot, state: RampState, percent: float, *, dry_run: bool) -> TargetSnapshot:
        snapshot = self.inner.write(current, state, percent, dry_run=dry_run)
        if not dry_run:
            self.written.append(live(self.kube))
        return snapshot


# -- the ramp ---------------------------------------------------------------------------------


def test_a_watch_ramps_through_every_step_with_exact_shares_each_read_back(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
) -> None:
    seed(kube_api, None)
    kube_api.clear_requests()
    request = request_for(kube_api, prometheus, mode="watch")
    recording = LiveAfterEachWrite(build_driver(request), kube_api)

    result = execute(request, driver=recording)

    assert (result["state"], result["step"], result["percent"]) == ("completed", len(PERCENTS), 20.0)
    # Each step's write, as the API server stored it: 0.5 % as the exact fraction 5/1000.
    shares = [
        [f["requestMirror"].get("percent", f["requestMirror"].get("fraction")) for f in mirror_rule_filters(route)[1:]]
        for route in recording.written
    ]
    # A pass may also write the state alone (its gates): the shares in the order they went live.
    went_live = [share for index, share in enumerate(shares) if index == 0 or share != shares[index - 1]]
    assert went_live == [[{"numerator": 5, "denominator": 1000}] * 2, [1, 1], [5, 5], [10, 10], [20, 20]]
    assert mirror_rule_filters(live(kube_api)) == expected_filters(20.0)
    assert live(kube_api)["spec"]["rules"][1] == rendered_route()["spec"]["rules"][1]
    state = live_state(kube_api)
    assert [(event["event"], event["percent"]) for event in state.history] == [
        ("start", 0.5),
        ("advance", 1.0),
        ("advance", 5.0),
        ("advance", 10.0),
        ("advance", 20.0),
        ("complete", 20.0),
    ]
    # Every write is read back from the server (a GET after each PATCH), under the ramp's field manager.
    calls = [(r.method, r.status) for r in kube_api.requests_matching(None, ROUTE_PATH)]
    assert calls.count(("PATCH", 200)) == len(recording.written)
    for index, call in enumerate(calls):
        if call[0] == "PATCH":
            assert calls[index + 1] == ("GET", 200), calls
    assert {r.query.get("fieldManager") for r in kube_api.requests_matching("PATCH", ROUTE_PATH)} == {FIELD_MANAGER}


def test_the_driver_reads_back_the_fractional_step_exactly(kube_api: KubeApiServer) -> None:  # noqa: F811
    seed(kube_api, None)
    driver = driver_for(kube_api)
    before = driver.read()
    assert (before.percent, before.state.status, before.mirror_settings, before.mirror_drift) == (
        0.0,
        "pending",
        {},
        "",
    )
    state = RampState.initial().evolve(status="ramping", step_index=0, percent=0.5, step_started_at=time.time())

    written = driver.write(before, state, 0.5, dry_run=False)

    again = driver_for(kube_api).read()  # a new driver: a GET, not the patch's answer
    assert again.percent == written.percent == 0.5
    assert again.state == state
    assert again.version == written.version != before.version
    assert again.mirror_settings == {"filters": expected_filters(0.5)[1:]}
    assert again.mirror_drift == ""
    assert driver.description == f"HTTPRoute {NAMESPACE}/{SERVICE}"
    # The API server books the write to the ramp's field manager: the state and the rules
    # (an atomic list in HTTPRoute), not to whoever applied the manifests.
    owned = {(e["manager"], e["operation"]): e["fieldsV1"] for e in live(kube_api)["metadata"]["managedFields"]}
    assert owned[(FIELD_MANAGER, "Update")] == {
        "f:metadata": {"f:annotations": {"f:mirror-ramp.io/state": {}}},
        "f:spec": {"f:rules": {}},
    }


def test_the_task_builds_the_gateway_api_driver_and_refuses_a_share_an_httproute_cannot_carry(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
) -> None:
    driver = build_driver(request_for(kube_api, prometheus, virtual_service="user-service-mesh"))
    assert isinstance(driver, GatewayApiDriver)
    assert driver.description == f"HTTPRoute {NAMESPACE}/user-service-mesh"
    kube_api.clear_requests()
    with pytest.raises(ConfigError, match=r"steps\[0\]\.percent: HTTPRoute mirror percent 1e-08: .* 7 decimal places"):
        request_for(kube_api, prometheus, steps=[{"percent": 0.00000001, "hold": "1s"}, {"percent": 1, "hold": "1s"}])
    assert kube_api.requests == []


def test_a_pass_over_many_services_lists_each_route_api_once_per_namespace(kube_api: KubeApiServer) -> None:  # noqa: F811
    names = [SERVICE, "cart-service", "search-service"]
    for name in names:
        route = rendered_route()
        route["metadata"]["name"] = name
        kube_api.put_object(route)
    api = kube_api.api_client()
    http_routes = [GatewayApiDriver(api, NAMESPACE, name) for name in names]
    # A VirtualService driver in the same pass: its own LIST, never a list of HTTPRoutes.
    virtual_services = [IstioDriver(api, NAMESPACE, "user-service"), IstioDriver(api, NAMESPACE, "cart-service")]
    kube_api.clear_requests()

    preload_namespaces([*http_routes, *virtual_services])

    assert [driver.read().percent for driver in http_routes] == [0.0] * 3
    lists = [(r.method, r.path) for r in kube_api.requests]
    assert lists == [
        ("GET", f"/apis/{GATEWAY}/v1/namespaces/{NAMESPACE}/httproutes"),
        ("GET", f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/virtualservices"),
    ]


# -- optimistic concurrency -------------------------------------------------------------------


def test_a_write_after_another_writer_is_refused_with_409_and_changes_nothing(kube_api: KubeApiServer) -> None:  # noqa: F811
    seed(kube_api, None)
    driver = driver_for(kube_api)
    snapshot = driver.read()
    # Another writer between the read and the write: a label through the same custom-object path.
    other = client.CustomObjectsApi(kube_api.api_client())
    other.patch_namespaced_custom_object(
        GATEWAY, "v1", NAMESPACE, "httproutes", SERVICE, {"metadata": {"labels": {"edited": "by-hand"}}}
    )
    edited = live(kube_api)
    kube_api.clear_requests()

    with pytest.raises(ConflictError, match=rf"HTTPRoute {NAMESPACE}/{SERVICE} changed while this run worked on it"):
        driver.write(
            snapshot,
            RampState.initial().evolve(status="ramping", step_index=0, percent=0.5, step_started_at=time.time()),
            0.5,
            dry_run=False,
        )

    assert patches(kube_api) == [409]
    assert live(kube_api) == edited


def test_a_409_on_the_advance_is_retried_and_advances_once(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
) -> None:
    seed(kube_api, 1)  # 1 % held in full: the next write advances to 5 %
    kube_api.clear_requests()
    kube_api.inject("PATCH", ROUTE_PATH, status=409, times=1)

    result = run(kube_api, prometheus)

    assert (result["changed"], result["action"], result["conflicts"], result["percent"]) == (True, "advance", 1, 5.0)
    assert patches(kube_api) == [409, 200]
    assert mirror_rule_filters(live(kube_api)) == expected_filters(5.0)
    assert [event["event"] for event in live_state(kube_api).history] == ["start", "advance", "advance"]


# -- drift, stop, rollback --------------------------------------------------------------------


def test_a_hand_edited_mirror_is_drift_and_is_set_back_to_the_recorded_step(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
) -> None:
    seed(kube_api, 2, held_for=0.0)  # at 5 %, its hold just begun: no advance in this run
    route = live(kube_api)
    # By hand: the candidate's share raised to 50 %, the baseline's filter deleted.
    route["spec"]["rules"][0]["filters"] = [HEADER_FILTER, {**expected_filters(50.0)[1]}]
    client.CustomObjectsApi(kube_api.api_client()).replace_namespaced_custom_object(
        GATEWAY, "v1", NAMESPACE, "httproutes", SERVICE, route
    )
    assert read_mirror_percent(live(kube_api)) == 50.0

    result = run(kube_api, prometheus)

    assert result["changed"] is True
    assert "drift" in result["msg"], result["msg"]
    assert mirror_rule_filters(live(kube_api)) == expected_filters(5.0)
    assert live_state(kube_api).history[-1]["event"] == "drift"
    # The next run finds nothing to repair.
    assert driver_for(kube_api).read().mirror_drift == ""


def test_an_emergency_stop_removes_every_mirror_filter_and_keeps_the_others(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
) -> None:
    seed(kube_api, 3)  # at 10 %
    result = run(kube_api, prometheus, operation="stop", reason="pager", by="alice")

    assert (result["state"], result["percent"]) == ("stopped", 0.0)
    assert mirror_rule_filters(live(kube_api)) == [HEADER_FILTER]
    stopped = live_state(kube_api)
    assert stopped.status == "stopped"
    assert "alice" in json.dumps(stopped.history[-1])
    # A scheduled run after it changes nothing: the stop holds.
    after = run(kube_api, prometheus)
    assert after["changed"] is False
    assert mirror_rule_filters(live(kube_api)) == [HEADER_FILTER]


def test_a_breach_rolls_back_to_0_and_removes_the_filters(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
) -> None:
    seed(kube_api, 2)  # at 5 %
    prometheus.default = vector_reply("0.5")  # every error ratio 50 %: the gate fails
    try:
        result = run(kube_api, prometheus)
    finally:
        prometheus.default = vector_reply("0")

    assert (result["state"], result["percent"]) == ("rolled_back", 0.0), result["msg"]
    assert mirror_rule_filters(live(kube_api)) == [HEADER_FILTER]
    assert live_state(kube_api).history[-1]["event"] == "rollback"
    status = run(kube_api, prometheus, operation="status")
    assert (status["state"], status["percent"], status["changed"]) == ("rolled_back", 0.0, False)


# -- check mode and diff ----------------------------------------------------------------------


def test_check_mode_shows_the_change_as_a_server_side_dry_run_and_persists_nothing(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
) -> None:
    seeded = seed(kube_api, 0)  # at 0.5 %, held in full: the next write advances to 1 %
    kube_api.clear_requests()

    result = run(kube_api, prometheus, check_mode=True)

    assert (result["changed"], result["action"], result["percent"]) == (True, "advance", 1.0)
    assert result["msg"].startswith("(check mode, nothing written)")
    assert result["diff"]["before"]["mirror"] == {"filters": expected_filters(0.5)[1:]}
    assert result["diff"]["after"]["mirror"] == {"filters": expected_filters(1.0)[1:]}
    assert [(r.query.get("dryRun"), r.status) for r in kube_api.requests_matching("PATCH", ROUTE_PATH)] == [
        ("All", 200)
    ]
    assert live(kube_api) == seeded
