"""The local sandbox run through Gateway API (issue 21): playbooks/sandbox.yml with
`-e mirror_mesh_api=gateway-api`, started for real into a tmp build dir.

The start renders the service's HTTPRoute and version Services (nothing was rendered) and Envoy
runs them as Envoy Gateway translates them (mirrorsandbox.envoy_httproute); playbooks/ramp.yml,
through the envoy driver, ramps the mirror of the rule the HTTPRoute names `mirror`. Measured:
Envoy's live routes and clusters (config_dump), no mirrored request at the rendered 0 %, after the
ramp's first step the live mirror at its percent, the mirrored share of GETs at the candidate
within binomial bounds, agreeing with the candidate's own metrics and Envoy's count of the
candidate's cluster, and no POST mirrored (inventories/local mirrors GET and HEAD only).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from mirrorsandbox.envoy_process import counter
from tests.integration.test_sandbox import (
    Sandbox,
    candidate_served_total,
    http_json,
    live_static_clusters,
    local_services,
    send,
    settled,
    start_sandbox,
    stop_sandbox,
)
from tests.support.ansible_run import recap_counts, run_playbook

pytestmark = pytest.mark.slow

SERVICE = "demo-service"
NAMESPACE = "sandbox"
ROUTE_PREFIX = f"httproute/{NAMESPACE}/{SERVICE}"
CANDIDATE_CLUSTER = f"outbound|8080||{SERVICE}-candidate.{NAMESPACE}.svc.cluster.local"
PRIMARY_CLUSTER = f"outbound|8080||{SERVICE}-primary.{NAMESPACE}.svc.cluster.local"
# The ramp's first step, written by one scheduled pass (no hold to wait out in this test).
STEP_PERCENT = 50
RAMP = {
    "mirror_ramp_mode": "scheduled",
    "mirror_ramp_steps": [{"percent": STEP_PERCENT, "hold": "1h"}, {"percent": 100, "hold": "1h"}],
}


@pytest.fixture(scope="module")
def gateway_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The sandbox on Gateway API, no load generator (the tests count their own requests);
    inventories/local's services as they are: GET and HEAD mirrored, POST not."""
    sandbox = start_sandbox(
        tmp_path_factory.mktemp("build"), mirror_mesh_api="gateway-api", mirror_services=local_services()
    )
    try:
        yield sandbox
    finally:
        stop_sandbox(sandbox)


def live_routes(sandbox: Sandbox) -> list[dict]:
    """The routes Envoy runs (its config_dump), not what the route file says."""
    dump = http_json(f"{sandbox.info['admin_url']}/config_dump?resource=dynamic_route_configs")
    (config,) = dump["configs"]
    (host,) = config["route_config"]["virtual_hosts"]
    assert host["name"] == f"{SERVICE}.{NAMESPACE}.svc.cluster.local:8080", "the GAMMA parent, as istiod names it"
    return host["routes"]


def mirror_numerators(sandbox: Sandbox) -> dict[str, list[tuple[str, int]]]:
    """Route name -> (cluster, numerator over a million) of each live mirror policy."""
    return {
        route["name"]: [
            (policy["cluster"], policy["runtime_fraction"]["default_value"].get("numerator", 0))
            for policy in route["route"].get("request_mirror_policies", [])
        ]
        for route in live_routes(sandbox)
    }


def candidate_served(sandbox: Sandbox, prefix: str) -> int:
    return sandbox.settled_count("candidate", prefix)


def test_the_start_renders_the_httproute_and_envoy_runs_it(gateway_sandbox: Sandbox) -> None:
    sandbox = gateway_sandbox
    assert sandbox.info["mesh_api"] == "gateway-api"
    rendered = sorted(path.name for path in (sandbox.build / "k8s").glob("*.yml"))
    assert f"httproute-{NAMESPACE}-{SERVICE}.yml" in rendered
    assert {f"service-{NAMESPACE}-{SERVICE}-primary.yml", f"service-{NAMESPACE}-{SERVICE}-candidate.yml"} <= set(
        rendered
    )
    assert not [name for name in rendered if name.startswith(("virtualservice-", "destinationrule-"))], rendered
    assert sandbox.info["envoy"]["route_config_name"] == "8080", "the route file keeps the istio path's name"
    # The HTTPRoute's rules as Envoy Gateway names them: GET and HEAD of the rule `mirror`, then
    # the catch-all; every one to the primary's Service, no mirror at the rendered 0 %.
    assert mirror_numerators(sandbox) == {
        f"{ROUTE_PREFIX}/rule/0/match/0": [],
        f"{ROUTE_PREFIX}/rule/0/match/1": [],
        f"{ROUTE_PREFIX}/rule/1/match/0": [],
    }
    assert {route["route"]["cluster"] for route in live_routes(sandbox)} == {PRIMARY_CLUSTER}
    assert {PRIMARY_CLUSTER, CANDIDATE_CLUSTER} <= set(live_static_clusters(sandbox))
    assert sandbox.live_percent() == 0
    assert sandbox.driver().read().mirror_drift == ""
    statuses = send(sandbox.info["proxy_url"], [f"/gw-off/{i}" for i in range(100)])
    assert statuses == [200] * 100
    assert sandbox.served("primary", "/gw-off/")["count"] == 100
    assert candidate_served(sandbox, "/gw-off/") == 0, "mirrored at the rendered 0 %"


def test_started_twice_changes_nothing(gateway_sandbox: Sandbox) -> None:
    sandbox = gateway_sandbox
    assert recap_counts(sandbox.first_run.output)["changed"] > 0
    again = sandbox.run("started")
    assert again.returncode == 0, again.output[-4000:]
    assert recap_counts(again.output)["changed"] == 0, again.output[-4000:]
    assert sandbox.recorded_pids() == sandbox.pids


def test_the_ramp_step_goes_live_and_mirrors_gets_not_posts(gateway_sandbox: Sandbox) -> None:
    sandbox = gateway_sandbox
    ramp = run_playbook(
        "playbooks/ramp.yml",
        extra_vars={
            **sandbox.extra_vars,
            **RAMP,
            "mirror_prometheus": {"url": f"http://127.0.0.1:{sandbox.ports['prometheus']}", "timeout": "5s"},
        },
        timeout=300,
    )
    assert ramp.returncode == 0, ramp.output[-6000:]
    # Live in Envoy (config_dump): both routes of the rule `mirror` mirror to the candidate's
    # Service at the step's percent, the catch-all (POST) mirrors nothing.
    step = [(CANDIDATE_CLUSTER, STEP_PERCENT * 10_000)]
    assert mirror_numerators(sandbox) == {
        f"{ROUTE_PREFIX}/rule/0/match/0": step,
        f"{ROUTE_PREFIX}/rule/0/match/1": step,
        f"{ROUTE_PREFIX}/rule/1/match/0": [],
    }
    assert sandbox.live_percent() == STEP_PERCENT
    assert sandbox.driver().read().mirror_drift == ""

    envoy_before = counter(sandbox.info["admin_url"], f"cluster.{CANDIDATE_CLUSTER}.upstream_rq_total", default=0)
    metrics_before = candidate_served_total(sandbox)
    gets, posts = 1000, 200
    assert send(sandbox.info["proxy_url"], [f"/gw-get/{i}" for i in range(gets)]) == [200] * gets
    assert send(sandbox.info["proxy_url"], [f"/gw-post/{i}" for i in range(posts)], method="POST") == [200] * posts
    assert sandbox.served("primary", "/gw-get/")["count"] == gets
    assert sandbox.served("primary", "/gw-post/")["count"] == posts

    mirrored = candidate_served(sandbox, "/gw-get/")
    p = STEP_PERCENT / 100
    sigma = math.sqrt(gets * p * (1 - p))
    assert abs(mirrored - gets * p) <= 4 * sigma, f"{mirrored} of {gets} GETs mirrored at {STEP_PERCENT} %"
    assert candidate_served(sandbox, "/gw-post/") == 0, "a POST was mirrored"
    recent = sandbox.served("candidate", "/gw-get/", limit=20)["recent"]
    assert recent and {entry["method"] for entry in recent} == {"GET"}
    # The candidate's own metrics and Envoy's count of its cluster agree with what it served.
    assert settled(lambda: candidate_served_total(sandbox)) - metrics_before == mirrored
    envoy_after = settled(
        lambda: counter(sandbox.info["admin_url"], f"cluster.{CANDIDATE_CLUSTER}.upstream_rq_total", default=0)
    )
    assert envoy_after - envoy_before == mirrored
