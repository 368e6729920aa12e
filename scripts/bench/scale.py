"""Benchmark 3, scheduled-run scale: rollout.yml in scheduled mode for 1, 10 and 100 services.

Everything runs against the Kubernetes API test double (tests/fakes/kube_api.py) and a real
Prometheus (tests/support/prometheus_server.py) scraping the Istio metrics of N healthy
services (tests/support/istio_metrics_source.py). The inventory is inventories/dev with N
services in mirror_services and 1h holds, written to a temporary directory.

1. whole start (N = 1; more with --whole-sizes): `ansible-playbook rollout.yml -i <inventory>`,
   render + apply + ramp with dev's ramp report, split into its parts with the
   ansible.posix.json callback. Render and apply cost seconds per manifest (6 per service, 4
   shared), so they are measured on 1 service and scaled, never run for 100 in the default.
2. For N = 1, 10, 100: the VirtualServices as mirror_istio renders them (the one of 1, renamed
   per service), then the ramp part of the same command, as a scheduled job runs it:

       ansible-playbook rollout.yml -i <inventory> --start-at-task 'Mirror of each service: *'

   start          the first run after the apply: every ramp starts (pending -> step 1 at 1%)
   steady         any later run while a step holds: read, ask the gates, nothing to write
   steady+report  the same with dev's ramp report (--report-sizes, default N = 10)
   start and steady run with mirror_reports_dir "" (no report): at 100 services the report
   alone takes minutes. Between the two the engine records its first look at step 1's gates
   (a bookkeeping write, once per step) in this process.
3. The engine alone, in this process, one service after the other (a loop item of the
   mirror_ramp task without Ansible), timed by where it goes: arguments and clients, the
   Kubernetes API, Prometheus, the rest.
4. A probe of the proposal: the five value gates of a steady run asked once per service, against
   once per gate for all services (`sum by (destination_service_name)`).

Counted per run: the queries Prometheus answered and the seconds it spent on them (its own
prometheus_http_requests_total and ..._duration_seconds_sum), and the requests the API double
served, split into the apply's and the ramp's by when they arrived.

Run from the repository root with the venv (`make bench` runs every benchmark):

    python scripts/bench/scale.py                   # about 4 minutes
    python scripts/bench/scale.py --quick           # smoke run: 1 and 10 services, build/bench/scale.quick.json
    python scripts/bench/scale.py --write-doc       # and rewrite its section of docs/benchmarks.md
    python scripts/bench/scale.py --from-json --write-doc   # the doc from the last build/bench/scale.json
    python scripts/bench/scale.py --whole-sizes 1,10        # the whole run for 10 too (+10 minutes)

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
import json
import multiprocessing
import multiprocessing.connection
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mirrorramp import promql
from mirrorramp.adapter import ARGUMENT_SPEC, RampRequest, build_driver, build_prometheus, execute
from mirrorramp.promql import QueryContext
from scripts.bench import results
from scripts.bench.sandbox import log
from tests.fakes.kube_api import KubeApiServer
from tests.support.ansible_run import REPO_ROOT, VENV_BIN, ansible_env
from tests.support.istio_metrics_source import IstioMetricsSource
from tests.support.prometheus_server import PrometheusServer, poll_until

SCRIPT = "scripts/bench/scale.py"
SECTION = "scale"
DEV_INVENTORY = REPO_ROOT / "inventories" / "dev"
NAMESPACE = "shop-dev"  # dev's mirror_namespace
ENVIRONMENT = "dev"
RAMP_TASK = "Mirror of each service: ramp"
START_AT_RAMP = "Mirror of each service: *"
APPLY_ROLE = "mirror_apply"
DEFAULT_SIZES = (1, 10, 100)
DEFAULT_WHOLE_SIZES = (1,)
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
SCRAPE_INTERVAL = "2s"
MIN_REQUESTS = 50
PLAYBOOK_TIMEOUT = 1800
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


class TimedKubeApi(KubeApiServer):
    """The API double, and when each request arrived (to tell the apply's from the ramp's)."""

    def __init__(self, work_dir: Path) -> None:
        self.arrivals: list[tuple[float, str]] = []  # (time.time(), method)
        super().__init__(work_dir)

    def handle(self, method, raw_path, headers, body):
        self.arrivals.append((time.time(), method))
        return super().handle(method, raw_path, headers, body)

    def reset(self) -> None:
        super().reset()
        self.arrivals = []


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
    kube: TimedKubeApi
    prometheus: PrometheusServer
    workdir: Path
    inventory: Path


@contextlib.contextmanager
def stack(n: int, kube: TimedKubeApi, workdir: Path) -> Iterator[Stack]:
    """The API double emptied, a fresh Prometheus scraping N services' healthy traffic, an inventory."""
    kube.reset()
    kube.ensure_namespace(NAMESPACE)
    inventory = write_inventory(workdir, n)
    with metrics_source(n) as target:
        prometheus = PrometheusServer(workdir / "prometheus", targets=[target], interval=SCRAPE_INTERVAL)
        try:
            prometheus.start()
            wait_for_traffic(prometheus, n)
            yield Stack(n, kube, prometheus, workdir, inventory)
        finally:
            prometheus.stop()


def wait_for_traffic(prometheus: PrometheusServer, n: int) -> None:
    """Until every mirror workload passes dev's traffic gate with room to spare."""
    query = (
        f'count(sum by (destination_workload) (increase(istio_requests_total{{reporter="destination",'
        f'destination_workload_namespace="{NAMESPACE}",destination_workload=~"svc-.*-v2"}}[5m]))'
        f" >= {MIN_REQUESTS * 2})"
    )

    def enough() -> bool:
        result = prometheus.query(query)
        return bool(result) and round(float(result[0]["value"][1])) == n

    poll_until(enough, timeout=90, interval=0.5, what=f"traffic of {n} mirror workloads in Prometheus")


def seed_virtual_services(kube: KubeApiServer, rendered: str, n: int) -> None:
    """N VirtualServices as mirror_istio renders them: `rendered` is svc-001's, renamed per service."""
    for i in range(1, n + 1):
        kube.put_object(yaml.safe_load(rendered.replace(service_name(1), service_name(i))))


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
            if index == 0:
                found["render"].append(span)
            elif name.startswith(f"{APPLY_ROLE} : "):
                found["apply"].append(span)
            elif name.endswith(RAMP_TASK):
                found["ramp"].append(span)
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


def ramp_results(callback_output: dict[str, Any]) -> list[dict[str, Any]]:
    for play in callback_output["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].endswith(RAMP_TASK):
                return task["hosts"]["localhost"]["results"]
    raise RuntimeError("no mirror_ramp task in the run")


@dataclass
class RunResult:
    n: int
    run: str  # "whole start": render + apply + ramp; "start", "steady": the ramp part only
    wall_s: float
    render_s: float
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
    api_writes_ramp: int
    manifests_applied: int
    manifests_per_service: int  # of those, the ones named after one service (the rest are shared)
    changed_ramps: int
    load_1m: float  # the machine's load average when the run started
    slowest_tasks: dict[str, float] = field(default_factory=dict)  # whole runs: task -> seconds


def run_rollout(s: Stack, label: str, *, ramp_only: bool, reports: bool = True) -> RunResult:
    """`ansible-playbook rollout.yml` (from the ramp task on, with ramp_only) in scheduled mode.

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
    command = [str(VENV_BIN / "ansible-playbook"), "rollout.yml", "-i", str(s.inventory), "-e", json.dumps(extra_vars)]
    if ramp_only:
        command += ["--start-at-task", START_AT_RAMP]
    env = ansible_env(
        TMPDIR=str(kube.tmpdir),  # kubernetes.core's discovery cache: this double's own
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_JSON_INDENT="0",
    )
    kube.clear_requests()
    kube.arrivals = []
    load = os.getloadavg()[0]
    before = PrometheusCounters.read(s.prometheus.url)
    started = time.monotonic()
    process = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT, check=False
    )
    wall = time.monotonic() - started
    after = PrometheusCounters.read(s.prometheus.url)
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:4])} ({s.n} services, {label}) failed with {process.returncode}:\n"
            f"{process.stdout[-4000:]}\n{process.stderr[-2000:]}"
        )
    output = json.loads(process.stdout)
    parts = spans(output)
    ramp, apply = parts["ramp"], parts.get("apply")
    in_ramp = [method for at, method in kube.arrivals if ramp.holds(at)]
    in_apply = [method for at, method in kube.arrivals if apply and apply.holds(at)]
    queries, query_seconds = after.since(before, QUERY_HANDLER)
    rules, _ = after.since(before, RULES_HANDLER)
    rendered = sorted((s.workdir / "build" / "k8s").glob("*.yml")) if apply else []
    return RunResult(
        n=s.n,
        run=label,
        wall_s=round(wall, 2),
        render_s=round(parts["render"].seconds, 2) if "render" in parts else 0.0,
        apply_s=round(apply.seconds, 2) if apply else 0.0,
        ramp_s=round(ramp.seconds, 2),
        ramp_ms_per_service=round(ramp.seconds * 1000 / s.n, 1),
        other_s=round(wall - sum(p.seconds for p in parts.values()), 2),
        queries=queries,
        queries_per_service=round(queries / s.n, 2),
        rules_requests=rules,
        prometheus_query_s=round(query_seconds, 3),
        api_requests=len(kube.arrivals),
        api_requests_apply=len(in_apply),
        api_requests_ramp=len(in_ramp),
        api_requests_ramp_per_service=round(len(in_ramp) / s.n, 2),
        api_writes_ramp=sum(1 for method in in_ramp if method != "GET"),
        manifests_applied=len(rendered),
        manifests_per_service=sum(1 for path in rendered if f"-{service_name(1)}" in path.name),
        changed_ramps=sum(1 for result in ramp_results(output) if result.get("changed")),
        load_1m=round(load, 2),
        slowest_tasks=slowest_tasks(output) if not ramp_only else {},
    )


# -- the engine alone ------------------------------------------------------------------------


class Timed:
    """Wraps an object; the time spent in its methods adds up in `buckets[name]`."""

    def __init__(self, wrapped: Any, buckets: dict[str, float], name: str) -> None:
        self._wrapped, self._buckets, self._name = wrapped, buckets, name

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._wrapped, attribute)
        if not callable(value):
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self._buckets[self._name] = self._buckets.get(self._name, 0.0) + time.perf_counter() - started

        return timed


def dev_ramp_arguments(s: Stack) -> dict[str, Any]:
    """The mirror_ramp arguments rollout.yml passes with dev's ramp.yml, but those of one service."""
    from jinja2 import Template

    group_vars = DEV_INVENTORY / "group_vars" / "all"
    ramp = yaml.safe_load((group_vars / "ramp.yml").read_text())
    thresholds = yaml.safe_load((group_vars / "thresholds.yml").read_text())

    def render(value: Any) -> Any:  # dev's gates take their values from mirror_thresholds
        if isinstance(value, dict):
            return {key: render(item) for key, item in value.items()}
        if isinstance(value, list):
            return [render(item) for item in value]
        if isinstance(value, str) and "{{" in value:
            return yaml.safe_load(Template(value).render(**thresholds))
        return value

    return {
        "operation": "ramp",
        "namespace": NAMESPACE,
        "environment": ENVIRONMENT,
        "driver": ramp["mirror_ramp_driver"],
        "host": s.kube.url,
        "api_key": s.kube.token,
        "validate_certs": False,
        "steps": STEPS,
        "gates": render(ramp["mirror_ramp_gates"]),
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
    arguments_ms: float  # validate and parse the arguments, build the two clients
    kube_ms: float
    prometheus_ms: float
    rest_ms: float  # gate bookkeeping, the state machine, the result
    queries_per_service: float
    api_requests_per_service: float
    changed: int


def run_engine(s: Stack, label: str) -> EngineResult:
    """Every service's ramp in this process, one after the other, as the task's loop does (no
    ramp report: its cost is the ramp task's steady+report run minus its steady run)."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    validator = ArgumentSpecValidator(ARGUMENT_SPEC)
    common = dev_ramp_arguments(s)
    buckets: dict[str, float] = {}
    s.kube.clear_requests()
    before = PrometheusCounters.read(s.prometheus.url)
    changed = 0
    started = time.perf_counter()
    for service in services(s.n):
        building = time.perf_counter()
        params = common | {
            "service": service["name"],
            "workloads": {"primary": f"{service['name']}-v1", "mirror": [f"{service['name']}-v2"]},
        }
        validated = validator.validate(params)
        if validated.error_messages:
            raise RuntimeError(f"mirror_ramp arguments: {validated.error_messages}")
        request = RampRequest.from_arguments(validated.validated_parameters, check_mode=False, diff=False)
        driver = Timed(build_driver(request), buckets, "kube")
        prometheus = Timed(build_prometheus(request), buckets, "prometheus")
        buckets["arguments"] = buckets.get("arguments", 0.0) + time.perf_counter() - building
        changed += bool(execute(request, driver=driver, prometheus=prometheus)["changed"])
    total = time.perf_counter() - started
    after = PrometheusCounters.read(s.prometheus.url)
    queries, _ = after.since(before, QUERY_HANDLER)

    def per_service_ms(seconds: float) -> float:
        return round(seconds * 1000 / s.n, 1)

    return EngineResult(
        n=s.n,
        run=label,
        total_s=round(total, 2),
        ms_per_service=per_service_ms(total),
        arguments_ms=per_service_ms(buckets.get("arguments", 0.0)),
        kube_ms=per_service_ms(buckets.get("kube", 0.0)),
        prometheus_ms=per_service_ms(buckets.get("prometheus", 0.0)),
        rest_ms=per_service_ms(total - sum(buckets.values())),
        queries_per_service=round(queries / s.n, 2),
        api_requests_per_service=round(len(s.kube.requests) / s.n, 2),
        changed=changed,
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


# -- the proposal's probe: one query per gate for every service -------------------------------

BY = "destination_service_name"  # what the primary and the mirror workloads of a service share


def batched_queries(names: list[str], window: str) -> dict[str, str]:
    """The five value gates of promql.py for every service in `names` at once: the workload
    matchers become alternations and each aggregation keeps the service, so each answer has
    one series per service."""

    def selector(version: str) -> str:
        workloads = "|".join(f"{name}-{version}" for name in names)
        return (
            f'reporter="destination",destination_workload_namespace="{NAMESPACE}",destination_workload=~"{workloads}"'
        )

    def rate(sel: str, extra: str = "") -> str:
        return f"sum by ({BY}) (rate(istio_requests_total{{{sel}{extra}}}[{window}]))"

    def error_ratio(sel: str) -> str:
        # `or 0 * total`: a service with traffic and no 5xx yet gets 0, as `or vector(0)` gives one.
        errors = rate(sel, ',response_code=~"5.."')
        return f"(({errors}) or 0 * {rate(sel)}) / {rate(sel)}"

    def p99(sel: str) -> str:
        return (
            f"histogram_quantile(0.99, sum by (le, {BY}) "
            f"(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{window}])))"
        )

    mirror, primary = selector("v2"), selector("v1")
    return {
        "traffic": f"sum by ({BY}) (increase(istio_requests_total{{{mirror}}}[{window}]))",
        "error_ratio": error_ratio(mirror),
        "p99_latency": p99(mirror),
        "error_ratio_delta": f"({error_ratio(mirror)}) - ({error_ratio(primary)})",
        "p99_latency_ratio": f"({p99(mirror)}) / ({p99(primary)})",
    }


@dataclass
class ProbeResult:
    n: int
    per_service_queries: int
    per_service_s: float
    batched_queries: int
    batched_s: float
    batched_series: dict[str, int]  # per gate: the series of the batched answer (N: one per service)


def probe_batching(s: Stack, window: str = "5m") -> ProbeResult:
    """The five value gates (traffic, 2 thresholds, 2 comparisons): one query per service and
    gate as today, against one query per gate grouped by service; client-side seconds."""
    templates = (
        promql.REQUEST_COUNT,
        promql.ERROR_RATIO,
        promql.P99_LATENCY_MS,
        promql.ERROR_RATIO_DELTA,
        promql.P99_LATENCY_RATIO,
    )
    names = [service_name(i) for i in range(1, s.n + 1)]
    with requests.Session() as session:

        def ask(query: str) -> list[dict]:
            response = session.get(f"{s.prometheus.url}{QUERY_HANDLER}", params={"query": query}, timeout=30)
            response.raise_for_status()
            return response.json()["data"]["result"]

        started = time.perf_counter()
        for name in names:
            context = QueryContext(name, NAMESPACE, ENVIRONMENT, f"{name}-v1", (f"{name}-v2",), window)
            for template in templates:
                ask(promql.render(template, context))
        per_service_s = time.perf_counter() - started
        started = time.perf_counter()
        series = {gate: len(ask(query)) for gate, query in batched_queries(names, window).items()}
        batched_s = time.perf_counter() - started
    return ProbeResult(
        n=s.n,
        per_service_queries=len(templates) * s.n,
        per_service_s=round(per_service_s, 3),
        batched_queries=len(templates),
        batched_s=round(batched_s, 3),
        batched_series=series,
    )


# -- what the numbers say -------------------------------------------------------------------


def _run(document: dict, n: int, run: str) -> dict | None:
    return next((r for r in document["runs"] if r["n"] == n and r["run"] == run), None)


def summarize(document: dict) -> dict[str, Any]:
    """The numbers the analysis quotes, computed from the runs (so --from-json gives the same)."""
    runs, engine, probes = document["runs"], document["engine"], document["batching_probe"]
    sizes = sorted({r["n"] for r in runs if r["run"] == "steady"})
    big, small = (sizes[-1], sizes[0]) if sizes else (0, 0)
    out: dict[str, Any] = {"sizes": sizes}

    def per_added(run: str) -> float | None:
        a, b = _run(document, small, run), _run(document, big, run)
        if not a or not b or big == small:
            return None
        return round((b["ramp_s"] - a["ramp_s"]) * 1000 / (big - small), 1)

    ramp_runs = [r for r in runs if r["run"] in ("start", "steady")]
    out["linear"] = {
        "queries_per_service": sorted({r["queries_per_service"] for r in ramp_runs}),
        "api_requests_per_service": {
            run: sorted({r["api_requests_ramp_per_service"] for r in ramp_runs if r["run"] == run})
            for run in ("start", "steady")
        },
        "ramp_ms_per_added_service": {"start": per_added("start"), "steady": per_added("steady")},
    }
    steady = _run(document, big, "steady")
    engine_steady = next((e for e in engine if e["n"] == big and e["run"] == "steady"), None)
    if steady and engine_steady:
        out["per_service_steady"] = {
            "n": big,
            "ramp_task_ms": steady["ramp_ms_per_service"],
            "engine_ms": engine_steady["ms_per_service"],
            "prometheus_ms": engine_steady["prometheus_ms"],
            "kube_ms": engine_steady["kube_ms"],
            "arguments_ms": engine_steady["arguments_ms"],
            "rest_ms": engine_steady["rest_ms"],
            "ansible_item_ms": round(steady["ramp_ms_per_service"] - engine_steady["ms_per_service"], 1),
            "prometheus_server_ms_per_query": round(steady["prometheus_query_s"] * 1000 / max(steady["queries"], 1), 2),
        }
    one = _run(document, small, "steady")
    if one:
        out["fixed_per_run_s"] = {"ramp_task_n1": one["ramp_s"], "ansible_playbook_rest_n1": one["other_s"]}
    for r in runs:
        if r["run"] == "steady+report":
            plain = _run(document, r["n"], "steady")
            if plain:
                out["report_ms_per_service"] = round((r["ramp_s"] - plain["ramp_s"]) * 1000 / r["n"], 1)
    wholes = sorted((r for r in runs if r["run"] == "whole start"), key=lambda r: r["n"])
    if wholes:
        first, last = wholes[0], wholes[-1]
        if last["n"] > first["n"]:  # the cost of one more manifest, measured
            added = last["manifests_applied"] - first["manifests_applied"]
            render_per = (last["render_s"] - first["render_s"]) / added
            apply_per = (last["apply_s"] - first["apply_s"]) / added
            basis = f"slope from {first['n']} to {last['n']} services"
        else:  # all of one run's render and apply over its manifests: an upper bound
            render_per = first["render_s"] / first["manifests_applied"]
            apply_per = first["apply_s"] / first["manifests_applied"]
            basis = (
                f"all of the {first['n']}-service run over its manifests, fixed task costs included: an upper "
                "bound; --whole-sizes 1,10 measures the cost of one more manifest"
            )
        per_service = first["manifests_per_service"]
        shared = first["manifests_applied"] - per_service * first["n"]
        manifests_big = per_service * max(big, 1) + shared
        out["whole"] = {
            "manifests_per_service": per_service,
            "shared_manifests": shared,
            "render_s_per_manifest": round(render_per, 2),
            "apply_s_per_manifest": round(apply_per, 2),
            "basis": basis,
            "n": big,
            "manifests": manifests_big,
            "render_apply_s_estimate": round((render_per + apply_per) * manifests_big),
        }
    probe = next((p for p in probes if p["n"] == big), None)
    if probe:
        out["batching"] = probe
    return out


# -- tables and the doc section ------------------------------------------------------------


RUN_HEADER = [
    "services",
    "run",
    "wall s",
    "render s",
    "apply s",
    "ramp task s",
    "ramp ms/service",
    "queries",
    "queries/service",
    "API requests",
    "of them ramp",
    "ramp/service",
    "load",
]
ENGINE_HEADER = [
    "services",
    "pass",
    "ms/service",
    "arguments",
    "Kubernetes API",
    "Prometheus",
    "rest",
    "queries/service",
    "API requests/service",
]


def _run_row(r: dict) -> list[Any]:
    return [
        r["n"],
        r["run"],
        f"{r['wall_s']:.1f}",
        f"{r['render_s']:.1f}" if r["render_s"] else "-",
        f"{r['apply_s']:.1f}" if r["apply_s"] else "-",
        f"{r['ramp_s']:.2f}",
        f"{r['ramp_ms_per_service']:.0f}",
        r["queries"],
        f"{r['queries_per_service']:g}",
        r["api_requests"],
        r["api_requests_ramp"],
        f"{r['api_requests_ramp_per_service']:g}",
        f"{r['load_1m']:.1f}",
    ]


def _engine_row(e: dict) -> list[Any]:
    return [
        e["n"],
        e["run"],
        f"{e['ms_per_service']:.1f}",
        f"{e['arguments_ms']:.1f}",
        f"{e['kube_ms']:.1f}",
        f"{e['prometheus_ms']:.1f}",
        f"{e['rest_ms']:.1f}",
        f"{e['queries_per_service']:g}",
        f"{e['api_requests_per_service']:g}",
    ]


def _probe_row(p: dict) -> list[Any]:
    return [
        p["n"],
        p["per_service_queries"],
        f"{p['per_service_s']:.3f}",
        p["batched_queries"],
        f"{p['batched_s']:.3f}",
    ]


PROBE_HEADER = ["services", "queries, one per service and gate", "s", "queries, one per gate", "s"]


def _text_table(header: list[str], rows: list[list[Any]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]

    def cell(value: Any, width: int) -> str:  # words to the left, numbers to the right
        return f"{value:<{width}}" if isinstance(value, str) and value[:1].isalpha() else f"{value!s:>{width}}"

    lines = ["  ".join(cell(value, width) for value, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def table(document: dict) -> str:
    parts = [
        "rollout.yml in scheduled mode (wall: the whole ansible-playbook; ramp task: mirror_ramp's loop)",
        _text_table(RUN_HEADER, [_run_row(r) for r in document["runs"]]),
    ]
    for r in document["runs"]:
        if r["slowest_tasks"]:
            parts.append(f"\nslowest tasks of the whole run, {r['n']} service(s), {r['manifests_applied']} manifests:")
            parts += [f"  {seconds:7.2f} s  {name}" for name, seconds in r["slowest_tasks"].items()]
    if document["engine"]:
        parts += [
            "\nthe engine alone, in this process (ms per service)",
            _text_table(ENGINE_HEADER, [_engine_row(e) for e in document["engine"]]),
            "\nthe five value gates of a steady run, client seconds",
            _text_table(PROBE_HEADER, [_probe_row(p) for p in document["batching_probe"]]),
        ]
    parts.append(f"\nimports paid once per task run (s): {document['imports_once_per_task_s']}")
    return "\n".join(parts)


def analysis(summary: dict[str, Any]) -> list[str]:
    """Where a service's time goes, in sentences with this run's numbers."""
    linear = summary["linear"]
    constant = len(linear["queries_per_service"]) == 1 and all(
        len(values) == 1 for values in linear["api_requests_per_service"].values()
    )
    lines = [
        f"- **Target**: at most linear growth: **{'met' if constant else 'missed'}** (queries and API "
        f"requests per service {'the same' if constant else 'not the same'} at every N); per-service fixed "
        "costs removed: **not yet**, every cost below is paid once per service (see the proposal)."
    ]
    added = linear["ramp_ms_per_added_service"]
    lines.append(
        f"- **Growth is linear, and every cost is per service.** Each service costs the same "
        f"{', '.join(f'{q:g}' for q in linear['queries_per_service'])} Prometheus queries and "
        f"{', '.join(f'{q:g}' for q in linear['api_requests_per_service']['start'])} API requests (start: read, "
        f"patch, read back; steady: "
        f"{', '.join(f'{q:g}' for q in linear['api_requests_per_service']['steady'])} read) whatever N"
        + (
            f"; the ramp task grows by {added['steady']:.0f} ms per added service in a steady run and "
            f"{added['start']:.0f} ms in a start run (from the smallest to the largest N)"
            if added["steady"] is not None and added["start"] is not None
            else ""
        )
        + ". Nothing is shared between services: that is the fixed cost to remove."
    )
    per = summary.get("per_service_steady")
    if per:
        lines.append(
            f"- **Where a steady service's {per['ramp_task_ms']:.0f} ms go ({per['n']} services):** the engine "
            f"{per['engine_ms']:.0f} ms in all, of which Prometheus {per['prometheus_ms']:.0f} ms (6 queries, a new "
            f"HTTP connection per service; Prometheus itself spends {per['prometheus_server_ms_per_query']:.1f} ms "
            f"on a query, the same at every N), the Kubernetes API {per['kube_ms']:.0f} ms (1 GET), arguments and "
            f"clients {per['arguments_ms']:.0f} ms, the rest {per['rest_ms']:.0f} ms; Ansible's loop item "
            f"about {per['ansible_item_ms']:.0f} ms (templating about 35 arguments per item, among them the gates "
            "and two lookups, `validate_argument_spec`, the result through the callback). A trivial "
            "`ansible.builtin.debug` loop item costs about 10 ms on this machine, so most of it is this task's "
            "own templating."
        )
    fixed = summary.get("fixed_per_run_s")
    if fixed:
        lines.append(
            f"- **Fixed per run:** the ramp task's first item, {fixed['ramp_task_n1']:.2f} s for 1 service "
            "(the worker, the imports of the engine, the kubernetes client and Ansible's action plugin: see "
            f"the imports above), and {fixed['ansible_playbook_rest_n1']:.1f} s of ansible-playbook around it."
        )
    report_ms = summary.get("report_ms_per_service")
    if report_ms is not None and per:
        lines.append(
            f"- **The ramp report is the largest per-service cost when it is on** (dev's default): "
            f"{report_ms:.0f} ms per service per run, about {report_ms / per['ramp_task_ms']:.0f}x all the "
            "rest of the service's ramp; it redraws the whole history (matplotlib, constrained layout, "
            f"a PNG) on every run, also when nothing changed: {report_ms * per['n'] / 1000:.0f} s of every "
            f"scheduled run at {per['n']} services."
        )
    whole = summary.get("whole")
    if whole:
        lines.append(
            f"- **Render and apply dwarf the ramp.** {whole['manifests_per_service']} manifests per service "
            f"(+{whole['shared_manifests']} shared), each a loop item of `template`, of `kubernetes.core.k8s` "
            f"and of `copy` (the kept copy): {whole['render_s_per_manifest']:.1f} s render + "
            f"{whole['apply_s_per_manifest']:.1f} s apply per manifest ({whole['basis']}). At {whole['n']} services, "
            f"{whole['manifests']} manifests: about {whole['render_apply_s_estimate'] / 60:.0f} minutes per run "
            "before the ramp starts, on this machine; rollout.yml does that on every scheduled run."
        )
    return lines


def proposal(summary: dict[str, Any]) -> list[str]:
    """What would remove the per-service fixed costs, with this run's numbers as the gain."""
    per = summary.get("per_service_steady") or {}
    n = per.get("n", 100)
    batching = summary.get("batching")
    report_ms = summary.get("report_ms_per_service")
    whole = summary.get("whole")
    lines = []
    if whole:
        lines.append(
            f"1. **Keep render and apply out of the scheduled run** (roles and the CI examples, not the engine): "
            "the scheduled job runs only the ramp (a `playbooks/ramp.yml`, or tags on rollout.yml), render + "
            "apply run when the inventory changes; where both must stay in one run, apply all manifests in one "
            "`kubernetes.core.k8s` call (a list of definitions) and keep the copy as one file. Gain: about "
            f"{whole['render_apply_s_estimate'] / 60:.0f} minutes of every scheduled run at {whole['n']} services. "
            "About 1-2 days."
        )
    if report_ms is not None:
        lines.append(
            "2. **Redraw the ramp report only when the ramp moved** (engine, `adapter.execute`: append the "
            "JSONL record every run, draw the PNG and HTML when `outcome.changed` or when none exists yet). "
            f"Gain: {report_ms:.0f} ms per service on nearly every scheduled run ({report_ms * n / 1000:.0f} s "
            f"at {n} services). About half a day."
        )
    if per:
        lines.append(
            "3. **All services in one action invocation** (engine + role: a `services` list argument, the "
            "engine loops over it with one Prometheus session and one Kubernetes client, one result with a "
            "row per service, a failing service does not stop the others). Gain: Ansible's "
            f"{per['ansible_item_ms']:.0f} ms per service and the per-service client set-up, "
            f"{per['ansible_item_ms'] * n / 1000:.0f} s at {n} services. About 2-3 days (check mode, --diff, "
            "per-service `changed`, the status and stop operations, docs, tests)."
        )
    if batching:
        lines.append(
            "4. **One query per gate for all services** (engine, on top of 3): render each default gate query "
            'once for all services, `destination_workload=~"<all mirror workloads>"` and every `sum` by '
            "`destination_service_name` (what the primary and the mirror workloads of a service share), and "
            "split the answer per service; a service without its series is inconclusive, as today; custom "
            "queries using a per-service placeholder stay per service; the whole-step look stays per service "
            f"(only at the end of a hold). Probe at {batching['n']} services: {batching['per_service_queries']} "
            f"queries in {batching['per_service_s']:.2f} s become {batching['batched_queries']} in "
            f"{batching['batched_s']:.2f} s, one series per service each. About 3 days."
        )
    lines.append(
        "5. **One LIST of the VirtualServices per namespace** (label `mirror-ramp.io/environment`) instead of "
        f"a GET per service (on top of 3): {n} reads become 1 per run; writes stay one JSON patch per "
        "service with its resourceVersion. About half a day."
    )
    return lines


def doc_section(document: dict) -> str:
    summary = summarize(document)  # from the runs, not the stored copy: --from-json follows this code
    setup = document["setup"]
    load = ", ".join(f"{x:g}" for x in document["machine"]["load_average"])
    lines = [
        "Run: `python scripts/bench/scale.py [--quick] [--write-doc]` (about 4 minutes; `--help` for the sizes; "
        "`--whole-sizes 1,10` adds the whole run for 10 services, about 10 minutes more).",
        "",
        f"Command: `{document['command']}` ({document['when']}, {document['seconds']:.0f} s in all; "
        f"load average at the start: {load}); {document['ansible']}, USER "
        f"{'set' if document['user_env_set'] else 'unset (the task runs `id -un` once per service)'}.",
        "",
        f"Setup: {setup['inventory']}; {setup['mode']}; {setup['traffic']}; the "
        f"Kubernetes API test double. whole start: {setup['whole start']}. start, steady: {setup['start, steady']}. "
        f"steady+report: {setup['steady+report']}. load: the 1-minute load average at the start of the run.",
        "",
        results.markdown_table(RUN_HEADER, [_run_row(r) for r in document["runs"]]),
    ]
    if document["engine"]:
        lines += [
            "",
            "The engine alone, in the benchmark's process, ms per service (the pass between start and steady "
            "records the first look at the gates: read, patch, read back; its Kubernetes time is the test "
            "double's, which checks each patch against the Istio schema in Python: the counts carry over to a "
            "real API server, the times do not):",
            "",
            results.markdown_table(ENGINE_HEADER, [_engine_row(e) for e in document["engine"]]),
            "",
            "The five value gates of a steady run (traffic, 2 thresholds, 2 comparisons), client seconds:",
            "",
            results.markdown_table(PROBE_HEADER, [_probe_row(p) for p in document["batching_probe"]]),
        ]
    lines += ["", "Where the time goes:", "", *analysis(summary)]
    lines += ["", "Proposal: remove the per-service fixed costs (none of it implemented yet):", "", *proposal(summary)]
    return "\n".join(lines)


# -- the run ---------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    sizes = [int(size) for size in text.split(",") if size.strip()]
    if any(not 1 <= size <= 999 for size in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: service counts from 1 to 999")
    return sizes


def _progress(result: RunResult) -> RunResult:
    log(f"{result.n} service(s), {result.run}: {result.wall_s:.1f} s, ramp task {result.ramp_s:.2f} s")
    expected = result.n if result.run.endswith("start") else 0
    if result.changed_ramps != expected:
        log(f"warning: {result.changed_ramps} ramps changed, expected {expected}")
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    runs: list[RunResult] = []
    engine: list[EngineResult] = []
    probes: list[ProbeResult] = []
    rendered = ""
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        kube = TimedKubeApi(Path(tmp) / "kube-api").start()
        try:
            # 1 first: its whole run renders the VirtualService every ramp run is seeded from.
            for n in sorted({1, *args.whole_sizes, *args.sizes}):
                with stack(n, kube, Path(tmp) / f"services-{n}") as s:
                    if n == 1 or n in args.whole_sizes:
                        runs.append(_progress(run_rollout(s, "whole start", ramp_only=False, reports=True)))
                        if n == 1:
                            rendered = (
                                s.workdir / "build" / "k8s" / f"virtualservice-{NAMESPACE}-svc-001.yml"
                            ).read_text()
                    if n not in args.sizes:
                        continue
                    kube.reset()  # the ramp runs start from the rendered VirtualServices alone
                    kube.ensure_namespace(NAMESPACE)
                    seed_virtual_services(kube, rendered, n)
                    runs.append(_progress(run_rollout(s, "start", ramp_only=True, reports=False)))
                    recorded = run_engine(s, "record")  # the first look at step 1's gates, written once
                    runs.append(_progress(run_rollout(s, "steady", ramp_only=True, reports=False)))
                    if n in args.report_sizes:
                        runs.append(_progress(run_rollout(s, "steady+report", ramp_only=True, reports=True)))
                    if not args.no_engine:
                        engine += [recorded, run_engine(s, "steady")]
                        probes.append(probe_batching(s))
        finally:
            kube.stop()
    document: dict[str, Any] = {
        "benchmark": SECTION,
        "quick": args.quick,
        "ansible": _first_line([str(VENV_BIN / "ansible"), "--version"]),
        # Unset, the ramp task's `by` argument runs `id -un` (lookup pipe) once per service.
        "user_env_set": bool(os.environ.get("USER")),
        "setup": {
            "inventory": "inventories/dev with N services (a stable and a candidate subset each)",
            "mode": "scheduled mode, dev's ramp (window 5m, min_requests 50, 6 gates) with 1h holds",
            "traffic": f"{FEED_REQUESTS} healthy requests per workload every {FEED_INTERVAL:g} s, scraped every "
            f"{SCRAPE_INTERVAL}",
            "whole start": "rollout.yml: render, apply, ramp with dev's ramp report",
            "start, steady": f"rollout.yml --start-at-task '{START_AT_RAMP}' with mirror_reports_dir '' (no "
            "report), the VirtualServices seeded as mirror_istio renders them",
            "steady+report": "the same with dev's ramp report (an HTML page and a PNG per service and run)",
        },
        "runs": [asdict(r) for r in runs],
        "engine": [asdict(e) for e in engine],
        "batching_probe": [asdict(p) for p in probes],
        "imports_once_per_task_s": import_seconds(),
    }
    document["seconds"] = round(time.monotonic() - started, 1)
    document["summary"] = summarize(document)
    return document


def _first_line(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout.splitlines()[0]
    return "?"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES), help="service counts of the ramp runs")
    parser.add_argument(
        "--whole-sizes",
        type=_sizes,
        default=list(DEFAULT_WHOLE_SIZES),
        help="service counts of the whole run (render + apply + ramp; 1 always runs; about 1 min per service)",
    )
    parser.add_argument(
        "--report-sizes",
        type=_sizes,
        default=list(DEFAULT_REPORT_SIZES),
        help="service counts with one more steady run that writes dev's ramp reports",
    )
    parser.add_argument("--no-engine", action="store_true", help="skip the in-process engine and the batching probe")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 and 10 services, written to scale.quick.json"
    )
    parser.add_argument("--out", type=Path, help="JSON output (default build/bench/scale.json)")
    parser.add_argument("--write-doc", action="store_true", help="rewrite the scale section of docs/benchmarks.md")
    parser.add_argument("--from-json", action="store_true", help="measure nothing: use the JSON of the last run")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = list(QUICK_SIZES)
    out = args.out or results.BENCH_DIR / ("scale.quick.json" if args.quick else "scale.json")
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
