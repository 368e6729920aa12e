"""Prometheus for the tests: the real server on loopback, and a scripted stand-in for unit tests.

PrometheusServer runs /usr/bin/prometheus on 127.0.0.1:<free port> with its own config and
TSDB in a temporary directory, scraping the given targets and evaluating rules every second:

    server = PrometheusServer(tmp_path, targets=[source.target], rules={"mirror": RULES}).start()
    server.stop(); server.start()      # a Prometheus that goes away mid-test, and comes back
    server.stop()

ScriptedPrometheus is a loopback HTTP server that answers /api/v1/query with recorded answers
of the real Prometheus (tests/unit/fixtures/prometheus/*.json), so the client's HTTP, retry and
timeout handling run for real in unit tests.

Re-record the fixtures (about 15 s):
    python -m tests.support.prometheus_server capture tests/unit/fixtures/prometheus
"""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

PROMETHEUS_BINARY = "/usr/bin/prometheus"
FIXTURES_DIR = Path(__file__).resolve().parents[1] / "unit" / "fixtures" / "prometheus"


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll_until(check: Callable[[], object], timeout: float, interval: float = 0.25, what: str = "condition"):
    """Call `check` until it returns something truthy (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:g}s (last: {last!r})")
        time.sleep(interval)


class PrometheusServer:
    """The real Prometheus on loopback, with its own config, rules and TSDB under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        rules: dict[str, str] | None = None,
        interval: str = "1s",
        binary: str = PROMETHEUS_BINARY,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.targets = list(targets)
        self.interval = interval
        self.binary = binary
        # More flags for the binary, e.g. ("--query.max-samples=5",) for a Prometheus with limits.
        self.extra_args = tuple(extra_args)
        self.rules_dir = self.workdir / "rules"
        self.config_file = self.workdir / "prometheus.yml"
        self.data_dir = self.workdir / "tsdb"
        self.log_file = self.workdir / "prometheus.log"
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        for name, text in (rules or {}).items():
            self.write_rules(name, text)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_rules(self, name: str, text: str) -> Path:
        """Write rules/<name>.yml (loaded at start, or on reload())."""
        path = self.rules_dir / f"{name}.yml"
        path.write_text(text)
        return path

    def _write_config(self) -> None:
        config = {
            "global": {
                "scrape_interval": self.interval,
                "scrape_timeout": self.interval,
                "evaluation_interval": self.interval,
            },
            "rule_files": [str(self.rules_dir / "*.yml")],
            "scrape_configs": [{"job_name": "istio-mesh", "static_configs": [{"targets": self.targets}]}],
        }
        # JSON is YAML: no YAML library needed for the config.
        self.config_file.write_text(json.dumps(config, indent=2))

    def start(self, timeout: float = 20.0) -> PrometheusServer:
        """Start (or start again, on the same port and TSDB) and wait for /-/ready."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"Prometheus is already running (pid {self.process.pid})")
        self._write_config()
        if not self.port:
            self.port = free_port()
        address = f"127.0.0.1:{self.port}"
        log = self.log_file.open("ab")
        # The binary itself, no shell: the PID we hold is the server's own.
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address={address}",
                f"--web.external-url=http://{address}/",
                "--web.enable-lifecycle",
                "--log.level=warn",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Prometheus exited with {self.process.returncode} on start; log:\n{self.log_tail()}"
                )
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop(kill=True)
        raise TimeoutError(f"Prometheus not ready on {address} within {timeout:g}s; log:\n{self.log_tail()}")

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop our Prometheus by its PID (SIGTERM, or SIGKILL with kill=True)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def reload(self) -> bool:
        """POST /-/reload: True if the new config and rules were accepted."""
        return requests.post(f"{self.url}/-/reload", timeout=10).status_code == 200

    def query(self, promql: str) -> list[dict]:
        """The raw result list of an instant query (for test set-up and assertions)."""
        response = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the scripted stand-in -------------------------------------------------------------------


@dataclass
class Reply:
    """One HTTP answer: a status, a JSON body (or text), optional delay and headers."""

    status: int = 200
    body: object = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def fixture(name: str) -> Reply:
    """A recorded answer of the real Prometheus: tests/unit/fixtures/prometheus/<name>.json."""
    recorded = json.loads((FIXTURES_DIR / f"{name}.json").read_text())
    return Reply(status=recorded["http_status"], body=recorded["body"])


def vector_reply(value: str, labels: dict[str, str] | None = None) -> Reply:
    """The recorded one-series vector answer with another value ("0.12", "NaN") and labels."""
    reply = fixture("vector")
    body = copy.deepcopy(reply.body)
    sample = body["data"]["result"][0]
    sample["value"][1] = value
    if labels is not None:
        sample["metric"] = labels
    return Reply(status=200, body=body)


@dataclass
class Request:
    path: str
    params: dict[str, str]
    headers: dict[str, str]


class ScriptedPrometheus:
    """A loopback server answering like Prometheus, from a script the test writes.

    Queued replies (`queue(...)`) are used first, one per request to /api/v1/query or
    /api/v1/rules; then `answers[query]`; then `default`. Every request is recorded.
    """

    def __init__(self) -> None:
        self.answers: dict[str, Reply] = {}
        self.default = fixture("empty")
        self.rule_names: list[str] = []
        # rule name -> the labels it sets itself (none unless given here)
        self.rule_labels: dict[str, dict[str, str]] = {}
        self.requests: list[Request] = []
        self._queue: list[Reply] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> ScriptedPrometheus:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def queries(self) -> list[str]:
        return [r.params.get("query", "") for r in self.requests if r.path == "/api/v1/query"]

    def _reply_for(self, path: str, params: dict[str, str]) -> Reply:
        with self._lock:
            if self._queue and path in ("/api/v1/query", "/api/v1/rules"):
                return self._queue.pop(0)
        if path == "/api/v1/rules":
            return _rules_reply(self.rule_names, self.rule_labels)
        if path == "/-/ready":
            return Reply(200, "Prometheus Server is Ready.\n")
        if path == "/api/v1/query":
            return self.answers.get(params.get("query", ""), self.default)
        return Reply(404, "404 page not found\n")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                params = dict(urllib.parse.parse_qsl(parts.query))
                scripted.requests.append(Request(parts.path, params, dict(self.headers)))
                reply = scripted._reply_for(parts.path, params)
                if reply.delay:
                    time.sleep(reply.delay)
                is_text = isinstance(reply.body, str)
                payload = (reply.body if is_text else json.dumps(reply.body)).encode()
                try:
                    self.send_response(reply.status)
                    content_type = "text/plain; charset=utf-8" if is_text else "application/json"
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer

            def log_message(self, format: str, *args) -> None:
                pass

        return Handler


def _rules_reply(names: list[str], labels: dict[str, dict[str, str]]) -> Reply:
    recorded = fixture("rules").body
    template = recorded["data"]["groups"][0]["rules"][0]
    rules = [{**copy.deepcopy(template), "name": name, "labels": labels.get(name, {})} for name in names]
    return Reply(200, {"status": "success", "data": {"groups": [{**recorded["data"]["groups"][0], "rules": rules}]}})


# -- recording the fixtures from the real Prometheus -----------------------------------------

_CAPTURE_RULES = """\
groups:
  - name: mirror-capture
    rules:
      - alert: MirrorErrorRatioCritical
        expr: sum(rate(istio_requests_total{destination_workload="user-service-v2",response_code=~"5.."}[5s])) > 0
        for: 1s
        labels: {severity: critical, destination_workload: user-service-v2}
        annotations: {summary: the mirror answers 5xx}
"""

# fixture name -> query whose answer it records
_CAPTURE_QUERIES = {
    "vector": 'sum(rate(istio_requests_total{destination_workload="user-service-v2"}[5s]))',
    "multi_series": "sum by (destination_workload) (rate(istio_requests_total[5s]))",
    "empty": 'sum(rate(istio_requests_total{destination_workload="no-such-workload"}[5s]))',
    "nan": "vector(0) / 0",
    "inf": "vector(1) / 0",
    "scalar": "scalar(vector(42))",
    "matrix": 'istio_requests_total{destination_workload="user-service-v2",response_code="200"}[5s]',
    "bad_data_400": 'sum(rate(istio_requests_total{destination_workload="user-service-v2"}[5s])',
    "execution_422": "istio_requests_total + on (destination_workload) istio_requests_total",
    "alerts_firing": 'max_over_time(ALERTS{alertstate="firing",alertname="MirrorErrorRatioCritical"}[30s])',
}


def capture_fixtures(out_dir: Path, workdir: Path) -> None:
    """Record each fixture's answer from a real Prometheus scraping a real metrics source."""
    from mirrorsandbox.istio_metrics_source import IstioMetricsSource

    out_dir.mkdir(parents=True, exist_ok=True)
    source = IstioMetricsSource().start()
    server = PrometheusServer(workdir, targets=[source.target], rules={"capture": _CAPTURE_RULES})
    try:
        server.start()

        def fed_and_firing() -> bool:
            source.add("user-service-v1", n=20)
            source.add("user-service-v2", n=19)
            source.add("user-service-v2", n=1, code=503, latency_ms=800)
            return bool(server.query(_CAPTURE_QUERIES["alerts_firing"]))

        poll_until(fed_and_firing, timeout=30, interval=0.5, what="capture alert firing")
        for name, promql in _CAPTURE_QUERIES.items():
            response = requests.get(f"{server.url}/api/v1/query", params={"query": promql}, timeout=5)
            record = {"query": promql, "http_status": response.status_code, "body": response.json()}
            (out_dir / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        response = requests.get(f"{server.url}/api/v1/rules", params={"type": "alert"}, timeout=5)
        record = {"query": "GET /api/v1/rules?type=alert", "http_status": response.status_code, "body": response.json()}
        (out_dir / "rules.json").write_text(json.dumps(record, indent=2) + "\n")
    finally:
        server.stop()
        source.stop()


if __name__ == "__main__":
    import tempfile

    if len(sys.argv) != 3 or sys.argv[1] != "capture":
        sys.exit("usage: python -m tests.support.prometheus_server capture <fixtures dir>")
    with tempfile.TemporaryDirectory() as tmp:
        capture_fixtures(Path(sys.argv[2]), Path(tmp))
