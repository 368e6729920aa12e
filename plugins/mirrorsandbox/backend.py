"""A sandbox backend: answers any path and counts what it serves in Istio's metric schema.

    python -m mirrorsandbox.backend --name v2 --port 18082 --admin-port 18092 \\
        --workload demo-service-v2 --namespace sandbox --service demo-service

Traffic port: GET/HEAD answer 200 with a small JSON body, POST/PUT/PATCH echo the request body.
Every request served there is counted (`istio_requests_total`,
`istio_request_duration_milliseconds`, reporter="destination"), so the gate queries that run
against a mesh run against the sandbox too.

Admin port (never counted as traffic):
  GET  /metrics    Prometheus exposition
  GET  /healthz    200 "ok"
  GET  /control    the current behaviour, JSON
  POST /control    JSON {"error_ratio": 0.3, "latency_ms": 0, "latency_median_ms": 20,
                   "latency_spread": 0.5, "seed": 7}, every key optional (0 or none when left out):
                   each request fails with 500 with probability error_ratio and waits latency_ms
                   plus a log-normal draw of median latency_median_ms and log-sd latency_spread
                   (0: always the median; the wait is capped at 60 s); a seed restarts the
                   backend's random numbers, for draws that repeat run after run
  GET  /requests   ?prefix=/p/&limit=20: how many requests under the path /p/ were served since the
                   start (every one counted), and the last ones of the most recent 20,000
                   (method, path, X-Request-Id, body length and sha256)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from mirrorsandbox.loopback import loopback_host

# Istio's default buckets of istio_request_duration_milliseconds.
ISTIO_DURATION_BUCKETS_MS = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)
LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_workload",
    "destination_workload_namespace",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "request_protocol",
    "response_code",
    "response_flags",
    "grpc_response_status",
    "connection_security_policy",
)


def istio_request_metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """The request count and duration families a sidecar exports, in `registry`: Istio's names,
    labels and buckets (the backends and the synthetic metrics source both export them)."""
    # prometheus_client appends _total itself: the exposed name is istio_requests_total.
    requests = Counter("istio_requests", "Requests served.", LABELS, registry=registry)
    duration = Histogram(
        "istio_request_duration_milliseconds",
        "Request duration in milliseconds.",
        LABELS,
        buckets=ISTIO_DURATION_BUCKETS_MS,
        registry=registry,
    )
    return requests, duration


MAX_BODY = 1 << 20  # bodies above 1 MiB are refused (413): the sandbox has no use for them
RECENT_LIMIT = 20000  # requests kept with their details; counts cover every request served


MAX_LATENCY_MS = 60000.0
# Each numeric key of /control and the range it takes.
BEHAVIOUR_RANGES = {
    "error_ratio": (0.0, 1.0),
    "latency_ms": (0.0, MAX_LATENCY_MS),
    "latency_median_ms": (0.0, MAX_LATENCY_MS),
    "latency_spread": (0.0, 3.0),
}


@dataclass
class Behaviour:
    """What the backend does to the requests it serves; switched at run time on /control.

    error_ratio: the probability that a request fails with 500. The wait of a request is
    latency_ms (fixed) plus, with latency_median_ms, a log-normal draw: median latency_median_ms,
    sigma of its logarithm latency_spread (0: the median every time). seed: where the backend's
    random numbers restart when this behaviour is set (None: they go on)."""

    error_ratio: float = 0.0
    latency_ms: float = 0.0
    latency_median_ms: float = 0.0
    latency_spread: float = 0.0
    seed: int | None = None

    @staticmethod
    def validated(data: Any) -> Behaviour:
        known = [*BEHAVIOUR_RANGES, "seed"]
        if not isinstance(data, dict):
            raise ValueError(
                'expected a JSON object like {"error_ratio": 0.3, "latency_median_ms": 20, "latency_spread": 0.5}'
            )
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
        values = {}
        for key, (low, high) in BEHAVIOUR_RANGES.items():
            value = data.get(key, 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} is {value!r}, expected a number")
            if not low <= value <= high:
                raise ValueError(f"{key} is {value!r}, expected {low:g}..{high:g}")
            values[key] = float(value)
        seed = data.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed is {seed!r}, expected a whole number or null")
        return Behaviour(**values, seed=seed)

    def delay_ms(self, rng: random.Random) -> float:
        """The wait of one request, drawn with `rng`, at most MAX_LATENCY_MS."""
        delay = self.latency_ms
        if self.latency_median_ms:
            delay += self.latency_median_ms * math.exp(self.latency_spread * rng.gauss(0.0, 1.0))
        return min(delay, MAX_LATENCY_MS)

    def fails(self, rng: random.Random) -> bool:
        """Whether one request fails, drawn with `rng`."""
        return bool(self.error_ratio) and rng.random() < self.error_ratio


class Backend:
    """The state shared by the traffic and admin servers of one backend."""

    def __init__(self, name: str, workload: str, namespace: str, service: str, version: str) -> None:
        self.name = name
        self.version = version
        self.behaviour = Behaviour()
        self.rng = random.Random()
        self.lock = threading.Lock()
        self.recent: deque[dict] = deque(maxlen=RECENT_LIMIT)
        # Requests served under each directory ("/", "/load/", "/load/a/"): exact however many there
        # are, where counting the recent ones stops at RECENT_LIMIT (a 30 s benchmark cell at
        # 800 requests/s is 24,000).
        self.counts: dict[str, int] = {}
        self.registry = CollectorRegistry()
        self.requests, self.duration = istio_request_metrics(self.registry)
        self.base_labels = {
            "reporter": "destination",
            "source_workload": "loadgen",  # the sandbox's client: its load generator, through Envoy
            "source_workload_namespace": namespace,
            "destination_workload": workload,
            "destination_workload_namespace": namespace,
            "destination_app": service,
            "destination_version": version,
            "destination_service": f"{service}.{namespace}.svc.cluster.local",
            "destination_service_name": service,
            "destination_service_namespace": namespace,
            "destination_canonical_service": service,
            "destination_canonical_revision": version,
            "request_protocol": "http",
            "response_flags": "-",
            "grpc_response_status": "",
            "connection_security_policy": "none",
        }
        # Series at zero from the start: rate() then sees the first requests too.
        self.requests.labels(**self.base_labels, response_code="200")
        self.duration.labels(**self.base_labels, response_code="200")

    def current(self) -> Behaviour:
        with self.lock:
            return replace(self.behaviour)

    def set_behaviour(self, behaviour: Behaviour) -> None:
        with self.lock:
            self.behaviour = behaviour
            if behaviour.seed is not None:
                self.rng.seed(behaviour.seed)

    def draw(self) -> tuple[float, bool]:
        """The wait (ms) and the failure of one request, from the current behaviour; one draw at a
        time, so that a seed gives the same sequence whatever the threads."""
        with self.lock:
            return self.behaviour.delay_ms(self.rng), self.behaviour.fails(self.rng)

    def record(self, code: int, elapsed_ms: float, entry: dict) -> None:
        labels = {**self.base_labels, "response_code": str(code)}
        self.requests.labels(**labels).inc()
        self.duration.labels(**labels).observe(elapsed_ms)
        path = urlsplit(entry["path"]).path
        with self.lock:
            self.recent.append(entry)
            for directory in directories(path):
                self.counts[directory] = self.counts.get(directory, 0) + 1

    def served(self, prefix: str, limit: int) -> dict:
        """Requests served under the directory `prefix` ("/load" means "/load/"): their count since
        the start, and the last `limit` of the most recent RECENT_LIMIT."""
        directory = prefix if prefix.endswith("/") else f"{prefix}/"
        with self.lock:
            count = self.counts.get(directory, 0)
            recent = [e for e in self.recent if e["path"].startswith(directory)][-limit:] if limit else []
        return {"count": count, "recent": recent}


def directories(path: str) -> list[str]:
    """Every directory that `path` lies under: "/load/7" -> ["/", "/load/"]."""
    parts = path.split("/")[1:-1]
    return ["/" + "".join(f"{part}/" for part in parts[:depth]) for depth in range(len(parts) + 1)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default 5 drops SYNs under a burst of proxy connections


def _read_body(handler: BaseHTTPRequestHandler) -> bytes | None:
    """The request body (Content-Length or chunked); None when it is too large."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks, total = [], 0
        while True:
            size = int(handler.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                return None
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    if length > MAX_BODY:
        return None
    return handler.rfile.read(length) if length else b""


def traffic_handler(backend: Backend) -> type[BaseHTTPRequestHandler]:
    class TrafficHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # without it every keep-alive request after the first waits ~40 ms
        server_version = f"sandbox-backend/{backend.name}"

        def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise
            pass

        def _serve(self) -> None:
            started = time.monotonic()
            body = _read_body(self)
            delay_ms, fails = backend.draw()
            if delay_ms:
                time.sleep(delay_ms / 1000)
            if body is None:
                code, payload, ctype = 413, b'{"error": "body too large"}\n', "application/json"
                self.close_connection = True
            elif fails:
                code, payload, ctype = 500, b'{"error": "injected failure"}\n', "application/json"
            elif self.command in ("POST", "PUT", "PATCH"):
                code, payload = 200, body
                ctype = self.headers.get("Content-Type", "application/octet-stream")
            else:
                code, ctype = 200, "application/json"
                payload = json.dumps({"backend": backend.name, "version": backend.version, "path": self.path}).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Backend", backend.name)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            self.wfile.flush()
            elapsed_ms = (time.monotonic() - started) * 1000
            entry = {
                "at": time.time(),
                "method": self.command,
                "path": self.path,
                "request_id": self.headers.get("X-Request-Id", ""),
                "code": code,
                "body_length": len(body or b""),
                "body_sha256": hashlib.sha256(body or b"").hexdigest(),
            }
            backend.record(code, elapsed_ms, entry)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    return TrafficHandler


def admin_handler(backend: Backend) -> type[BaseHTTPRequestHandler]:
    class AdminHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        server_version = f"sandbox-backend-admin/{backend.name}"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, payload: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _json(self, code: int, data: Any) -> None:
            self._send(code, (json.dumps(data, sort_keys=True) + "\n").encode())

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/metrics":
                self._send(200, generate_latest(backend.registry), CONTENT_TYPE_LATEST)
            elif url.path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
            elif url.path == "/control":
                self._json(200, asdict(backend.current()))
            elif url.path == "/requests":
                query = parse_qs(url.query)
                prefix = query.get("prefix", ["/"])[0]
                try:
                    limit = max(0, min(1000, int(query.get("limit", ["20"])[0])))
                except ValueError:
                    self._json(400, {"error": "limit must be an integer"})
                    return
                self._json(200, backend.served(prefix, limit))
            else:
                self._json(404, {"error": f"no {url.path} here: /metrics, /healthz, /control, /requests"})

        def do_POST(self) -> None:
            body = _read_body(self)
            if urlsplit(self.path).path != "/control":
                self._json(404, {"error": "POST /control only"})
                return
            try:
                behaviour = Behaviour.validated(json.loads(body or b"null"))
            except ValueError as e:
                self._json(400, {"error": str(e)})
                return
            backend.set_behaviour(behaviour)
            self._json(200, asdict(behaviour))

    return AdminHandler


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mirrorsandbox.backend", description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="short name, e.g. v1 (also the default version)")
    parser.add_argument("--port", type=int, required=True, help="traffic port")
    parser.add_argument("--admin-port", type=int, required=True, help="port of /metrics, /control, /requests")
    parser.add_argument("--host", type=loopback_host, default="127.0.0.1")
    parser.add_argument("--workload", help="destination_workload (default demo-service-NAME)")
    parser.add_argument("--namespace", default="sandbox", help="destination_workload_namespace")
    parser.add_argument("--service", default="demo-service", help="destination_service_name")
    parser.add_argument("--version", help="destination_version (default NAME)")
    parser.add_argument("--error-ratio", type=float, default=0.0, help="probability that a request fails with 500")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fixed wait of every request")
    parser.add_argument("--latency-median-ms", type=float, default=0.0, help="median of the log-normal wait added")
    parser.add_argument("--latency-spread", type=float, default=0.0, help="sigma of its logarithm (0: fixed)")
    parser.add_argument("--seed", type=int, help="seed of the random numbers (draws that repeat)")
    return parser.parse_args(argv)


def behaviour_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The /control object that the command line sets."""
    return {key: getattr(args, key) for key in [*BEHAVIOUR_RANGES, "seed"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backend = Backend(
        name=args.name,
        workload=args.workload or f"{args.service}-{args.name}",
        namespace=args.namespace,
        service=args.service,
        version=args.version or args.name,
    )
    try:
        backend.set_behaviour(Behaviour.validated(behaviour_arguments(args)))
    except ValueError as e:
        print(f"sandbox_backend: {e}", file=sys.stderr)
        return 2
    traffic = _Server((args.host, args.port), traffic_handler(backend))
    admin = _Server((args.host, args.admin_port), admin_handler(backend))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True) for s in (traffic, admin)
    ]
    for thread in threads:
        thread.start()
    print(
        f"sandbox_backend {args.name}: traffic http://{args.host}:{args.port}/, admin http://{args.host}:{args.admin_port}/",
        flush=True,
    )
    while not stop.wait(1):
        pass
    for server in (traffic, admin):
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
