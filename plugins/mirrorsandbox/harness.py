"""The sandbox's data plane without Ansible, for the benchmarks and the tests: backends, Envoy, Prometheus.

    resources = local_resources()
    with running_harness(tmp_path, resources) as harness:
        harness.set_percent(20)
        harness.control("candidate", error_ratio=1.0)
        harness.served("candidate", "/load/")

What it starts, every server on 127.0.0.1 on a port picked free, each process by a PID it holds
and stops by that PID (never by name), every file under one work directory:

- the two sandbox backends of the service (`python -m mirrorsandbox.backend`, as the
  sandbox role starts them), one per DestinationRule subset, counting what they serve in
  Istio's metric schema;
- Envoy configured as istiod configures a sidecar calling the service (`sidecar_config` of the
  VirtualService and DestinationRule, filesystem RDS), the mirror then set through the `envoy`
  driver, as the ramp sets it;
- with `prometheus=True`, the real Prometheus scraping the backends (and Envoy's own
  `/stats/prometheus`) every second, with the alert rules given;
- with `load_seconds`, the project's bounded load generator against Envoy.

The VirtualService and DestinationRule come from `local_resources` (built here from the local
inventory's service as the role mirror_istio renders it; the DestinationRule by the role's own
builder, mirrorramp.destinationrule) or `rendered_resources` (read from a render's build directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mirrorramp.destinationrule import destination_rule
from mirrorramp.drivers.envoy import EnvoyDriver
from mirrorramp.errors import ConfigError
from mirrorramp.state import RampState
from mirrorramp.virtualservice import MIRROR_ROUTE_NAME, TARGETS_ANNOTATION
from mirrorsandbox.envoy_config import sidecar_config
from mirrorsandbox.envoy_process import ROUTE_DIR_NAME, ROUTE_FILE_NAME, EnvoyProcess, start_routed_envoy

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_INVENTORY = REPO_ROOT / "inventories" / "local"
ISTIO_ROLE_VARS = REPO_ROOT / "roles" / "mirror_istio" / "vars" / "main.yml"
PROMETHEUS_BINARY = "/usr/bin/prometheus"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 5.0
POLL_S = 0.02
# The fields of a local inventory service this module turns into resources; any other is refused
# by name, so a field added to the inventory cannot be dropped silently from the harness.
SERVICE_FIELDS = frozenset(
    {
        "name",
        "port",
        "subsets",
        "primary_subset",
        "mirrors",
        "mirror_percent",
        "mirror_all_methods",
        "timeout",
        "retries",
        "load_balancer",
        "connection_pool",
        "outlier_detection",
    }
)


class HarnessError(RuntimeError):
    """A process of the harness did not start or stop; the message says which and why."""


@dataclass(frozen=True)
class Resources:
    """A service's VirtualService and DestinationRule, and the workload names of its subsets."""

    virtual_service: dict[str, Any]
    destination_rule: dict[str, Any]
    workloads: dict[str, str]  # subset -> workload name (destination_workload of its metrics)
    primary_subset: str

    @property
    def service(self) -> str:
        return self.virtual_service["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.virtual_service["metadata"]["namespace"]

    @property
    def subset_traffic_policies(self) -> dict[str, dict[str, Any]]:
        """The DestinationRule subsets' own trafficPolicy, by subset (those that have one)."""
        subsets = self.destination_rule["spec"]["subsets"]
        return {subset["name"]: subset["trafficPolicy"] for subset in subsets if "trafficPolicy" in subset}


# -- the resources -------------------------------------------------------------------------------
def local_inventory_vars() -> dict[str, Any]:
    """inventories/local/group_vars/all/*.yml merged (Jinja left as written)."""
    merged: dict[str, Any] = {}
    for path in sorted((LOCAL_INVENTORY / "group_vars" / "all").glob("*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def local_resources(service_index: int = 0) -> Resources:
    """The VirtualService and DestinationRule mirror_istio renders for the local inventory's service,
    without Ansible."""
    inventory = local_inventory_vars()
    service = inventory["mirror_services"][service_index]
    return istio_resources(service, inventory["mirror_namespace"], inventory["mirror_environment"])


def istio_resources(service: Mapping[str, Any], namespace: str, environment: str) -> Resources:
    """roles/mirror_istio/templates/virtualservice.yml.j2 for the fields of SERVICE_FIELDS (the
    local inventory's), as data, and the DestinationRule the role renders (the same builder)."""
    unknown = sorted(set(service) - SERVICE_FIELDS)
    if unknown:
        raise HarnessError(f"service {service.get('name')!r}: {', '.join(unknown)} not translated by the harness")
    role_vars = yaml.safe_load(ISTIO_ROLE_VARS.read_text())
    name, port = service["name"], int(service["port"])
    labels = {
        "app.kubernetes.io/managed-by": "mirror-ramp",
        "app.kubernetes.io/part-of": "mirror-ramp",
        "mirror-ramp.io/environment": environment,
    }
    targets = [{"host": name, "port": port, "subset": mirror["subset"]} for mirror in service.get("mirrors", [])]
    destinations = [{"host": name, "subset": t["subset"], "port": {"number": port}} for t in targets]
    percent = float(service.get("mirror_percent", 0))
    mirror_fields: dict[str, Any] = {}
    if percent > 0 and len(destinations) == 1:
        mirror_fields = {"mirror": destinations[0], "mirrorPercentage": {"value": percent}}
    elif percent > 0:
        mirror_fields = {"mirrors": [{"destination": d, "percentage": {"value": percent}} for d in destinations]}
    common: dict[str, Any] = {}
    if "timeout" in service:
        common["timeout"] = str(service["timeout"])
    if isinstance(service.get("retries"), Mapping):
        retries = service["retries"]
        common["retries"] = {
            key: (int(retries[source]) if key == "attempts" else str(retries[source]))
            for key, source in (("attempts", "attempts"), ("perTryTimeout", "per_try_timeout"), ("retryOn", "retry_on"))
            if source in retries
        }
    to_primary = {
        "route": [{"destination": {"host": name, "subset": service["primary_subset"], "port": {"number": port}}}]
    }
    # The mirror route's name is the engine's (the role takes it from there too); the others the role's.
    route_names = role_vars["__mirror_istio_route_names"]
    if service.get("mirror_all_methods", False):
        http = [{"name": MIRROR_ROUTE_NAME, **to_primary, **common, **mirror_fields}]
    else:
        method = {"method": {"regex": role_vars["__mirror_istio_safe_methods_regex"]}}
        http = [
            {"name": MIRROR_ROUTE_NAME, "match": [method], **to_primary, **common, **mirror_fields},
            {"name": route_names["primary"], **to_primary, **common},
        ]
    virtual_service = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {TARGETS_ANNOTATION: json.dumps(targets, sort_keys=True, separators=(",", ":"))},
        },
        "spec": {"hosts": [name], "http": http},
    }
    try:
        rule = destination_rule(service, host=name, namespace=namespace, labels=labels)
    except ConfigError as e:
        raise HarnessError(str(e)) from e
    return Resources(
        virtual_service=virtual_service,
        destination_rule=rule,
        workloads={s["name"]: s.get("workload") or f"{name}-{s['name']}" for s in service["subsets"]},
        primary_subset=service["primary_subset"],
    )


def rendered_resources(build_dir: Path, service: str, namespace: str, workloads: Mapping[str, str]) -> Resources:
    """The VirtualService and DestinationRule a render (playbooks/render.yml) wrote into build_dir/k8s."""
    k8s = build_dir / "k8s"
    virtual_service = yaml.safe_load((k8s / f"virtualservice-{namespace}-{service}.yml").read_text())
    destination_rule = yaml.safe_load((k8s / f"destinationrule-{namespace}-{service}.yml").read_text())
    primary = virtual_service["spec"]["http"][-1]["route"][0]["destination"]["subset"]
    return Resources(virtual_service, destination_rule, dict(workloads), primary)


# -- processes -----------------------------------------------------------------------------------
def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stop_pid(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process by its PID, SIGKILL after `grace_s`; reaped. Only this one process."""
    if process.pid <= 0:  # os.kill(0 or -1, ...) would signal a whole process group
        raise HarnessError(f"refusing to signal PID {process.pid}")
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)


def http_json(url: str, data: Mapping[str, Any] | None = None, timeout: float = 5.0) -> Any:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _wait_http(url: str, process: subprocess.Popen[bytes], what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HarnessError(f"{what} exited with {process.returncode} during start-up:\n{_tail(log)}")
        with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=1.0) as answer:
            if answer.status == 200:
                return
        time.sleep(POLL_S)
    raise HarnessError(f"{what} not ready at {url} within {timeout:g} s:\n{_tail(log)}")


def _tail(log: Path, chars: int = 2000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


@dataclass
class Backend:
    """One sandbox backend (python -m mirrorsandbox.backend): its traffic and admin ports."""

    subset: str
    port: int
    admin_port: int
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    def start(self) -> None:
        """Start it (again, on the same ports: a candidate that was down comes back)."""
        if self.process is not None and self.process.poll() is None:
            raise HarnessError(f"backend {self.subset} already runs (PID {self.process.pid})")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        _wait_http(f"{self.admin_url}/healthz", self.process, f"backend {self.subset}", self.log, READY_TIMEOUT_S)

    def stop(self) -> None:
        """Stop it by its PID and wait until its traffic port refuses connections (a DOWN backend)."""
        if self.process is None:
            return
        stop_pid(self.process)
        deadline = time.monotonic() + STOP_GRACE_S
        while _port_open(self.port):
            if time.monotonic() > deadline:
                raise HarnessError(f"backend {self.subset}: port {self.port} still open after its stop")
            time.sleep(POLL_S)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _alive(pid: int) -> bool:
    """The process runs (a zombie, exited but not reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


@dataclass
class Prometheus:
    """The real Prometheus on loopback, its config, rules and TSDB under its own directory."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    scrape_interval_s: float

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def stop(self) -> None:
        stop_pid(self.process, grace_s=10.0)


def start_prometheus(
    workdir: Path, targets: Mapping[str, str], envoy_admin: str | None, rules: Path | None, interval_s: float = 1.0
) -> Prometheus:
    """Prometheus scraping `targets` (name -> "127.0.0.1:port", labelled sandbox_backend=name as
    the sandbox role labels them) and Envoy's admin, evaluating `rules`, every `interval_s`."""
    workdir.mkdir(parents=True, exist_ok=True)
    interval = f"{interval_s:g}s"
    scrape_configs: list[dict[str, Any]] = [
        {
            "job_name": "sandbox-backends",
            "static_configs": [
                {"targets": [target], "labels": {"sandbox_backend": name}} for name, target in targets.items()
            ],
        }
    ]
    if envoy_admin:
        scrape_configs.append(
            {
                "job_name": "envoy",
                "metrics_path": "/stats/prometheus",
                "static_configs": [{"targets": [urllib.parse.urlsplit(envoy_admin).netloc]}],
            }
        )
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)] if rules else [],
        "scrape_configs": scrape_configs,
    }
    config_file = workdir / "prometheus.yml"
    config_file.write_text(json.dumps(config, indent=1))  # JSON is YAML
    (port,) = free_ports(1)
    log = workdir / "prometheus.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                PROMETHEUS_BINARY,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address={LOOPBACK}:{port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1h",
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    prometheus = Prometheus(port=port, workdir=workdir, process=process, scrape_interval_s=interval_s)
    try:
        _wait_http(f"{prometheus.url}/-/ready", process, "Prometheus", log, READY_TIMEOUT_S)
    except BaseException:
        prometheus.stop()
        raise
    return prometheus


# -- the harness ---------------------------------------------------------------------------------
@dataclass
class Harness:
    """A running data plane: the backends, Envoy in front of them, optionally Prometheus and load."""

    workdir: Path
    resources: Resources
    backends: dict[str, Backend]
    route_dir: Path
    route_config_name: str
    envoy: EnvoyProcess | None = None
    proxy_port: int = 0
    prometheus: Prometheus | None = None
    load: subprocess.Popen[bytes] | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def proxy_url(self) -> str:
        """Envoy's listener, the sandbox's one way in ("http://127.0.0.1:PORT/")."""
        return f"http://{LOOPBACK}:{self.proxy_port}/"

    @property
    def route_path(self) -> Path:
        return self.route_dir / ROUTE_FILE_NAME

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    def envoy_options(self) -> dict[str, Any]:
        """The `envoy` driver's options (the mirror_ramp task's `envoy:`) for this harness."""
        if self.envoy is None:
            raise HarnessError("Envoy is not running")
        return {
            "route_path": str(self.route_path),
            "route_config_name": self.route_config_name,
            "admin_url": self.envoy.admin_url,
            "state_dir": str(self.state_dir),
        }

    def driver(self) -> EnvoyDriver:
        return EnvoyDriver.from_options(self.resources.service, self.envoy_options())

    def set_percent(self, percent: float, state: RampState | None = None) -> float:
        """The live mirror percent, through the envoy driver (rename, config_dump confirms), with
        `state` stored beside it (default: the stored state, unchanged). Returns the seconds it took."""
        started = time.monotonic()
        driver = self.driver()
        current = driver.read()
        written = driver.write(current, state if state is not None else current.state, percent, dry_run=False)
        if written.percent != percent:
            raise HarnessError(f"mirror set to {percent}% but Envoy runs {written.percent}%")
        return time.monotonic() - started

    def control(self, subset: str, **behaviour: float) -> None:
        """POST the backend's /control (error_ratio, latency_ms, ...; left out: 0)."""
        http_json(f"{self.backends[subset].admin_url}/control", behaviour)

    def served(self, subset: str, prefix: str = "/", limit: int = 0) -> dict[str, Any]:
        """The backend's /requests: how many requests under `prefix` it served, and the last ones."""
        query = urllib.parse.urlencode({"prefix": prefix, "limit": limit})
        return http_json(f"{self.backends[subset].admin_url}/requests?{query}")

    def pids(self) -> dict[str, int]:
        """Every process of the harness that runs now, by name."""
        found = {name: b.process.pid for name, b in self.backends.items() if b.running and b.process}
        if self.envoy is not None and _alive(self.envoy.pid):
            found["envoy"] = self.envoy.pid
        if self.prometheus is not None and self.prometheus.process.poll() is None:
            found["prometheus"] = self.prometheus.process.pid
        if self.load is not None and self.load.poll() is None:
            found["load"] = self.load.pid
        return found

    def start_load(self, seconds: float, rps: float, post_ratio: float, prefix: str = "load") -> None:
        """The project's bounded load generator against Envoy, in a process of its own."""
        if self.load is not None and self.load.poll() is None:
            raise HarnessError(f"the load generator already runs (PID {self.load.pid})")
        argv = [
            sys.executable,
            "-m",
            "mirrorsandbox.loadgen",
            "--url",
            f"{self.proxy_url}{prefix}",
            "--rps",
            f"{rps:g}",
            "--duration",
            f"{seconds:g}",
            "--max-requests",
            str(int(rps * seconds) + 1),
            "--post-ratio",
            f"{post_ratio:g}",
        ]
        with (self.workdir / "load.log").open("ab") as log:
            self.load = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def stop(self) -> None:
        """Everything the harness started, each by its PID, the load first; then check nothing is left."""
        if self._stopped:
            return
        errors = []
        stoppers = [
            *([lambda: stop_pid(self.load)] if self.load is not None else []),
            *([self.envoy.stop] if self.envoy is not None else []),
            *(backend.stop for backend in self.backends.values()),
            *([self.prometheus.stop] if self.prometheus is not None else []),
        ]
        for stop in stoppers:
            try:
                stop()
            except (HarnessError, OSError, subprocess.SubprocessError) as e:
                errors.append(str(e))
        self._stopped = True
        left = self.pids()
        if errors or left:
            raise HarnessError(f"the harness did not stop cleanly: {errors}; still running: {left}")


@contextlib.contextmanager
def running_harness(
    workdir: Path,
    resources: Resources,
    *,
    prometheus: bool = False,
    rules: Path | None = None,
    scrape_interval_s: float = 1.0,
) -> Iterator[Harness]:
    """The backends, Envoy and (with `prometheus`) Prometheus started under `workdir`; every one
    stopped by its PID on the way out, also when the start fails half-way."""
    workdir.mkdir(parents=True, exist_ok=True)
    subsets = [s["name"] for s in resources.destination_rule["spec"]["subsets"]]
    ports = iter(free_ports(2 * len(subsets)))
    backends = {}
    for subset in subsets:
        port, admin_port = next(ports), next(ports)
        argv = [
            sys.executable,
            "-m",
            "mirrorsandbox.backend",
            "--name",
            subset,
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            "--workload",
            resources.workloads[subset],
            "--namespace",
            resources.namespace,
            "--service",
            resources.service,
            "--version",
            resources.workloads[subset].rsplit("-", 1)[-1],
        ]
        backends[subset] = Backend(subset, port, admin_port, argv, workdir / f"backend-{subset}.log")
    config = sidecar_config(
        resources.virtual_service,
        resources.destination_rule,
        {subset: backend.address for subset, backend in backends.items()},
    )
    harness = Harness(
        workdir=workdir,
        resources=resources,
        backends=backends,
        route_dir=workdir / ROUTE_DIR_NAME,
        route_config_name=config.route_configuration["name"],
    )
    try:
        for backend in backends.values():
            backend.start()
        routed = start_routed_envoy(
            workdir,
            config.route_configuration,
            config.clusters,
            inbound_http_filters=config.http_filters,
            version_info="rendered",
        )
        harness.envoy = routed.process
        harness.proxy_port = routed.port
        if prometheus:
            harness.prometheus = start_prometheus(
                workdir / "prometheus",
                {subset: f"{LOOPBACK}:{backend.admin_port}" for subset, backend in backends.items()},
                harness.envoy.admin_url,
                rules,
                scrape_interval_s,
            )
        yield harness
    finally:
        harness.stop()
