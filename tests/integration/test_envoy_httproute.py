"""The HTTPRoute translation on a real Envoy 1.40 in front of two sandbox backends.

Envoy (filesystem RDS, --reject-unknown-dynamic-fields) runs what `httproute_config` makes of
the HTTPRoute the project renders for the local service (rule `mirror` for GET and HEAD, a
catch-all) and its version Services; the backends (python -m mirrorsandbox.backend, started and
stopped by PID) count what they serve. Every load is a bounded number of requests.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirrorramp.drivers.envoy import EnvoyDriver
from mirrorramp.judge import wilson_interval
from mirrorramp.state import RampState
from mirrorsandbox.envoy_httproute import httproute_config
from mirrorsandbox.envoy_process import RoutedEnvoy, admin_get, counter, start_routed_envoy
from mirrorsandbox.harness import Backend, free_ports, http_json
from tests.unit.test_envoy_httproute import CANDIDATE, http_route, mirror_filter, service

pytestmark = pytest.mark.slow

VERSIONS = ("primary", "candidate")
SHARE_REQUESTS = 1000
Z_9999 = 3.89  # two-sided 99.99 %: a correct translation fails this test once in 10,000 runs
Z_95 = 1.96
SETTLE_SECONDS = 3.0  # bound on the wait for mirrored copies still in flight
QUIET_SECONDS = 0.3  # a count unchanged this long has every copy in


@dataclass
class Sandbox:
    envoy: RoutedEnvoy
    backends: dict[str, Backend]
    workdir: Path

    def send(self, method: str, paths: list[str]) -> list[int]:
        connection = http.client.HTTPConnection("127.0.0.1", self.envoy.port, timeout=5)
        try:
            statuses = []
            for path in paths:
                body = b"payload" if method == "POST" else None
                connection.request(method, path, body=body, headers={"Host": "demo-service:8080"})
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
            return statuses
        finally:
            connection.close()

    def served(self, version: str, prefix: str) -> int:
        return http_json(f"{self.backends[version].admin_url}/requests?prefix={prefix}&limit=0")["count"]

    def settled(self, version: str, prefix: str) -> int:
        """The count at `version` once no copy has arrived for QUIET_SECONDS (within SETTLE_SECONDS)."""
        deadline = time.monotonic() + SETTLE_SECONDS
        count, since = self.served(version, prefix), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.served(version, prefix)
            if now != count:
                count, since = now, time.monotonic()
            elif time.monotonic() - since >= QUIET_SECONDS:
                return count
        return count

    def live_routes(self) -> list[dict[str, Any]]:
        dump = json.loads(admin_get(self.envoy.admin_url, "/config_dump?resource=dynamic_route_configs"))
        (config,) = [
            entry["route_config"]
            for entry in dump["configs"]
            if entry["route_config"]["name"] == self.envoy.route_config_name
        ]
        return config["virtual_hosts"][0]["routes"]

    def driver(self) -> EnvoyDriver:
        return EnvoyDriver(
            "demo-service",
            self.envoy.route_path,
            self.envoy.route_config_name,
            self.envoy.admin_url,
            self.workdir / "state",
            confirm_timeout=2.0,
        )


def start_sandbox(workdir: Path, filters: list[dict[str, Any]] | None) -> Sandbox:
    """Two backends, Envoy on the translation of the local HTTPRoute with `filters` on rule `mirror`."""
    backends: dict[str, Backend] = {}
    ports = iter(free_ports(2 * len(VERSIONS)))
    for version in VERSIONS:
        port, admin_port = next(ports), next(ports)
        argv = [
            sys.executable,
            "-m",
            "mirrorsandbox.backend",
            "--name",
            version,
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            "--workload",
            f"demo-service-{version}",
            "--namespace",
            "sandbox",
            "--service",
            "demo-service",
            "--version",
            version,
        ]
        backends[version] = Backend(version, port, admin_port, argv, workdir / f"backend-{version}.log")
    envoy = None
    try:
        for backend in backends.values():
            backend.start()
        config = httproute_config(
            http_route(filters),
            [service(version) for version in VERSIONS],
            {f"demo-service-{version}": backend.address for version, backend in backends.items()},
        )
        envoy = start_routed_envoy(workdir, config.route_configuration, config.clusters, version_info="translated")
        return Sandbox(envoy=envoy, backends=backends, workdir=workdir)
    except BaseException:
        for backend in backends.values():
            backend.stop()
        raise


@pytest.fixture
def half(tmp_path: Path) -> Iterator[Sandbox]:
    """The mirror at 50 % as Gateway API says it with a fraction: 1/2."""
    sandbox = start_sandbox(tmp_path, [mirror_filter("candidate", fraction={"numerator": 1, "denominator": 2})])
    try:
        yield sandbox
    finally:
        sandbox.envoy.stop()
        for backend in sandbox.backends.values():
            backend.stop()


@pytest.fixture
def at_zero(tmp_path: Path) -> Iterator[Sandbox]:
    """The route as rendered at 0 %: no mirror filter, the targets annotation only."""
    sandbox = start_sandbox(tmp_path, None)
    try:
        yield sandbox
    finally:
        sandbox.envoy.stop()
        for backend in sandbox.backends.values():
            backend.stop()


def test_envoy_runs_the_translation_as_written(half: Sandbox) -> None:
    """Started with --reject-unknown-dynamic-fields, Envoy took the route file at start-up (an
    unknown field or enum would have stopped it) and runs exactly the policy translated."""
    assert counter(half.envoy.admin_url, "http.sandbox_http.rds.8080.update_rejected") == 0
    routes = half.live_routes()
    assert [route["name"] for route in routes] == [
        "httproute/sandbox/demo-service/rule/0/match/0",
        "httproute/sandbox/demo-service/rule/0/match/1",
        "httproute/sandbox/demo-service/rule/1/match/0",
    ]
    for route in routes[:2]:
        (policy,) = route["route"]["request_mirror_policies"]
        assert policy["cluster"] == CANDIDATE
        assert policy["runtime_fraction"]["default_value"] == {"numerator": 500_000, "denominator": "MILLION"}
        assert policy["trace_sampled"] is False and policy["disable_shadow_host_suffix_append"] is True
    assert "request_mirror_policies" not in routes[2]["route"]


def test_half_of_the_gets_are_mirrored_within_the_interval_and_no_post(half: Sandbox) -> None:
    gets = [f"/share/{i}" for i in range(SHARE_REQUESTS)]
    assert half.send("GET", gets) == [200] * SHARE_REQUESTS
    assert half.send("POST", [f"/post/{i}" for i in range(100)]) == [200] * 100
    assert half.served("primary", "/share/") == SHARE_REQUESTS and half.served("primary", "/post/") == 100

    mirrored = half.settled("candidate", "/share/")
    low, high = wilson_interval(mirrored, SHARE_REQUESTS, Z_9999)
    low_95, high_95 = wilson_interval(mirrored, SHARE_REQUESTS, Z_95)
    assert low <= 0.5 <= high, f"{mirrored} of {SHARE_REQUESTS} GETs mirrored at 1/2 (95 %: {low_95:.3f}-{high_95:.3f})"
    assert half.served("candidate", "/post/") == 0, "POST is not matched by the rule `mirror`: never mirrored"


def test_the_envoy_driver_ramps_the_translated_route(at_zero: Sandbox) -> None:
    """The ramp's driver finds the marked routes of the translation and sets the mirror on them."""
    assert at_zero.send("GET", [f"/zero/{i}" for i in range(50)]) == [200] * 50
    assert at_zero.settled("candidate", "/zero/") == 0

    driver = at_zero.driver()
    before = driver.read()
    assert before.percent == 0 and before.mirror_drift == "" and before.mirror_settings["mirror_clusters"] == {}
    state = RampState.initial().evolve(status="ramping", step_index=0, percent=100.0, step_started_at=1.0)
    assert driver.write(before, state, 100, dry_run=False).percent == 100
    heads = [f"/all/head-{i}" for i in range(50)]
    gets = [f"/all/get-{i}" for i in range(50)]
    assert at_zero.send("HEAD", heads) == [200] * 50 and at_zero.send("GET", gets) == [200] * 50
    assert at_zero.settled("candidate", "/all/") == 100, "every GET and HEAD copied at 100 %"
    after = driver.read()
    assert after.percent == 100 and after.mirror_drift == "", after.mirror_drift
    host = "demo-service.sandbox.svc.cluster.local:8080"
    assert after.mirror_settings["mirror_clusters"] == {
        f"{host}/httproute/sandbox/demo-service/rule/0/match/{index}": [CANDIDATE] for index in (0, 1)
    }, "the marked routes, and only them"


def test_envoy_accepts_every_shape_the_translation_makes(tmp_path: Path) -> None:
    """Segment prefixes, header and method matches, weighted backends, both timeouts, two mirror
    filters and a Gateway parent, in one route file: Envoy (rejecting unknown fields) runs it as
    written. Nothing listens on the backends' ports: only the configuration is under test."""
    route = http_route(
        [mirror_filter("candidate", percent=20), mirror_filter("perf", fraction={"numerator": 5, "denominator": 1000})],
        '[{"host":"demo-service-candidate","port":8080},{"host":"demo-service-perf","port":8080}]',
        timeouts={"request": "10s", "backendRequest": "2s"},
    )
    route["spec"]["parentRefs"] = [{"name": "shop", "sectionName": "http"}]
    route["spec"]["rules"][0]["matches"] = [
        {
            "path": {"type": "PathPrefix", "value": "/beta/"},
            "headers": [{"name": "x-user-type", "value": "beta"}],
            "method": "GET",
        }
    ]
    route["spec"]["rules"][1]["backendRefs"] = [
        {"name": "demo-service-primary", "port": 8080, "weight": 90},
        {"name": "demo-service-candidate", "port": 8080, "weight": 10},
    ]
    versions = ("primary", "candidate", "perf")
    config = httproute_config(
        route,
        [service(version) for version in versions],
        {f"demo-service-{version}": f"127.0.0.1:{port}" for version, port in zip(versions, free_ports(3), strict=True)},
    )
    envoy = start_routed_envoy(tmp_path, config.route_configuration, config.clusters, version_info="every-shape")
    try:
        assert counter(envoy.admin_url, "http.sandbox_http.rds.8080.update_rejected") == 0
        dump = json.loads(admin_get(envoy.admin_url, "/config_dump?resource=dynamic_route_configs"))
        (live,) = [entry for entry in dump["configs"] if entry["route_config"]["name"] == "8080"]
        assert live["version_info"] == "every-shape"
        mirror_route, catch_all = live["route_config"]["virtual_hosts"][0]["routes"]
        assert mirror_route["match"]["path_separated_prefix"] == "/beta"
        assert [
            p["runtime_fraction"]["default_value"]["numerator"]
            for p in mirror_route["route"]["request_mirror_policies"]
        ] == [
            200_000,
            5_000,
        ]
        assert mirror_route["route"]["timeout"] == "2s"
        assert [c["weight"] for c in catch_all["route"]["weighted_clusters"]["clusters"]] == [90, 10]
    finally:
        envoy.stop()
