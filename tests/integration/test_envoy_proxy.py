"""The translation on a real Envoy 1.40: istiod's sidecar config in front of loopback backends.

One Envoy (filesystem RDS, --reject-unknown-dynamic-fields) for the module, three small
recording backends (primary, candidate, perf); each test writes the route file it needs by
rename and waits for config_dump to show it before sending a bounded load.
"""

from __future__ import annotations

import copy
import http.client
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirrorramp.judge import wilson_interval
from mirrorsandbox.envoy_config import SidecarConfig, sidecar_config
from mirrorsandbox.envoy_process import (
    EnvoyError,
    EnvoyProcess,
    admin_get,
    bootstrap_with_rds,
    counter,
    start_envoy,
    start_routed_envoy,
    write_route_file,
)

pytestmark = pytest.mark.slow

SUBSETS = ("primary", "candidate", "perf")
FQDN = "demo-service.sandbox.svc.cluster.local"
ROUTE_NAME = "8080"
GOLDEN = Path(__file__).resolve().parents[1] / "manifests" / "golden" / "istio-dev"
SETTLE_SECONDS = 2.0  # bound on waiting for a copy in flight (mirrored copies are asynchronous)


@dataclass
class RecordingBackend:
    """A loopback HTTP server that answers 200 and records (method, path, Host) of every request."""

    name: str
    server: ThreadingHTTPServer
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def requests(self, prefix: str) -> list[tuple[str, str, str]]:
        with self.lock:
            return [entry for entry in self.seen if entry[1].startswith(prefix)]


def start_backend(name: str) -> RecordingBackend:
    backend: RecordingBackend

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream connections expect
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with backend.lock:
                backend.seen.append((self.command, self.path, self.headers.get("Host", "")))
            body = backend.name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_HEAD = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:  # the test output stays quiet
            pass

    backend = RecordingBackend(name=name, server=ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    threading.Thread(target=backend.server.serve_forever, name=f"backend-{name}", daemon=True).start()
    return backend


@dataclass
class Proxy:
    envoy: EnvoyProcess
    route_dir: Path
    port: int
    backends: dict[str, RecordingBackend]
    writes: int = 0

    def apply(self, config: SidecarConfig) -> str:
        """Write the routes (rename into the watched dir) and wait until config_dump shows them."""
        self.writes += 1
        version = f"test-{self.writes}"
        routes = copy.deepcopy(config.route_configuration)
        # Envoy keeps the old version for identical content: a token makes every write unique.
        routes["virtual_hosts"][0]["routes"][0].setdefault("metadata", {}).setdefault("filter_metadata", {})[
            "mirror_ramp_test"
        ] = {"write": version}
        write_route_file(self.route_dir, routes, version)
        wait_until(lambda: f'"version_info": "{version}"' in self.route_dump(), what=f"route version {version} live")
        return version

    def route_dump(self) -> str:
        return admin_get(self.envoy.admin_url, "/config_dump?resource=dynamic_route_configs")

    def send(self, method: str, paths: list[str]) -> list[int]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
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

    def rds(self, name: str) -> int:
        return counter(self.envoy.admin_url, f"http.sandbox_http.rds.{ROUTE_NAME}.{name}")

    def upstream_requests(self, subset: str) -> int:
        return counter(self.envoy.admin_url, f"cluster.outbound|8080|{subset}|{FQDN}.upstream_rq_total")


def wait_until(condition: Callable[[], bool], *, what: str, timeout: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


def destination(subset: str) -> dict[str, Any]:
    return {"host": "demo-service", "port": {"number": 8080}, "subset": subset}


def translated(
    mirror_fields: dict[str, Any] | None, targets: list[str], backends: dict[str, RecordingBackend], **route_fields: Any
) -> SidecarConfig:
    """The config of the VirtualService mirror_istio renders for inventories/local (GET|HEAD route
    `mirror`, catch-all `primary`) with the given mirror fields."""
    annotation = ",".join(f'{{"host":"demo-service","port":8080,"subset":"{subset}"}}' for subset in targets)
    to_primary = {"route": [{"destination": destination("primary")}], "timeout": "5s", **route_fields}
    virtual_service = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": "demo-service",
            "namespace": "sandbox",
            "annotations": {"mirror-ramp.io/mirror-targets": f"[{annotation}]"},
        },
        "spec": {
            "hosts": ["demo-service"],
            "http": [
                {"name": "mirror", "match": [{"method": {"regex": "GET|HEAD"}}], **to_primary, **(mirror_fields or {})},
                {"name": "primary", **copy.deepcopy(to_primary)},
            ],
        },
    }
    destination_rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "demo-service", "namespace": "sandbox"},
        "spec": {"host": "demo-service", "subsets": [{"name": name, "labels": {"version": name}} for name in SUBSETS]},
    }
    return sidecar_config(
        virtual_service, destination_rule, {name: backend.address for name, backend in backends.items()}
    )


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    backends: dict[str, RecordingBackend] = {}
    envoy: EnvoyProcess | None = None
    try:
        for name in SUBSETS:
            backends[name] = start_backend(name)
        initial = translated(None, ["candidate"], backends)
        routed = start_routed_envoy(
            tmp_path_factory.mktemp("envoy"),
            initial.route_configuration,
            initial.clusters,
            inbound_http_filters=initial.http_filters,
        )
        envoy = routed.process
        yield Proxy(envoy=envoy, route_dir=routed.route_dir, port=routed.port, backends=backends)
    finally:
        if envoy is not None:
            envoy.stop()
        for backend in backends.values():
            backend.server.shutdown()
            backend.server.server_close()


def test_gets_are_mirrored_at_100_percent_and_posts_are_not(proxy: Proxy) -> None:
    proxy.apply(
        translated(
            {"mirror": destination("candidate"), "mirrorPercentage": {"value": 100.0}}, ["candidate"], proxy.backends
        )
    )
    gets = [f"/all-get/{i}" for i in range(50)]
    posts = [f"/all-post/{i}" for i in range(20)]
    assert proxy.send("GET", gets) == [200] * 50
    assert proxy.send("POST", posts) == [200] * 20

    candidate, primary = proxy.backends["candidate"], proxy.backends["primary"]
    wait_until(lambda: len(candidate.requests("/all-get/")) == 50, what="every GET mirrored")
    assert sorted(path for _, path, _ in candidate.requests("/all-get/")) == sorted(gets)
    assert len(primary.requests("/all-get/")) == 50 and len(primary.requests("/all-post/")) == 20
    time.sleep(0.2)  # a POST copy, if any were sent, would have arrived with the GETs' copies
    assert candidate.requests("/all-post/") == [], "POST is not a safe method: never mirrored"
    # Istio >= 1.28: the copy keeps the primary's Host (no "-shadow" suffix).
    assert {host for _, _, host in candidate.requests("/all-get/")} == {"demo-service:8080"}


def test_zero_percent_mirrors_nothing(proxy: Proxy) -> None:
    proxy.apply(
        translated(
            {"mirror": destination("candidate"), "mirrorPercentage": {"value": 0.0}}, ["candidate"], proxy.backends
        )
    )
    assert "request_mirror_policies" not in proxy.route_dump()
    before = proxy.upstream_requests("candidate")
    assert proxy.send("GET", [f"/zero/{i}" for i in range(100)]) == [200] * 100
    time.sleep(0.3)  # any copy would be sent alongside its primary request
    assert proxy.backends["candidate"].requests("/zero/") == []
    assert proxy.upstream_requests("candidate") == before
    assert len(proxy.backends["primary"].requests("/zero/")) == 100


def test_several_mirrors_each_get_every_copy(proxy: Proxy) -> None:
    mirrors = {
        "mirrors": [
            {"destination": destination(subset), "percentage": {"value": 100.0}} for subset in ("candidate", "perf")
        ]
    }
    proxy.apply(translated(mirrors, ["candidate", "perf"], proxy.backends))
    paths = [f"/both/{i}" for i in range(30)]
    assert proxy.send("GET", paths) == [200] * 30
    for subset in ("candidate", "perf"):
        backend = proxy.backends[subset]
        wait_until(lambda backend=backend: len(backend.requests("/both/")) == 30, what=f"every copy at {subset}")
        assert sorted(path for _, path, _ in backend.requests("/both/")) == sorted(paths)


def test_the_fault_aborts_before_the_backends(proxy: Proxy) -> None:
    fault = {"abort": {"httpStatus": 418, "percentage": {"value": 100.0}}}
    proxy.apply(translated(None, ["candidate"], proxy.backends, fault=fault))
    assert proxy.send("GET", [f"/fault/{i}" for i in range(20)]) == [418] * 20
    assert proxy.backends["primary"].requests("/fault/") == []


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda route: route["route"].update(unknown_field=1), id="unknown-field"),
        pytest.param(
            lambda route: route["route"]["request_mirror_policies"][0]["runtime_fraction"]["default_value"].update(
                denominator="MILLON"
            ),
            id="enum-typo",
        ),
        pytest.param(
            lambda route: route["route"]["request_mirror_policies"][0].update(cluster="outbound|8080|candidat|x"),
            id="cluster-typo",
        ),
    ],
)
def test_a_bad_route_file_is_rejected_and_the_live_routes_stay(proxy: Proxy, breakage: Callable[[dict], None]) -> None:
    good = translated(
        {"mirror": destination("candidate"), "mirrorPercentage": {"value": 100.0}}, ["candidate"], proxy.backends
    )
    live_version = proxy.apply(good)
    rejected_before = proxy.rds("update_rejected")
    bad_routes = copy.deepcopy(good.route_configuration)
    breakage(bad_routes["virtual_hosts"][0]["routes"][0])
    write_route_file(proxy.route_dir, bad_routes, "bad")
    wait_until(lambda: proxy.rds("update_rejected") == rejected_before + 1, what="update_rejected moves")
    dump = proxy.route_dump()
    assert f'"version_info": "{live_version}"' in dump and '"version_info": "bad"' not in dump
    assert proxy.send("GET", [f"/after-bad/{live_version}"]) == [200]
    wait_until(
        lambda: len(proxy.backends["candidate"].requests(f"/after-bad/{live_version}")) == 1,
        what="the live mirror still mirrors",
    )


def test_a_partial_share_is_mirrored_within_its_interval(proxy: Proxy) -> None:
    """20 % of 1,000 GETs: the copies counted inside the 99.99 % Wilson interval (z = 3.89)."""
    proxy.apply(
        translated(
            {"mirror": destination("candidate"), "mirrorPercentage": {"value": 20.0}}, ["candidate"], proxy.backends
        )
    )
    total = 1000
    assert proxy.send("GET", [f"/share/{i}" for i in range(total)]) == [200] * total
    time.sleep(0.3)  # the last copies in flight
    mirrored = len(proxy.backends["candidate"].requests("/share/"))
    low, high = wilson_interval(mirrored, total, 3.89)
    assert low <= 0.20 <= high, f"{mirrored} of {total} mirrored at 20 %"


@pytest.mark.parametrize("service", ["user-service", "order-service"])
def test_the_dev_renders_load_into_envoy_as_translated(tmp_path: Path, service: str) -> None:
    """Every field the role renders for inventories/dev (gRPC route, fault, retries, consistent
    hash, pool, outlier detection, two mirrors) is accepted by Envoy with unknown fields rejected."""
    virtual_service = yaml.safe_load((GOLDEN / f"virtualservice-shop-dev-{service}.yml.golden").read_text())
    destination_rule = yaml.safe_load((GOLDEN / f"destinationrule-shop-dev-{service}.yml.golden").read_text())
    subsets = [subset["name"] for subset in destination_rule["spec"]["subsets"]]
    config = sidecar_config(
        virtual_service, destination_rule, {name: f"127.0.0.1:{19000 + i}" for i, name in enumerate(subsets)}
    )
    name = config.route_configuration["name"]
    envoy = start_routed_envoy(
        tmp_path,
        config.route_configuration,
        config.clusters,
        inbound_http_filters=config.http_filters,
        version_info="golden",
    )
    try:
        assert counter(envoy.admin_url, f"http.sandbox_http.rds.{name}.update_success") == 1
        assert counter(envoy.admin_url, f"http.sandbox_http.rds.{name}.update_rejected") == 0
        dump = admin_get(envoy.admin_url, "/config_dump?resource=dynamic_route_configs")
        assert '"version_info": "golden"' in dump
        live_clusters = admin_get(envoy.admin_url, "/clusters")
        assert all(f"{cluster['name']}::" in live_clusters for cluster in config.clusters)
    finally:
        envoy.stop()


def test_a_bootstrap_envoy_refuses_fails_fast_with_its_log(tmp_path: Path) -> None:
    bootstrap = bootstrap_with_rds(listener_port=0, route_dir=tmp_path / "missing", route_config_name="r", clusters=[])
    started = time.monotonic()
    with pytest.raises(EnvoyError, match="paths must refer to an existing path"):
        start_envoy(bootstrap, tmp_path / "run")
    assert time.monotonic() - started < 5


def test_an_admin_off_loopback_is_refused_before_start(tmp_path: Path) -> None:
    bootstrap = {"admin": {"address": {"socket_address": {"address": "0.0.0.0", "port_value": 0}}}}
    with pytest.raises(EnvoyError, match=r"listens on 127\.0\.0\.1 only"):
        start_envoy(bootstrap, tmp_path)
    assert not (tmp_path / "bootstrap.yaml").exists()


def test_stop_ends_envoy_by_its_pid_and_twice_is_harmless(tmp_path: Path) -> None:
    envoy = start_routed_envoy(tmp_path, {"name": "r", "virtual_hosts": []}, []).process
    try:
        assert admin_get(envoy.admin_url, "/ready").strip() == "LIVE"
        with pytest.raises(EnvoyError, match=r"no counter or gauge named 'no\.such\.stat'"):
            counter(envoy.admin_url, "no.such.stat")
        assert counter(envoy.admin_url, "no.such.stat", default=0) == 0
    finally:
        envoy.stop()
    assert not Path(f"/proc/{envoy.pid}").exists()
    envoy.stop()
    with pytest.raises(EnvoyError, match="unreachable"):
        admin_get(envoy.admin_url, "/ready", timeout=0.5)
