"""Benchmark 3, scheduled-run scale: rollout.yml in scheduled mode for 1, 10 and 100 services.

Everything runs against the Kubernetes API test double (tests/fakes/kube_api.py, run by its
command line in a process of its own: a benchmark imports no test module) and a real Prometheus
(mirrorsandbox.harness.start_prometheus) scraping the Istio metrics of N healthy services
(mirrorsandbox.istio_metrics_source). The inventory is inventories/dev with N services in
mirror_services and 1h holds, written to a temporary directory.

1. whole start (N = 1, 10 and 100; --whole-sizes): `ansible-playbook rollout.yml -i <inventory>`,
   render + apply + ramp with dev's ramp report, split into its parts with the
   ansible.posix.json callback (6 manifests per service, 4 shared). whole again: the same
   command once more, whose render must change no file (render changed: the files the render
   tasks reported changed).
2. For N = 1, 10, 100: the VirtualServices as mirror_istio renders them (the one of 1, renamed
   per service), then the ramp alone, as a scheduled job of a large environment runs it:

       ansible-playbook playbooks/ramp.yml -i <inventory>

   The ramp is one mirror_ramp task for all services (adapter.execute_all): one grouped
   Prometheus query per metric for all of them (batch.py) and one LIST of VirtualServices per
   namespace per pass, so its queries and reads are counted per run, not per service.
   start          the first run after the apply: every ramp starts (pending -> step 1 at 1%)
   steady         any later run while a step holds: read, ask the gates, nothing to write
   first report   the same with dev's ramp report, the first run that writes one (--report-sizes,
                  default N = 10): every service's report is drawn, none exists yet
   steady+report  the next run with the report: records appended to the existing reports
   start and steady run with mirror_reports_dir "" (no report). Between the two the engine
   records its first look at step 1's gates (a bookkeeping write, once per step) in this
   process.
3. The engine alone, in this process: what the mirror_ramp action does with the task's
   arguments (validate_argument_spec's checks, arguments.requests_from_arguments on a `services`
   list, adapter.execute_all), timed as a whole and split by where it goes: arguments, clients
   (the Prometheus and Kubernetes clients, the drivers, the batch), the Kubernetes API,
   Prometheus, the rest (gates, state machine, results). The split wraps PrometheusClient's and
   kubernetes' CustomObjectsApi's methods in this process and counts their calls.

Counted per run: the queries Prometheus answered and the seconds it spent on them (its own
prometheus_http_requests_total and ..._duration_seconds_sum), and the requests the API double
served (LIST, GET, writes: its request log), split into the apply's and the ramp's by when they
arrived. What the numbers mean is written in docs/benchmarks.md, section 3, beside the tables
this writes.

Run from the repository root with the venv (`make bench` runs every benchmark):

    python scripts/bench/scale.py                   # about 3 minutes
    python scripts/bench/scale.py --quick           # smoke run: 1 and 10 services, build/bench/scale.quick.json
    python scripts/bench/scale.py --write-doc       # and rewrite its section of docs/benchmarks.md
    python scripts/bench/scale.py --from-json --write-doc   # the doc from the last build/bench/scale.json
    python scripts/bench/scale.py --whole-sizes 1,100       # the whole run for 100 too

(`python -m scripts.bench.scale` works too.) Prints the tables, writes build/bench/scale.json.
It listens on 127.0.0.1 only (free ports) and stops what it started: Prometheus, the metrics
source, the API double.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # python scripts/bench/scale.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import contextlib
import functools
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mirrorramp import adapter
from mirrorramp.adapter import execute_all
from mirrorramp.arguments import ARGUMENT_RULES, ARGUMENT_SPEC, requests_from_arguments
from mirrorramp.batch import BatchedPrometheus
from mirrorramp.prometheus import PrometheusClient
from mirrorsandbox.harness import Prometheus, free_ports, start_prometheus, stop_pid
from mirrorsandbox.istio_metrics_source import IstioMetricsSource
from scripts.bench import results
from scripts.bench.results import REPO_ROOT, VENV_BIN, ansible_env, log

SCRIPT = "scripts/bench/scale.py"
SECTION = "scale"
DEV_INVENTORY = REPO_ROOT / "inventories" / "dev"
NAMESPACE = "shop-dev"  # dev's mirror_namespace
ENVIRONMENT = "dev"
RAMP_TASK = "Mirror of each service: ramp"
APPLY_ROLE = "mirror_apply"
DEFAULT_SIZES = (1, 10, 100)
DEFAULT_WHOLE_SIZES = (1, 10, 100)
DEFAULT_REPORT_SIZES = (10,)
QUICK_SIZES = (1, 10)
QUERY_HANDLER = "/api/v1/query"
RULES_HANDLER = "/api/v1/rules"
# Requests per workload per feed tick: ~20/s, so dev's traffic gate (min_requests 50 in a 5m
# window) passes a few seconds after the start and every gate query is asked.
FEED_REQUESTS = 10
FEED_INTERVAL = 0.5
# dev's ServiceMonitor scrapes every 15s; 2s keeps the wait for traffic short, and the exposition
# of a few thousand series at 100 services less often than the tests' 1s.
SCRAPE_INTERVAL_S = 2.0
TRAFFIC_TIMEOUT_S = 300.0  # a loaded machine (load 12 on 2 cores) took more than 90 s at 100 services
MIN_REQUESTS = 50
PLAYBOOK_TIMEOUT = 1800
KUBE_API_START_TIMEOUT_S = 180.0  # it loads its CRD models first: 10-15 s quiet, a minute loaded
# dev's steps with 1h holds instead of 10m: on a slow machine no hold may end mid-benchmark, or
# a "steady" run would advance a step (more queries, a write).
STEPS = [{"percent": percent, "hold": "1h"} for percent in (1, 5, 10, 20)]


def service_name(index: int) -> str:
    return f"svc-{index:03d}"


def services(n: int) -> list[dict[str, Any]]:
    """N services shaped like configuration.md's example: a stable and a candidate subset."""
    return [
        {
            "name": service_name(i),
            "port": 8080,
            "subsets": [
                {"name": "stable", "labels": {"version": "v1"}, "workload": f"{service_name(i)}-v1"},
                {"name": "candidate", "labels": {"version": "v2"}, "workload": f"{service_name(i)}-v2"},
            ],
            "primary_subset": "stable",
            "mirrors": [{"subset": "candidate"}],
            "mirror_percent": 0,
            "mirror_all_methods": False,
            "timeout": "10s",
        }
        for i in range(1, n + 1)
    ]


def write_inventory(directory: Path, n: int) -> Path:
    """inventories/dev with its mirror_services replaced by N services; everything else as dev."""
    inventory = directory / "inventories" / f"scale-{n}"
    shutil.copytree(DEV_INVENTORY, inventory)
    services_file = inventory / "group_vars" / "all" / "services.yml"
    services_file.write_text("---\n" + yaml.safe_dump({"mirror_services": services(n)}, sort_keys=False))
    return inventory


# -- the servers -----------------------------------------------------------------------------


WRITES = ("PATCH", "PUT", "POST", "DELETE")


@dataclass(frozen=True)
class Served:
    """One request the API double served, from its request log."""

    at: float  # time.time() when it arrived: the json callback's spans are on the same clock
    kind: str  # LIST (a collection), GET (one object, or discovery) or the write's method


class KubeApiDouble:
    """The Kubernetes API test double in a process of its own, started by its command line
    (`python -m tests.fakes.kube_api`), its PID known and stopped by it. Its request log (one
    JSON line per request, written before the answer goes out) says what it served and when.

    restart() empties it: a new process on the same port and work directory, so the discovery
    cache kubernetes.core keeps by host in the double's TMPDIR stays warm, as against one cluster.
    """

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.request_log = work_dir / "requests.jsonl"
        self.url = f"http://127.0.0.1:{free_ports(1)[0]}"
        self.token = ""
        self._process: subprocess.Popen[str] | None = None

    @property
    def tmpdir(self) -> Path:
        """The TMPDIR of the double's clients (the double creates it)."""
        return self.work_dir / "tmp"

    def start(self) -> KubeApiDouble:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        stderr_log = self.work_dir / "stderr.log"
        port = self.url.rsplit(":", 1)[1]
        argv = ["--work-dir", str(self.work_dir), "--port", port, "--request-log", str(self.request_log)]
        with stderr_log.open("a") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.fakes.kube_api", *argv],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        assert self._process.stdout is not None
        # The double prints its URL once it serves, its kubeconfig (with the token) written.
        readable, _, _ = select.select([self._process.stdout], [], [], KUBE_API_START_TIMEOUT_S)
        served = self._process.stdout.readline().strip() if readable else ""
        if served != self.url:
            self.stop()
            raise RuntimeError(
                f"the API double did not serve {self.url} within {KUBE_API_START_TIMEOUT_S:g} s:\n"
                f"{stderr_log.read_text()[-2000:]}"
            )
        kubeconfig = yaml.safe_load((self.work_dir / "kubeconfig").read_text())
        self.token = kubeconfig["users"][0]["user"]["token"]
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_pid(self._process)
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_offset(self) -> int:
        """Where the next request's line will start in the request log."""
        return self.request_log.stat().st_size if self.request_log.exists() else 0

    def served_since(self, offset: int) -> list[Served]:
        with self.request_log.open("rb") as lines:
            lines.seek(offset)
            return [Served(entry["at"], entry["kind"]) for entry in map(json.loads, lines.read().splitlines())]

    def create(self, path: str, obj: dict[str, Any], field_manager: str) -> None:
        """POST `obj` to the collection at `path`, as `field_manager`."""
        answer = requests.post(
            f"{self.url}{path}",
            params={"fieldManager": field_manager},
            json=obj,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        if answer.status_code != 201:
            raise RuntimeError(f"POST {path}: {answer.status_code} {answer.text[:500]}")


class ServiceMetricsSource(IstioMetricsSource):
    """Istio's metrics, each workload labelled with its own service (svc-001-v2 -> svc-001)."""

    def labels(self, workload: str, code: int, version: str | None = None) -> dict[str, str]:
        labels = super().labels(workload, code, version)
        service = workload.rsplit("-", 1)[0]
        labels.update(
            destination_app=service,
            destination_service=f"{service}.{self.namespace}.svc.cluster.local",
            destination_service_name=service,
            destination_canonical_service=service,
        )
        return labels


def _feed(n: int, port: multiprocessing.connection.Connection, stop: Any, limit: float) -> None:
    """The metrics source of N services and its traffic, in a process of its own."""
    source = ServiceMetricsSource(namespace=NAMESPACE).start()
    port.send(source.port)
    workloads = [f"{service_name(i)}-{version}" for i in range(1, n + 1) for version in ("v1", "v2")]
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            for workload in workloads:
                source.add(workload, n=FEED_REQUESTS, code=200, latency_ms=20)
            if stop.wait(FEED_INTERVAL):
                return
    finally:
        source.stop()


@contextlib.contextmanager
def metrics_source(n: int, limit: float = 1800.0) -> Iterator[str]:
    """host:port of N services' Istio metrics, every workload serving FEED_REQUESTS healthy
    requests every FEED_INTERVAL for at most `limit` s. A separate process: its exposition of a
    few thousand series and the feeding never share this process's (the engine's) GIL."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    stop = context.Event()
    process = context.Process(target=_feed, args=(n, sender, stop, limit), name=f"scale-metrics-{n}", daemon=True)
    process.start()
    try:
        if not receiver.poll(60):
            raise RuntimeError(f"the metrics source of {n} services did not start within 60 s")
        yield f"127.0.0.1:{receiver.recv()}"
    finally:
        stop.set()
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)


@dataclass
class PrometheusCounters:
    """What Prometheus says it answered: requests and seconds per HTTP handler."""

    requests: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def read(cls, url: str) -> PrometheusCounters:
        text = requests.get(f"{url}/metrics", timeout=10).text
        out = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                handler = sample.labels.get("handler", "")
                if sample.name == "prometheus_http_requests_total":
                    out.requests[handler] = out.requests.get(handler, 0.0) + sample.value
                elif sample.name == "prometheus_http_request_duration_seconds_sum":
                    out.seconds[handler] = out.seconds.get(handler, 0.0) + sample.value
        return out

    def since(self, before: PrometheusCounters, handler: str) -> tuple[int, float]:
        """(requests, seconds) of `handler` between `before` and this reading."""
        count = self.requests.get(handler, 0.0) - before.requests.get(handler, 0.0)
        return round(count), self.seconds.get(handler, 0.0) - before.seconds.get(handler, 0.0)


@dataclass
class Stack:
    n: int
    kube: KubeApiDouble
    prometheus: Prometheus
    workdir: Path
    inventory: Path


def empty_cluster(kube: KubeApiDouble) -> None:
    """The API double restarted (nothing stored but the default namespaces) and dev's namespace
    created, by the manager the double gives its own namespaces."""
    kube.restart()
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    kube.create("/api/v1/namespaces", namespace, field_manager="kube-apiserver")


@contextlib.contextmanager
def stack(n: int, kube: KubeApiDouble, workdir: Path) -> Iterator[Stack]:
    """The API double emptied, a fresh Prometheus scraping N services' healthy traffic, an inventory."""
    empty_cluster(kube)
    inventory = write_inventory(workdir, n)
    rules = alert_rules(n)
    with metrics_source(n) as target:
        rules_file = workdir / "mirror-rules.yml"
        rules_file.write_text(rules)
        prometheus = start_prometheus(
            workdir / "prometheus", {"services": target}, None, rules_file, interval_s=SCRAPE_INTERVAL_S
        )
        try:
            wait_for_traffic(prometheus, n)
            yield Stack(n, kube, prometheus, workdir, inventory)
        finally:
            prometheus.stop()


def alert_rules(n: int) -> str:
    """Prometheus rules for N services: as many as the role renders (5 per mirror workload), with
    the labels it gives them (roles/mirror_monitoring/templates/_rule_groups.yml.j2), so that dev's
    alert gate (inconclusive while no loaded rule could fire it) has a rule per service, and the
    rule list has its size in a cluster. The expressions never fire: the gates read ALERTS.
    (playbooks/render.yml would write the same labels, in about 60 s for 100 services.)"""
    alerts = [("MirrorErrorRatioHigh", s) for s in ("warning", "critical")]
    alerts += [("MirrorLatencyP99High", s) for s in ("warning", "critical")] + [("MirrorNoTraffic", "warning")]
    groups = [
        {
            "name": f"mirror-{service['name']}",
            "rules": [
                {
                    "alert": alert,
                    "expr": "vector(1) < 0",
                    "labels": {
                        "severity": severity,
                        "service": service["name"],
                        "namespace": NAMESPACE,
                        "environment": ENVIRONMENT,
                        "workload": service["subsets"][1]["workload"],
                    },
                }
                for alert, severity in alerts
            ],
        }
        for service in services(n)
    ]
    return yaml.safe_dump({"groups": groups}, sort_keys=False)


def query(prometheus: Prometheus, promql: str) -> list[dict[str, Any]]:
    """The result list of an instant query."""
    response = requests.get(f"{prometheus.url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]["result"]


def wait_for_traffic(prometheus: Prometheus, n: int) -> None:
    """Until every mirror workload passes dev's traffic gate with room to spare."""
    promql = (
        f'count(sum by (destination_workload) (increase(istio_requests_total{{reporter="destination",'
        f'destination_workload_namespace="{NAMESPACE}",destination_workload=~"svc-.*-v2"}}[5m]))'
        f" >= {MIN_REQUESTS * 2})"
    )

    deadline = time.monotonic() + TRAFFIC_TIMEOUT_S
    while time.monotonic() < deadline:
        result = query(prometheus, promql)
        if result and round(float(result[0]["value"][1])) == n:
            return
        time.sleep(0.5)
    raise RuntimeError(f"no traffic of {n} mirror workloads in Prometheus within {TRAFFIC_TIMEOUT_S:g} s")


def seed_virtual_services(kube: KubeApiDouble, rendered: str, n: int) -> None:
    """N VirtualServices as mirror_istio renders them, created through the API: `rendered` is
    svc-001's, renamed per service."""
    for i in range(1, n + 1):
        virtual_service = yaml.safe_load(rendered.replace(service_name(1), service_name(i)))
        path = f"/apis/{virtual_service['apiVersion']}/namespaces/{NAMESPACE}/virtualservices"
        kube.create(path, virtual_service, field_manager="seed")


# -- one ansible-playbook run ----------------------------------------------------------------


def _timestamp(text: str) -> float:
    """The json callback's UTC times ("2025-01-01T10:00:00.123456Z") as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Span:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def holds(self, at: float) -> bool:
        return self.start <= at <= self.end


def spans(callback_output: dict[str, Any]) -> dict[str, Span]:
    """render (the tasks of the first play), apply (mirror_apply's tasks), ramp (the mirror_ramp task)."""
    found: dict[str, list[Span]] = {"render": [], "apply": [], "ramp": []}
    for index, play in enumerate(callback_output["plays"]):
        for task in play["tasks"]:
            name, duration = task["task"]["name"], task["task"]["duration"]
            span = Span(_timestamp(duration["start"]), _timestamp(duration["end"]))
            if name.endswith(RAMP_TASK):  # first: playbooks/ramp.yml has only the ramp's play
                found["ramp"].append(span)
            elif name.startswith(f"{APPLY_ROLE} : "):
                found["apply"].append(span)
            elif index == 0:
                found["render"].append(span)
    return {
        part: Span(min(s.start for s in found_spans), max(s.end for s in found_spans))
        for part, found_spans in found.items()
        if found_spans
    }


def slowest_tasks(callback_output: dict[str, Any], count: int = 8) -> dict[str, float]:
    durations: dict[str, float] = {}
    for play in callback_output["plays"]:
        for task in play["tasks"]:
            duration = task["task"]["duration"]
            durations[task["task"]["name"]] = _timestamp(duration["end"]) - _timestamp(duration["start"])
    return {name: round(seconds, 2) for name, seconds in sorted(durations.items(), key=lambda kv: -kv[1])[:count]}


# The line the mirror_ramp task prints per service (results.row_line): "changed: [dev] svc-001: ...".
SERVICE_LINE = re.compile(r"^(changed|ok|failed): \[[^\]]*\] ")


def callback_output(stdout: str) -> tuple[dict[str, Any], list[str]]:
    """The ansible.posix.json document on stdout, and the other lines there: the mirror_ramp
    task prints one line per service (Display.display) on the same stdout, before the document."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^\{", stdout, re.MULTILINE):
        try:
            document, end = decoder.raw_decode(stdout, match.start())
        except ValueError:
            continue
        if isinstance(document, dict) and "plays" in document:
            lines = stdout[: match.start()].splitlines() + stdout[end:].splitlines()
            return document, [line for line in lines if line.strip()]
    raise RuntimeError(f"no ansible.posix.json document on stdout:\n{stdout[-2000:]}")


def render_changes(callback_output: dict[str, Any]) -> int:
    """Files the mirror_render_files tasks reported changed: their `files` rows carry `changed`
    (find's rows, also named `files`, do not)."""
    return sum(
        1
        for play in callback_output["plays"]
        for task in play["tasks"]
        for result in task["hosts"].values()
        if isinstance(result.get("files"), list)
        for row in result["files"]
        if row.get("changed")
    )


def ramp_results(callback_output: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the mirror_ramp task, one per service: the task's own `results` (one task for
    every service, not a loop; a loop's items have the same place in the json callback)."""
    for play in callback_output["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].endswith(RAMP_TASK):
                rows = task["hosts"]["localhost"].get("results")
                if not isinstance(rows, list):
                    raise RuntimeError(f"the mirror_ramp task's result has no results list: {task['hosts']}")
                return rows
    raise RuntimeError("no mirror_ramp task in the run")


@dataclass
class RunResult:
    n: int
    run: str  # "whole start", "whole again": render + apply + ramp; "start", "steady": the ramp part only
    wall_s: float
    render_s: float
    render_changed: int  # files the render tasks reported changed (0 when the files are there already)
    apply_s: float
    ramp_s: float
    ramp_ms_per_service: float
    other_s: float  # ansible-playbook start-up, inventory, plays, the tasks between
    queries: int
    queries_per_service: float
    rules_requests: int
    prometheus_query_s: float  # what Prometheus spent answering them (server side)
    api_requests: int
    api_requests_apply: int
    api_requests_ramp: int
    api_requests_ramp_per_service: float
    api_lists_ramp: int
    api_gets_ramp: int
    api_writes_ramp: int
    manifests_applied: int
    manifests_per_service: int  # of those, the ones named after one service (the rest are shared)
    changed_ramps: int
    service_rows: int  # rows in the task's results (one per service)
    service_lines: int  # lines the task printed, "changed: [dev] svc-001: ..." (one per service)
    load_1m: float  # the machine's load average when the run started
    slowest_tasks: dict[str, float] = field(default_factory=dict)  # whole runs: task -> seconds


def run_rollout(s: Stack, label: str, *, ramp_only: bool, reports: bool = True) -> RunResult:
    """`ansible-playbook rollout.yml` (playbooks/ramp.yml with ramp_only) in scheduled mode.

    reports=False: mirror_reports_dir "" (the task's report_dir is empty: no ramp report).
    """
    kube = s.kube
    extra_vars = {
        "mirror_build_dir": str(s.workdir / "build"),
        "mirror_reports_dir": str(s.workdir / "reports") if reports else "",
        "mirror_kube": {
            "kubeconfig": None,
            "context": None,
            "host": kube.url,
            "api_key": kube.token,
            "validate_certs": False,
            "ca_cert": None,
        },
        "mirror_prometheus": {"url": s.prometheus.url, "timeout": "10s", "retries": 3},
        "mirror_ramp_mode": "scheduled",
        "mirror_ramp_steps": STEPS,
    }
    playbook = "playbooks/ramp.yml" if ramp_only else "rollout.yml"
    command = [str(VENV_BIN / "ansible-playbook"), playbook, "-i", str(s.inventory), "-e", json.dumps(extra_vars)]
    env = ansible_env(
        TMPDIR=str(kube.tmpdir),  # kubernetes.core's discovery cache: this double's own
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_JSON_INDENT="0",
    )
    offset = kube.log_offset()
    load = os.getloadavg()[0]
    before = PrometheusCounters.read(s.prometheus.url)
    started = time.monotonic()
    process = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT, check=False
    )
    wall = time.monotonic() - started
    after = PrometheusCounters.read(s.prometheus.url)
    if process.returncode != 0:
        # command[:4]: the playbook and the inventory, never the extra vars (they hold the token).
        raise RuntimeError(
            f"{' '.join(command[:4])} ({s.n} services, {label}) failed with {process.returncode}:\n"
            f"{process.stdout[-4000:]}\n{process.stderr[-2000:]}"
        )
    output, printed = callback_output(process.stdout)
    parts = spans(output)
    ramp, apply = parts["ramp"], parts.get("apply")
    served = kube.served_since(offset)
    in_ramp = [r.kind for r in served if ramp.holds(r.at)]
    in_apply = [r.kind for r in served if apply and apply.holds(r.at)]
    queries, query_seconds = after.since(before, QUERY_HANDLER)
    rules, _ = after.since(before, RULES_HANDLER)
    rendered = sorted((s.workdir / "build" / "k8s").glob("*.yml")) if apply else []
    rows = ramp_results(output)
    return RunResult(
        n=s.n,
        run=label,
        wall_s=round(wall, 2),
        render_s=round(parts["render"].seconds, 2) if "render" in parts else 0.0,
        render_changed=render_changes(output),
        apply_s=round(apply.seconds, 2) if apply else 0.0,
        ramp_s=round(ramp.seconds, 2),
        ramp_ms_per_service=round(ramp.seconds * 1000 / s.n, 1),
        other_s=round(wall - sum(p.seconds for p in parts.values()), 2),
        queries=queries,
        queries_per_service=round(queries / s.n, 2),
        rules_requests=rules,
        prometheus_query_s=round(query_seconds, 3),
        api_requests=len(served),
        api_requests_apply=len(in_apply),
        api_requests_ramp=len(in_ramp),
        api_requests_ramp_per_service=round(len(in_ramp) / s.n, 2),
        api_lists_ramp=in_ramp.count("LIST"),
        api_gets_ramp=in_ramp.count("GET"),
        api_writes_ramp=sum(1 for kind in in_ramp if kind in WRITES),
        manifests_applied=len(rendered),
        manifests_per_service=sum(1 for path in rendered if f"-{service_name(1)}" in path.name),
        changed_ramps=sum(1 for row in rows if row.get("changed")),
        service_rows=len(rows),
        service_lines=sum(1 for line in printed if SERVICE_LINE.match(line)),
        load_1m=round(load, 2),
        slowest_tasks=slowest_tasks(output) if not ramp_only else {},
    )


# -- the engine alone ------------------------------------------------------------------------


class Meter:
    """Calls of the functions it wraps, and the time spans they took, by bucket. A span is
    exclusive: a wrapped call inside another wrapped call of the same thread is its own bucket's
    (the grouped query BatchedPrometheus sends is Prometheus's time, not the batch's). The gates
    send their queries from several threads at once (prometheus.concurrently), so a bucket's time
    is the wall time some call of it was in progress (`busy`), not the sum of its calls' times:
    summed, the concurrent queries counted more than the run's own time."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.calls: Counter[str] = Counter()
        self._local = threading.local()
        self._lock = threading.Lock()

    def _open(self) -> list[tuple[float, list[tuple[float, float]]]]:
        if not hasattr(self._local, "open"):
            self._local.open = []  # per wrapped call in progress: (started, spans of its inner calls)
        return self._local.open

    def wrap(self, fn: Callable[..., Any], bucket: str, counter: str | None) -> Callable[..., Any]:
        @functools.wraps(fn)
        def metered(*args: Any, **kwargs: Any) -> Any:
            stack = self._open()
            started, inner = time.perf_counter(), []
            stack.append((started, inner))
            try:
                return fn(*args, **kwargs)
            finally:
                stack.pop()
                ended = time.perf_counter()
                with self._lock:
                    self.spans[bucket] += without(started, ended, inner)
                    if counter:
                        self.calls[counter] += 1
                if stack:
                    stack[-1][1].append((started, ended))

        return metered

    def busy(self, *buckets: str) -> float:
        """Seconds during which a call of any of `buckets` was in progress, in any thread."""
        return covered([span for bucket in buckets for span in self.spans.get(bucket, [])])

    @contextlib.contextmanager
    def patched(self, owner: Any, name: str, bucket: str, counter: str | None = None) -> Iterator[None]:
        """`owner.name` (a class's method or a module's function) metered until the block ends."""
        own = name in vars(owner)
        original = vars(owner)[name] if own else getattr(owner, name)
        setattr(owner, name, self.wrap(getattr(owner, name), bucket, counter))
        try:
            yield
        finally:
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)


def without(start: float, end: float, inner: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """[start, end] less the spans `inner` (one thread's nested calls: in order, not overlapping)."""
    spans, at = [], start
    for inner_start, inner_end in inner:
        if inner_start > at:
            spans.append((at, inner_start))
        at = max(at, inner_end)
    if end > at:
        spans.append((at, end))
    return spans


def covered(spans: list[tuple[float, float]]) -> float:
    """The length of the union of `spans`: what overlaps counts once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def metered_calls() -> list[tuple[Any, str, str, str | None]]:
    """(owner, name, bucket, counter) of what execute_all calls on its way out of the process.

    adapter's builders are looked up as module globals when execute_all calls them, the clients'
    methods on their classes: patched there, every call of the run goes through the meter.
    """
    from kubernetes.client import CustomObjectsApi

    return [
        (PrometheusClient, "query", "prometheus", "queries"),
        (PrometheusClient, "alert_rules", "prometheus", "rules"),
        (PrometheusClient, "ready", "prometheus", "ready"),
        (CustomObjectsApi, "list_namespaced_custom_object", "kubernetes", "LIST"),
        (CustomObjectsApi, "get_namespaced_custom_object", "kubernetes", "GET"),
        (CustomObjectsApi, "patch_namespaced_custom_object", "kubernetes", "PATCH"),
        (CustomObjectsApi, "replace_namespaced_custom_object", "kubernetes", "PUT"),
        (adapter, "build_prometheus", "clients", None),
        (adapter, "build_api_client", "clients", None),
        (adapter, "build_driver", "clients", None),
        (BatchedPrometheus, "__init__", "clients", None),
        # What the gates ask, per service; answered from the grouped queries (counted above).
        (BatchedPrometheus, "query", "rest", "gate queries"),
    ]


def dev_ramp_arguments(s: Stack) -> dict[str, Any]:
    """The mirror_ramp arguments of roles/mirror_ramp with dev's ramp.yml: every service of the
    stack in `services`, as mirror_ramp_targets gives them."""
    # dev's gates take their values from mirror_thresholds, its driver from mirror_mesh_api
    dev = results.inventory_vars(DEV_INVENTORY)
    ramp = {name: results.resolve(value, dev) for name, value in dev.items() if name.startswith("mirror_ramp_")}

    return {
        "operation": "ramp",
        "services": [
            {
                "name": service["name"],
                "namespace": NAMESPACE,
                "workloads": {"primary": f"{service['name']}-v1", "mirror": [f"{service['name']}-v2"]},
            }
            for service in services(s.n)
        ],
        "environment": ENVIRONMENT,
        "driver": ramp["mirror_ramp_driver"],
        "host": s.kube.url,
        "api_key": s.kube.token,
        "validate_certs": False,
        "steps": STEPS,
        "gates": ramp["mirror_ramp_gates"],
        "min_requests": ramp["mirror_ramp_min_requests"],
        "window": ramp["mirror_ramp_window"],
        "prometheus": {"url": s.prometheus.url, "timeout": "10s", "retries": 3},
        "mode": "scheduled",
        "inconclusive_budget": ramp["mirror_ramp_inconclusive_budget"],
        "inconclusive_action": ramp["mirror_ramp_inconclusive_action"],
    }


@dataclass
class EngineResult:
    n: int
    run: str
    total_s: float
    ms_per_service: float
    # ms per run, where the run went: the wall time some metered call of each kind was in
    # progress (Meter.busy; Kubernetes and Prometheus calls may overlap, from different threads):
    arguments_ms: float  # the argument spec's checks and requests_from_arguments
    clients_ms: float  # the Prometheus and Kubernetes clients, the drivers, the batch
    kube_ms: float  # CustomObjectsApi calls (HTTP to the test double, in its own process)
    prometheus_ms: float  # PrometheusClient calls (HTTP and parsing)
    rest_ms: float  # no metered call in progress: gates, splitting the answers, the state machine
    queries: int  # sent by the client (PrometheusClient.query)
    queries_server: int  # answered, by Prometheus's own counter
    gate_queries: int  # asked by the services' gates (BatchedPrometheus.query)
    rules_requests: int
    api_lists: int
    api_gets: int
    api_writes: int
    api_requests_server: int  # served, by the API double's record
    changed: int
    failed: int


def run_engine(s: Stack, label: str) -> EngineResult:
    """One run of the mirror_ramp action's work for every service, in this process: the
    arguments checked as validate_argument_spec does, requests_from_arguments, execute_all
    (no ramp report: its cost is the ramp task's steady+report run minus its steady run)."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    validator = ArgumentSpecValidator(ARGUMENT_SPEC, **ARGUMENT_RULES)
    arguments = dev_ramp_arguments(s)
    meter = Meter()
    offset = s.kube.log_offset()
    before = PrometheusCounters.read(s.prometheus.url)
    with contextlib.ExitStack() as patches:
        for owner, name, bucket, counter in metered_calls():
            patches.enter_context(meter.patched(owner, name, bucket, counter))
        started = time.perf_counter()
        validated = validator.validate(arguments)
        if validated.error_messages:
            raise RuntimeError(f"mirror_ramp arguments: {validated.error_messages}")
        ramp_requests = requests_from_arguments(validated.validated_parameters, check_mode=False, diff=False)
        parsed = time.perf_counter()
        result = execute_all(ramp_requests)
        total = time.perf_counter() - started
    after = PrometheusCounters.read(s.prometheus.url)
    queries_server, _ = after.since(before, QUERY_HANDLER)
    rows = result["results"]
    for row in rows:
        if row.get("failed"):
            log(f"warning: engine, {s.n} services, {label}: {row['msg']}")
    meter.spans["arguments"] = [(started, parsed)]
    named = ("arguments", "clients", "kubernetes", "prometheus")

    def ms(value: float) -> float:
        return round(value * 1000, 1)

    return EngineResult(
        n=s.n,
        run=label,
        total_s=round(total, 3),
        ms_per_service=round(total * 1000 / s.n, 1),
        arguments_ms=ms(meter.busy("arguments")),
        clients_ms=ms(meter.busy("clients")),
        kube_ms=ms(meter.busy("kubernetes")),
        prometheus_ms=ms(meter.busy("prometheus")),
        rest_ms=ms(total - meter.busy(*named)),
        queries=meter.calls["queries"],
        queries_server=queries_server,
        gate_queries=meter.calls["gate queries"],
        rules_requests=meter.calls["rules"],
        api_lists=meter.calls["LIST"],
        api_gets=meter.calls["GET"],
        api_writes=meter.calls["PATCH"] + meter.calls["PUT"],
        api_requests_server=len(s.kube.served_since(offset)),
        changed=sum(1 for row in rows if row.get("changed")),
        failed=sum(1 for row in rows if row.get("failed")),
    )


def import_seconds() -> dict[str, float]:
    """What a fresh Python pays once to import what the action plugin uses (once per task run)."""
    script = (
        "import json, time\n"
        "out = {}\n"
        "for name in ('mirrorramp.adapter', 'kubernetes.client', 'matplotlib.figure', "
        "'matplotlib.backends.backend_agg', 'ansible.plugins.action'):\n"
        "    started = time.perf_counter(); __import__(name); out[name] = round(time.perf_counter() - started, 3)\n"
        "print(json.dumps(out))\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True, cwd=REPO_ROOT
    )
    return json.loads(process.stdout)


# -- tables and the doc section ------------------------------------------------------------


RUN_HEADER = [
    "services",
    "run",
    "wall s",
    "render s",
    "apply s",
    "manifests",
    "render+apply s",
    "render changed",
    "ramp task s",
    "ramp ms/service",
    "queries",
    "queries/service",
    "API requests",
    "of them ramp",
    "ramp LIST",
    "ramp GET",
    "ramp writes",
    "load",
]
ENGINE_HEADER = [
    "services",
    "pass",
    "run ms",
    "ms/service",
    "arguments",
    "clients",
    "Kubernetes API",
    "Prometheus",
    "rest",
    "queries",
    "gate queries",
    "LIST",
    "GET",
    "writes",
]


def _run_row(r: dict) -> list[Any]:
    return [
        r["n"],
        r["run"],
        f"{r['wall_s']:.1f}",
        f"{r['render_s']:.1f}" if r["render_s"] else "-",
        f"{r['apply_s']:.1f}" if r["apply_s"] else "-",
        r["manifests_applied"] or "-",
        f"{r['render_s'] + r['apply_s']:.1f}" if r["apply_s"] else "-",
        r["render_changed"] if r["apply_s"] else "-",
        f"{r['ramp_s']:.2f}",
        f"{r['ramp_ms_per_service']:.0f}",
        r["queries"],
        f"{r['queries_per_service']:g}",
        r["api_requests"],
        r["api_requests_ramp"],
        r["api_lists_ramp"],
        r["api_gets_ramp"],
        r["api_writes_ramp"],
        f"{r['load_1m']:.1f}",
    ]


def _engine_row(e: dict) -> list[Any]:
    return [
        e["n"],
        e["run"],
        f"{e['total_s'] * 1000:.0f}",
        f"{e['ms_per_service']:.1f}",
        f"{e['arguments_ms']:.1f}",
        f"{e['clients_ms']:.1f}",
        f"{e['kube_ms']:.1f}",
        f"{e['prometheus_ms']:.1f}",
        f"{e['rest_ms']:.1f}",
        e["queries"],
        e["gate_queries"],
        e["api_lists"],
        e["api_gets"],
        e["api_writes"],
    ]


def table(document: dict) -> str:
    parts = [
        "rollout.yml in scheduled mode (wall: the whole ansible-playbook; ramp task: the one mirror_ramp task)",
        results.text_table(RUN_HEADER, [_run_row(r) for r in document["runs"]]),
    ]
    for r in document["runs"]:
        if r["slowest_tasks"]:
            parts.append(f"\nslowest tasks of the whole run, {r['n']} service(s), {r['manifests_applied']} manifests:")
            parts += [f"  {seconds:7.2f} s  {name}" for name, seconds in r["slowest_tasks"].items()]
    if document["engine"]:
        parts += [
            "\nthe engine alone, in this process: requests_from_arguments + execute_all (ms per run, counts per run)",
            results.text_table(ENGINE_HEADER, [_engine_row(e) for e in document["engine"]]),
        ]
    parts.append(f"\nimports paid once per task run (s): {document['imports_once_per_task_s']}")
    return "\n".join(parts)


def _settings(document: dict) -> list[list[Any]]:
    return [["ansible", document["ansible"]], ["USER", "set" if document["user_env_set"] else "unset"]]


def doc_section(document: dict) -> str:
    """The measured part of section 3: the command, the machine's load, the tables. What the
    columns and the numbers mean is the section's fixed text, above the markers."""
    lines = [
        results.run_line(document),
        "",
        results.markdown_table(results.SETTING_HEADER, _settings(document)),
        "",
        results.markdown_table(RUN_HEADER, [_run_row(r) for r in document["runs"]]),
    ]
    if document["engine"]:
        lines += ["", results.markdown_table(ENGINE_HEADER, [_engine_row(e) for e in document["engine"]])]
    return "\n".join(lines)


# -- the run ---------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    sizes = [int(size) for size in text.split(",") if size.strip()]
    if any(not 1 <= size <= 999 for size in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: service counts from 1 to 999")
    return sizes


def _progress(result: RunResult) -> RunResult:
    log(f"{result.n} service(s), {result.run}: {result.wall_s:.1f} s, ramp task {result.ramp_s:.2f} s")
    expected = {"whole start": result.n, "start": result.n, "steady": 0}.get(result.run)
    if expected is not None and result.changed_ramps != expected:
        log(f"warning: {result.changed_ramps} ramps changed, expected {expected}")
    if result.run == "whole again" and result.render_changed:
        log(f"warning: the second render changed {result.render_changed} files, expected none")
    if result.service_rows != result.n or result.service_lines != result.n:
        log(f"warning: {result.service_rows} result rows and {result.service_lines} printed lines, expected {result.n}")
    return result


def _engine_progress(result: EngineResult) -> EngineResult:
    log(
        f"{result.n} service(s), engine {result.run}: {result.total_s * 1000:.0f} ms, {result.queries} queries, "
        f"API LIST {result.api_lists} GET {result.api_gets} writes {result.api_writes}"
    )
    if result.queries != result.queries_server:
        log(f"warning: the client sent {result.queries} queries, Prometheus counted {result.queries_server}")
    client_requests = result.api_lists + result.api_gets + result.api_writes
    if client_requests != result.api_requests_server:
        log(f"warning: the client sent {client_requests} API requests, the double served {result.api_requests_server}")
    if result.failed:
        log(f"warning: {result.failed} service(s) failed")
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    runs: list[RunResult] = []
    engine: list[EngineResult] = []
    rendered = ""
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        kube = KubeApiDouble(Path(tmp) / "kube-api")  # started by each stack's empty_cluster
        try:
            # 1 first: its whole run renders the VirtualService every ramp run is seeded from.
            for n in sorted({1, *args.whole_sizes, *args.sizes}):
                with stack(n, kube, Path(tmp) / f"services-{n}") as s:
                    if n == 1 or n in args.whole_sizes:
                        runs.append(_progress(run_rollout(s, "whole start", ramp_only=False, reports=True)))
                        runs.append(_progress(run_rollout(s, "whole again", ramp_only=False, reports=True)))
                        if n == 1:
                            rendered = (
                                s.workdir / "build" / "k8s" / f"virtualservice-{NAMESPACE}-svc-001.yml"
                            ).read_text()
                    if n not in args.sizes:
                        continue
                    empty_cluster(kube)  # the ramp runs start from the rendered VirtualServices alone
                    seed_virtual_services(kube, rendered, n)
                    runs.append(_progress(run_rollout(s, "start", ramp_only=True, reports=False)))
                    # the first look at step 1's gates, written once
                    recorded = _engine_progress(run_engine(s, "record"))
                    runs.append(_progress(run_rollout(s, "steady", ramp_only=True, reports=False)))
                    if n in args.report_sizes:
                        # The first run with a report draws it for every service; the next is a
                        # scheduled run's: the report is there, the ramp held. (The whole start of the
                        # same size wrote reports into the same directory: start without them.)
                        shutil.rmtree(s.workdir / "reports", ignore_errors=True)
                        runs.append(_progress(run_rollout(s, "first report", ramp_only=True, reports=True)))
                        runs.append(_progress(run_rollout(s, "steady+report", ramp_only=True, reports=True)))
                    if not args.no_engine:
                        engine += [recorded, _engine_progress(run_engine(s, "steady"))]
        finally:
            kube.stop()
    document: dict[str, Any] = {
        "benchmark": SECTION,
        "quick": args.quick,
        "ansible": results.first_line([str(VENV_BIN / "ansible"), "--version"]),
        # Unset, the ramp task's `by` argument runs `id -un` (lookup pipe), once per run.
        "user_env_set": bool(os.environ.get("USER")),
        "setup": {
            "inventory": "inventories/dev with N services (a stable and a candidate subset each)",
            "mode": "scheduled mode, dev's ramp (window 5m, min_requests 50, 6 gates) with 1h holds",
            "traffic": f"{FEED_REQUESTS} healthy requests per workload every {FEED_INTERVAL:g} s, scraped every "
            f"{SCRAPE_INTERVAL_S:g}s",
            "alert rules": "5 per service with the labels mirror_monitoring gives them, loaded by Prometheus at its "
            "start (dev's alert gate is inconclusive without a rule that could fire it); a run lists them once",
            "whole start": "rollout.yml: render, apply, ramp with dev's ramp report",
            "whole again": "the same rollout.yml once more: the render must change no file",
            "start, steady": "playbooks/ramp.yml (the ramp alone, rollout.yml's last play) with "
            "mirror_reports_dir '' (no report), the VirtualServices seeded as mirror_istio renders them",
            "first report": "the same with dev's ramp report (an HTML page and a PNG per service), the first "
            "run that writes it",
            "steady+report": "the run after it, with the same report directory",
        },
        "runs": [asdict(r) for r in runs],
        "engine": [asdict(e) for e in engine],
        "imports_once_per_task_s": import_seconds(),
    }
    document["seconds"] = round(time.monotonic() - started, 1)
    return document


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES), help="service counts of the ramp runs")
    parser.add_argument(
        "--whole-sizes",
        type=_sizes,
        default=list(DEFAULT_WHOLE_SIZES),
        help="service counts of the whole run (render + apply + ramp; 1 always runs)",
    )
    parser.add_argument(
        "--report-sizes",
        type=_sizes,
        default=list(DEFAULT_REPORT_SIZES),
        help="service counts with two more steady runs that write dev's ramp reports (the first draws them)",
    )
    parser.add_argument("--no-engine", action="store_true", help="leave the engine-alone runs out of the results")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 and 10 services, written to scale.quick.json"
    )
    results.add_output_arguments(parser, SECTION)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = list(QUICK_SIZES)
        args.whole_sizes = [n for n in args.whole_sizes if n in QUICK_SIZES]
    out = results.output_path(args, SECTION)
    if args.write_doc and args.quick:
        parser.error("--write-doc needs a full run, not --quick")

    return results.finish(
        args,
        argv,
        script=SCRIPT,
        section=SECTION,
        out=out,
        measure=measure,
        table=table,
        doc_section=doc_section,
        interrupted="interrupted: everything started was stopped, nothing written",
    )


if __name__ == "__main__":
    sys.exit(main())
