"""The EnvoyFilters that role mirror_proxy renders, loaded verbatim into a real Envoy and acting.

Each test renders with the real role (the playbook of tests/manifests/test_proxy_render.py), takes
the inbound HTTP filters of one pod with mirrorsandbox.envoy_filters (as istiod applies the
SIDECAR_INBOUND patches) and starts Envoy 1.40 (mirrorsandbox.envoy_process) with them before the
router of a listener in front of a loopback backend that counts what it serves:

- dev's own filters load, in priority order, with dev's values;
- the local rate limit passes a bounded burst and answers the rest 429 without reaching the backend;
- adaptive concurrency holds the backend to its minimum concurrency while it measures the minimum
  RTT, answers the excess 503, then ends the measurement;
- the cache answers a second GET without reaching the backend, on the primary only: the candidate's
  pods get no filter, so its backend sees every request;
- fault injection: the role renders no EnvoyFilter for it; it is the VirtualService's (the routes'
  fault config of mirrorsandbox.envoy_config, tested with the translation).
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from mirrorsandbox.envoy_filters import inbound_http_filters, load_envoy_filters
from mirrorsandbox.envoy_process import EnvoyProcess, admin_get, counter, start_routed_envoy, static_cluster
from tests.manifests.test_proxy_render import PLAYBOOK, group_vars, render

pytestmark = pytest.mark.slow

# The local inventory with every proxy feature on: a small bucket, so that a bounded burst
# overflows it; dev's adaptive concurrency; the cache; and fault, to show it renders no EnvoyFilter.
RATE_LIMIT = {"enabled": True, "max_tokens": 20, "tokens_per_fill": 20, "fill_interval": "1s"}
LOCAL_PROXY = {
    "rate_limit": RATE_LIMIT,
    "adaptive_concurrency": group_vars("dev", "proxy")["mirror_proxy"]["adaptive_concurrency"],
    "cache": {"enabled": True},
    "fault": {
        "enabled": True,
        "delay": {"percent": 1, "fixed_delay": "2s"},
        "abort": {"percent": 50, "http_status": 503},
    },
}
ROUTER = "envoy.filters.http.router"
HCM_STAT_PREFIX = "sandbox_http"  # envoy_process.bootstrap_with_rds's connection manager
RATE_LIMIT_STATS = "http_local_rate_limiter.http_local_rate_limit"  # the rendered stat_prefix
GRADIENT_STATS = f"http.{HCM_STAT_PREFIX}.adaptive_concurrency.gradient_controller"
# Envoy's default gradient_controller_config.concurrency_limit_params.min_concurrency (unset by the
# role): the limit while the minimum RTT is being measured.
MIN_CONCURRENCY = 3
SLOW_SECONDS = 0.5
HTTP_TIMEOUT = 10.0
MAX_TEST_SECONDS = 30.0


@dataclass
class Pods:
    """The pods of a rendered service: its namespace and the labels of its primary and candidate."""

    namespace: str
    primary: dict[str, str]
    candidate: dict[str, str]


def pods_of(env: str) -> Pods:
    (service, *_) = group_vars(env, "services")["mirror_services"]
    namespace = service.get("namespace") or group_vars(env, "environment")["mirror_namespace"]
    labels = {subset["name"]: {"app": service["name"], **subset["labels"]} for subset in service["subsets"]}
    (candidate, *_) = (mirror["subset"] for mirror in service["mirrors"])
    return Pods(namespace, labels[service["primary_subset"]], labels[candidate])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """The EnvoyFilters the role renders for dev as it is and for local with every feature on."""
    workdir = tmp_path_factory.mktemp("filters-render")
    playbook = workdir / "render-proxy.yml"
    playbook.write_text(PLAYBOOK)
    runs = {"dev": (), "local": ({"mirror_proxy": LOCAL_PROXY},)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(runs, pool.map(lambda env: render(playbook, workdir, env, *runs[env]), runs), strict=True))
    for result in results.values():
        assert result.run.returncode == 0, result.run.output[-3000:]
    return {env: load_envoy_filters(result.k8s) for env, result in results.items()}


class Backend:
    """A loopback HTTP/1.1 backend that counts what it serves, per path, and its peak concurrency.

    /cacheable is cacheable for 5 minutes, /slow takes SLOW_SECONDS, any other path is no-store.
    """

    def __init__(self) -> None:
        self.served: Counter[str] = Counter()
        self.peak_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One write per answer: headers and body in two writes stall ~40 ms each on delayed ACKs.
            wbufsize = 64 * 1024
            CACHE_CONTROL: ClassVar[dict[str, str]] = {"/cacheable": "public, max-age=300"}

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with backend._lock:
                    backend._in_flight += 1
                    backend.peak_in_flight = max(backend.peak_in_flight, backend._in_flight)
                    backend.served[path] += 1
                    body = f"{path} #{backend.served[path]}".encode()
                try:
                    if path == "/slow":
                        time.sleep(SLOW_SECONDS)
                    self.send_response(200)
                    self.send_header("Cache-Control", self.CACHE_CONTROL.get(path, "no-store"))
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with backend._lock:
                        backend._in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the counters are the record."""

        return Handler


@dataclass
class Sidecar:
    """Envoy in front of one backend, with the inbound HTTP filters of one pod."""

    envoy: EnvoyProcess
    backend: Backend
    port: int
    filters: list[dict[str, Any]] = field(default_factory=list)

    def get(self, path: str, connection: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], bytes]:
        own = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        try:
            own.request("GET", path)
            response = own.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            if connection is None:
                own.close()

    def stat(self, name: str) -> int:
        return counter(self.envoy.admin_url, name, default=0)

    def live_http_filters(self) -> list[dict[str, Any]]:
        """The HTTP filters of the listener as Envoy runs them (admin /config_dump), router included."""
        dump = json.loads(admin_get(self.envoy.admin_url, "/config_dump?resource=static_listeners"))
        (listener,) = dump["configs"]
        (chain,) = listener["listener"]["filter_chains"]
        (manager,) = chain["filters"]
        return manager["typed_config"]["http_filters"]


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Callable[[list[dict[str, Any]]], Sidecar]]:
    """Start Envoy + backend pairs; every one is stopped (Envoy by its PID) at the end of the test."""
    started: list[Sidecar] = []
    backends: list[Backend] = []

    def start(filters: list[dict[str, Any]]) -> Sidecar:
        backend = Backend()
        backends.append(backend)
        cluster = f"inbound|{backend.port}||"
        envoy = start_routed_envoy(
            tmp_path / f"envoy-{len(backends)}",
            {
                "name": "inbound",
                "virtual_hosts": [
                    {
                        "name": "inbound",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "5s"}}],
                    }
                ],
            },
            [static_cluster(cluster, f"127.0.0.1:{backend.port}")],
            inbound_http_filters=filters,
        )
        started.append(Sidecar(envoy.process, backend, port=envoy.port, filters=filters))
        return started[-1]

    yield start
    for running in started:
        running.envoy.stop()
    for backend in backends:
        backend.stop()


def test_dev_filters_load_verbatim_in_priority_order(
    rendered: dict[str, list[dict[str, Any]]], sidecar: Callable[[list[dict[str, Any]]], Sidecar]
) -> None:
    pods = pods_of("dev")
    filters = inbound_http_filters(rendered["dev"], namespace=pods.namespace, pod_labels=pods.primary)
    running = sidecar(filters)
    live = running.live_http_filters()
    assert [f["name"] for f in live] == [
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.adaptive_concurrency",
        "envoy.filters.http.cache",
        ROUTER,
    ]
    assert [f["typed_config"]["@type"] for f in live[:-1]] == [f["typed_config"]["@type"] for f in filters]
    bucket = group_vars("dev", "proxy")["mirror_proxy"]["rate_limit"]
    assert live[0]["typed_config"]["token_bucket"] == {
        "max_tokens": bucket["max_tokens"],
        "tokens_per_fill": bucket["tokens_per_fill"],
        "fill_interval": bucket["fill_interval"],
    }
    status, _, _ = running.get("/")
    assert status == 200
    # The candidate (v2) and the perf target (v2-perf) of dev's services get none of them.
    assert inbound_http_filters(rendered["dev"], namespace=pods.namespace, pod_labels=pods.candidate) == []


def test_local_rate_limit_passes_a_bounded_burst(
    rendered: dict[str, list[dict[str, Any]]], sidecar: Callable[[list[dict[str, Any]]], Sidecar]
) -> None:
    pods = pods_of("local")
    filters = inbound_http_filters(rendered["local"], namespace=pods.namespace, pod_labels=pods.primary)
    running = sidecar([f for f in filters if f["name"] == "envoy.filters.http.local_ratelimit"])
    requests = 200
    statuses: Counter[int] = Counter()
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=HTTP_TIMEOUT)
    started = time.monotonic()
    try:
        for _ in range(requests):
            if time.monotonic() - started > MAX_TEST_SECONDS:
                break
            status, _, _ = running.get("/", connection)
            statuses[status] += 1
    finally:
        connection.close()
    elapsed = time.monotonic() - started
    assert sum(statuses.values()) == requests, f"only {statuses} within {MAX_TEST_SECONDS} s"
    assert set(statuses) <= {200, 429}, statuses
    passed, limited = statuses[200], statuses[429]
    fill_seconds = float(RATE_LIMIT["fill_interval"].removesuffix("s"))
    # A full bucket, then at most one fill per interval begun during the burst.
    most = RATE_LIMIT["max_tokens"] + RATE_LIMIT["tokens_per_fill"] * (math.floor(elapsed / fill_seconds) + 1)
    assert RATE_LIMIT["max_tokens"] <= passed <= most, (statuses, elapsed)
    assert limited == requests - passed > 0
    assert running.backend.served["/"] == passed  # a 429 never reaches the backend
    assert running.stat(f"{RATE_LIMIT_STATS}.rate_limited") == limited
    assert running.stat(f"{RATE_LIMIT_STATS}.ok") == passed


def test_adaptive_concurrency_holds_the_backend_while_it_measures(
    rendered: dict[str, list[dict[str, Any]]], sidecar: Callable[[list[dict[str, Any]]], Sidecar]
) -> None:
    pods = pods_of("local")
    filters = inbound_http_filters(rendered["local"], namespace=pods.namespace, pod_labels=pods.primary)
    running = sidecar([f for f in filters if f["name"] == "envoy.filters.http.adaptive_concurrency"])
    assert running.stat(f"{GRADIENT_STATS}.min_rtt_calculation_active") == 1
    assert running.stat(f"{GRADIENT_STATS}.concurrency_limit") == MIN_CONCURRENCY

    concurrent = 12
    barrier = threading.Barrier(concurrent)

    def one_slow_request(_: int) -> int:
        barrier.wait(timeout=HTTP_TIMEOUT)
        return running.get("/slow")[0]

    with ThreadPoolExecutor(max_workers=concurrent) as pool:
        statuses = Counter(pool.map(one_slow_request, range(concurrent)))
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0, statuses
    assert running.backend.peak_in_flight <= MIN_CONCURRENCY
    assert running.backend.served["/slow"] == statuses[200]
    assert running.stat(f"{GRADIENT_STATS}.rq_blocked") == statuses[503]

    # The measurement ends after min_rtt_request_count samples; then the gradient sets the limit.
    samples = LOCAL_PROXY["adaptive_concurrency"]["min_rtt_request_count"]
    deadline = time.monotonic() + MAX_TEST_SECONDS
    sent = 0
    while running.stat(f"{GRADIENT_STATS}.min_rtt_calculation_active") == 1:
        assert time.monotonic() < deadline and sent < 4 * samples, f"still measuring after {sent} requests"
        assert running.get("/")[0] == 200
        sent += 1
    # Only the requests that reached the backend are samples (the 503s never did); the sample of
    # the last one may be recorded just after its answer arrives.
    assert samples - statuses[200] <= sent <= samples - statuses[200] + 2


def test_cache_answers_the_second_get_on_the_primary_only(
    rendered: dict[str, list[dict[str, Any]]], sidecar: Callable[[list[dict[str, Any]]], Sidecar]
) -> None:
    pods = pods_of("local")
    primary = sidecar(inbound_http_filters(rendered["local"], namespace=pods.namespace, pod_labels=pods.primary))
    candidate = sidecar(inbound_http_filters(rendered["local"], namespace=pods.namespace, pod_labels=pods.candidate))
    assert [f["name"] for f in primary.filters] == [
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.adaptive_concurrency",
        "envoy.filters.http.cache",
    ]
    assert candidate.filters == []

    first = primary.get("/cacheable")
    second = primary.get("/cacheable")
    assert first[0] == second[0] == 200
    assert second[2] == first[2] == b"/cacheable #1"
    assert "age" in second[1] and "age" not in first[1]
    assert primary.backend.served["/cacheable"] == 1
    # A no-store answer is not kept: both GETs reach the backend.
    assert [primary.get("/")[2] for _ in range(2)] == [b"/ #1", b"/ #2"]

    # The candidate, mirrored the same GETs, answers each from its own backend.
    assert [candidate.get("/cacheable")[2] for _ in range(2)] == [b"/cacheable #1", b"/cacheable #2"]
    assert candidate.backend.served["/cacheable"] == 2


def test_fault_is_the_virtual_services_not_an_envoy_filter(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert LOCAL_PROXY["fault"]["enabled"]
    inserted = {patch["patch"]["value"]["name"] for doc in rendered["local"] for patch in doc["spec"]["configPatches"]}
    assert inserted == {
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.adaptive_concurrency",
        "envoy.filters.http.cache",
    }
    dumped = yaml.safe_dump(rendered["local"])
    assert "envoy.filters.http.fault" not in dumped
    assert "HTTPFault" not in dumped
