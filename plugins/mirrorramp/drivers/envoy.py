"""The envoy driver: the mirror lives in an Envoy route file (filesystem RDS), the ramp state in a state file.

For any Envoy configured from files: the local sandbox, and standalone Envoy fleets whose
HTTP connection manager takes its routes from filesystem RDS (`rds.config_source.
path_config_source` with a `watched_directory`). In a mesh, istiod owns the routes: use the
istio driver there.

The route file is a DiscoveryResponse (`version_info`, `resources:` holding the
RouteConfiguration named `route_config_name`). Every route the ramp mirrors carries the marker
`metadata.filter_metadata.mirror_ramp.mirror_clusters` (the mirror's cluster names, in order);
the driver sets `route.request_mirror_policies` on those routes as istiod renders a mirror (one
policy per cluster, `runtime_fraction` numerator over MILLION, `trace_sampled: false`, no
`-shadow` host suffix; no policy at 0 %), removes mirror policies from every other route, and
writes a fresh `write_token` and the `percent` into the marker.

A change: load the route file, shape it, read the rejection counters, write it tmp + fsync +
rename into the watched directory (Envoy reloads on a rename only, and compares content: the
token makes each write's content new), then poll the admin `/config_dump` until the live route
carries this write's token and percentage. config_dump is read before the rename only when the
file is already shaped for the percent (then the write may be a no-op). Envoy never shows a
refused file in config_dump, only in the counters `rds.<name>.update_rejected` /
`update_failure`: when one moves, the previous file is renamed back and the write fails at once,
naming the counter and the file. The admin is read over kept-alive http.client connections, not
through a proxy: it is Envoy's own port, 127.0.0.1 or a configured URL reached directly.

The route file is written as JSON (valid YAML, so `route.yaml` still loads): Envoy's YAML parser
reads bare `y`, `n`, `on`, `off` as booleans, JSON quotes every string.

The state file `<state_dir>/<service>.json` and its optimistic concurrency are the state_file
module's, as for every file-configured proxy.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import math
import re
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mirrorramp.drivers.base import TargetSnapshot
from mirrorramp.drivers.state_file import StateFile
from mirrorramp.errors import ConfigError, DriverError
from mirrorramp.files import write_atomically
from mirrorramp.kept_alive import KeptAliveConnections
from mirrorramp.state import RampState

REQUIRED_OPTIONS = ("route_path", "route_config_name", "admin_url", "state_dir")
ROUTE_CONFIGURATION_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
MARKER = "mirror_ramp"
MILLION = 1_000_000
# FractionalPercent.DenominatorType, by name and by number (config_dump omits HUNDRED, the default).
DENOMINATORS: dict[str | int, int] = {
    "HUNDRED": 100,
    "TEN_THOUSAND": 10_000,
    "MILLION": MILLION,
    0: 100,
    1: 10_000,
    2: MILLION,
}
# The fields of a policy besides its cluster and fraction, as istiod (>= 1.28) renders them.
POLICY_FIELDS: dict[str, Any] = {"trace_sampled": False, "disable_shadow_host_suffix_append": True}
REJECTION_COUNTERS = ("update_rejected", "update_failure")
CONFIRM_POLL_SECONDS = 0.005  # a rename is live in config_dump in about 5 ms (notes/envoy-sandbox.md)
# Kept-alive admin connections a driver keeps: one per request in flight (a driver shared by threads).
MAX_IDLE_ADMIN_CONNECTIONS = 2


def check_percent(percent: float) -> float:
    """`percent` as Envoy can say it: 0..100 in steps of 0.0001 (a numerator over MILLION)."""
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not math.isfinite(percent):
        raise ConfigError(f"envoy mirror percent is {percent!r}, expected a number from 0 to 100")
    if not 0 <= percent <= 100:
        raise ConfigError(f"envoy mirror percent is {percent!r}, expected a number from 0 to 100")
    millionths = round(percent * 10_000)
    if abs(millionths - percent * 10_000) > 1e-6:
        raise ConfigError(
            f"envoy mirror percent {percent!r}: runtime_fraction counts millionths, at most four decimals (e.g. 0.0125)"
        )
    return millionths / 10_000


def mirror_policies(clusters: list[str], percent: float) -> list[dict[str, Any]]:
    """The request_mirror_policies for `percent` of the requests to `clusters` (none at 0 %).

    The numerator is rounded, not truncated as istiod does (0.57 % would become 5699): the
    percent was checked to be whole millionths, and a read-back must find the percent written.
    """
    millionths = round(check_percent(percent) * 10_000)
    if millionths == 0:
        return []
    # A fraction of its own per policy: a shared dict would be dumped as a YAML anchor and alias.
    return [
        {"cluster": cluster, "runtime_fraction": {"default_value": {"numerator": millionths, "denominator": "MILLION"}}}
        | POLICY_FIELDS
        for cluster in clusters
    ]


def policy_millionths(policy: dict[str, Any]) -> int:
    """The share of requests a policy mirrors, in millionths (no runtime_fraction: all of them)."""
    fraction = policy.get("runtime_fraction")
    if fraction is None:
        return MILLION
    default = fraction.get("default_value") or {}
    denominator = DENOMINATORS.get(default.get("denominator", "HUNDRED"))
    if denominator is None:
        raise DriverError(f"mirror policy to {policy.get('cluster')!r}: unknown denominator {default['denominator']!r}")
    # Envoy treats a numerator above its denominator as all requests.
    return min(MILLION, int(default.get("numerator", 0)) * (MILLION // denominator))


def _normalized(policy: dict[str, Any]) -> dict[str, Any]:
    """`policy` with its fraction over MILLION, comparable with what mirror_policies writes."""
    fraction = {key: value for key, value in (policy.get("runtime_fraction") or {}).items() if key != "default_value"}
    fraction["default_value"] = {"numerator": policy_millionths(policy), "denominator": "MILLION"}
    return policy | {"runtime_fraction": fraction}


def _describe(policies: list[dict[str, Any]]) -> str:
    if not policies:
        return "no mirror"
    texts = []
    for policy in policies:
        fraction_extras = {key: value for key, value in policy["runtime_fraction"].items() if key != "default_value"}
        extras = {
            key: policy.get(key, "unset")
            for key in sorted(set(policy) | set(POLICY_FIELDS))
            if key not in ("cluster", "runtime_fraction") and policy.get(key) != POLICY_FIELDS.get(key)
        } | fraction_extras
        text = f"{policy.get('cluster')} {policy_millionths(policy) / 10_000:g}%"
        texts.append(f"{text} {json.dumps(extras, sort_keys=True)}" if extras else text)
    return ", ".join(texts)


def _routes(route_config: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every route of `route_config`, with a label: "<virtual host>/<route name or routes[i]>"."""
    for host in route_config.get("virtual_hosts") or []:
        for index, route in enumerate(host.get("routes") or []):
            yield f"{host.get('name', '?')}/{route.get('name') or f'routes[{index}]'}", route


def _marker(route: dict[str, Any]) -> dict[str, Any] | None:
    return ((route.get("metadata") or {}).get("filter_metadata") or {}).get(MARKER)


def marked_clusters(route: dict[str, Any], label: str) -> list[str] | None:
    """The mirror clusters of a marked route; None when the route is not marked."""
    marker = _marker(route)
    if marker is None:
        return None
    clusters = marker.get("mirror_clusters") if isinstance(marker, dict) else None
    if not isinstance(clusters, list) or not clusters or not all(isinstance(c, str) and c for c in clusters):
        raise DriverError(
            f"route {label}: its {MARKER} metadata has no mirror_clusters list of cluster names: {marker!r}"
        )
    if not isinstance(route.get("route"), dict):
        raise DriverError(f"route {label} is marked for mirroring but has no `route` action to mirror")
    return clusters


def shape_route_config(route_config: dict[str, Any], percent: float, token: str) -> dict[str, Any]:
    """A copy of `route_config` mirroring `percent` on its marked routes, the marker carrying `token`."""
    shaped = copy.deepcopy(route_config)
    marked = 0
    for label, route in _routes(shaped):
        clusters = marked_clusters(route, label)
        action = route.get("route")
        if clusters is None:
            if isinstance(action, dict):
                action.pop("request_mirror_policies", None)
            continue
        marked += 1
        policies = mirror_policies(clusters, percent)
        if policies:
            action["request_mirror_policies"] = policies
        else:
            action.pop("request_mirror_policies", None)
        _marker(route).update(write_token=token, percent=percent)
    if not marked:
        raise DriverError(
            f"route configuration {route_config.get('name')!r} has no route marked with "
            f"metadata.filter_metadata.{MARKER}.mirror_clusters: nothing says what to mirror where"
        )
    return shaped


def route_configuration(document: Any, name: str) -> dict[str, Any]:
    """The RouteConfiguration `name` of a route file (a DiscoveryResponse)."""
    resources = document.get("resources") if isinstance(document, dict) else None
    if not isinstance(resources, list):
        raise DriverError("the route file is not a DiscoveryResponse (no `resources:` list)")
    for resource in resources:
        if isinstance(resource, dict) and resource.get("name") == name:
            if resource.get("@type") != ROUTE_CONFIGURATION_TYPE:
                raise DriverError(f"resource {name!r} is a {resource.get('@type')!r}, not a RouteConfiguration")
            return resource
    names = [r.get("name") for r in resources if isinstance(r, dict)]
    raise DriverError(f"the route file has no RouteConfiguration {name!r} (it has {names})")


def shape_route_file(document: dict[str, Any], name: str, percent: float, token: str) -> dict[str, Any]:
    """The route file mirroring `percent`: its RouteConfiguration `name` shaped, `version_info` = `token`."""
    current = route_configuration(document, name)
    shaped = shape_route_config(current, percent, token)
    resources = [shaped if resource is current else resource for resource in document["resources"]]
    return document | {"version_info": token, "resources": resources}


@dataclass(frozen=True)
class LiveMirror:
    """The mirror a RouteConfiguration carries.

    `percent`: the largest share any route mirrors. `token`: the write_token of the marked
    routes ("" when they disagree or carry none). `clusters`: route label -> mirror clusters.
    `drift`: how it differs from what the driver writes for `percent`; "" when it does not.
    """

    percent: float
    token: str
    clusters: dict[str, list[str]] = field(default_factory=dict)
    drift: str = ""


def live_mirror(route_config: dict[str, Any]) -> LiveMirror:
    """What `route_config` mirrors, and its drift from the driver's own shape."""
    live: dict[str, list[dict[str, Any]]] = {}
    wanted_clusters: dict[str, list[str] | None] = {}
    tokens: set[str] = set()
    for label, route in _routes(route_config):
        live[label] = [_normalized(p) for p in (route.get("route") or {}).get("request_mirror_policies") or []]
        wanted_clusters[label] = marked_clusters(route, label)
        if wanted_clusters[label] is not None:
            tokens.add(str(_marker(route).get("write_token") or ""))
    millionths = max((policy_millionths(p) for policies in live.values() for p in policies), default=0)
    percent = millionths / 10_000
    differences = []
    for label, policies in live.items():
        clusters = wanted_clusters[label]
        wanted = mirror_policies(clusters, percent) if clusters is not None else []
        if policies != wanted:
            where = "" if clusters is not None else f" (not marked with {MARKER})"
            differences.append(
                f"route {label}{where} mirrors {_describe(policies)}, the ramp writes {_describe(wanted)}"
            )
    return LiveMirror(
        percent=percent,
        token=tokens.pop() if len(tokens) == 1 else "",
        clusters={label: [p.get("cluster") for p in policies] for label, policies in live.items() if policies},
        drift="; ".join(differences),
    )


class EnvoyDriver:
    """Sets the mirror of one Envoy route configuration through its RDS file; the state beside it."""

    def __init__(
        self,
        service: str,
        route_path: str | Path,
        route_config_name: str,
        admin_url: str,
        state_dir: str | Path,
        confirm_timeout: float = 2.0,
        http_timeout: float = 2.0,
        lock_timeout: float = 10.0,
    ) -> None:
        self.service = service
        self.route_path = Path(route_path)
        self.route_config_name = route_config_name
        self.admin_url = admin_url.rstrip("/")
        admin = urllib.parse.urlsplit(self.admin_url)
        self._admin_path = admin.path
        connection_class = http.client.HTTPSConnection if admin.scheme == "https" else http.client.HTTPConnection
        self._admin = KeptAliveConnections(
            lambda: connection_class(admin.hostname or "", admin.port, timeout=self.http_timeout),
            MAX_IDLE_ADMIN_CONNECTIONS,
        )
        self.confirm_timeout = confirm_timeout
        self.http_timeout = http_timeout
        self.description = f"envoy {service} (route configuration {route_config_name})"
        self.atomic = False  # the route file and the state file are two writes: the route file first
        self.state_file = StateFile(state_dir, service, self.description, lock_timeout)

    @classmethod
    def from_options(cls, service: str, options: dict[str, Any]) -> EnvoyDriver:
        missing = [key for key in REQUIRED_OPTIONS if not options.get(key)]
        if missing:
            raise ConfigError(f"envoy driver options lack {', '.join(missing)} (needed: {', '.join(REQUIRED_OPTIONS)})")
        admin = urllib.parse.urlsplit(str(options["admin_url"]))
        if admin.scheme not in ("http", "https") or not admin.hostname:
            raise ConfigError(f"envoy admin_url is {options['admin_url']!r}, expected an http(s):// URL")
        if admin.username or admin.password:
            # Envoy's admin has no authentication: a URL with credentials is a mistake, and would be logged.
            raise ConfigError("envoy admin_url carries credentials; Envoy's admin takes none")
        extra = {
            key: float(options[key]) for key in ("confirm_timeout", "http_timeout", "lock_timeout") if options.get(key)
        }
        return cls(
            service=service,
            route_path=options["route_path"],
            route_config_name=str(options["route_config_name"]),
            admin_url=str(options["admin_url"]),
            state_dir=options["state_dir"],
            **extra,
        )

    # -- Envoy's admin -------------------------------------------------------------------
    def _admin_json(self, path: str) -> Any:
        url = f"{self.admin_url}{path}"
        try:
            answer = self._admin.get(f"{self._admin_path}{path}", {}, self.http_timeout)
        except (OSError, http.client.HTTPException) as e:
            raise DriverError(f"{self.description}: cannot read Envoy's admin {url}: {e or type(e).__name__}") from e
        if answer.status != 200:
            raise DriverError(f"{self.description}: cannot read Envoy's admin {url}: HTTP {answer.status}")
        try:
            return json.loads(answer.body)
        except ValueError as e:
            raise DriverError(f"{self.description}: cannot read Envoy's admin {url}: {e}") from e

    def live_route_config(self) -> dict[str, Any]:
        """The RouteConfiguration Envoy runs (config_dump), not what the file says."""
        dump = self._admin_json("/config_dump?resource=dynamic_route_configs")
        configs = [entry.get("route_config") or {} for entry in (dump or {}).get("configs") or []]
        for config in configs:
            if config.get("name") == self.route_config_name:
                return config
        raise DriverError(
            f"{self.description}: Envoy at {self.admin_url} runs no route configuration {self.route_config_name!r} "
            f"(it runs {[c.get('name') for c in configs]}); has it loaded {self.route_path}?"
        )

    def live(self) -> LiveMirror:
        config = self.live_route_config()
        try:
            return live_mirror(config)
        except DriverError as e:
            raise DriverError(f"{self.description}: the live route configuration: {e}") from e

    def rejection_counters(self) -> dict[str, int]:
        """`rds.<name>.update_rejected` and `update_failure`, summed over the listeners using the route."""
        # Only this route configuration's two counters, and only once one has moved (`usedonly`:
        # a counter never incremented is left out, and read as 0): Envoy skips every other stat
        # before matching, and the read costs what /ready costs (Envoy 1.40, docs/benchmarks.md §1).
        counters = "|".join(REJECTION_COUNTERS)
        query = urllib.parse.urlencode(
            {
                "format": "json",
                "filter": f"(^|\\.)rds\\.{re.escape(self.route_config_name)}\\.({counters})$",
                "type": "Counters",
                "usedonly": "",
            }
        )
        data = self._admin_json(f"/stats?{query}")
        totals = dict.fromkeys(REJECTION_COUNTERS, 0)
        for stat in (data or {}).get("stats") or []:
            name = str(stat.get("name", ""))
            for counter in REJECTION_COUNTERS:
                suffix = f"rds.{self.route_config_name}.{counter}"
                if name == suffix or name.endswith(f".{suffix}"):
                    totals[counter] += int(stat.get("value") or 0)
        return totals

    def _kept_mirror(self) -> str:
        """What Envoy runs after a failed write: what it ran before (a refused or unloaded file
        changes nothing), read once the previous file is back; the failure path alone pays for it."""
        try:
            return f"the mirror stays at {self.live().percent:g}%"
        except DriverError as e:
            return f"what Envoy runs is unknown ({e})"

    # -- reading -------------------------------------------------------------------------
    def _settings(self, mirror: LiveMirror) -> dict[str, Any]:
        return {
            "percent": mirror.percent,
            "mirror_clusters": mirror.clusters,
            "write_token": mirror.token,
            "route_file": str(self.route_path),
        }

    def read(self) -> TargetSnapshot:
        counter, state = self.state_file.load()
        live = self.live()
        return TargetSnapshot(
            state=state,
            percent=live.percent,
            version=str(counter),
            mirror_settings=self._settings(live),
            mirror_drift=live.drift,
        )

    # -- writing -------------------------------------------------------------------------
    def _route_file(self) -> tuple[str, dict[str, Any]]:
        """The route file's text and its document."""
        try:
            text = self.route_path.read_text(encoding="utf-8")
        except OSError as e:
            raise DriverError(f"{self.description}: cannot read the route file {self.route_path}: {e}") from e
        try:
            # The driver writes JSON, which parses in microseconds; YAML (a rendered file) takes milliseconds.
            return text, json.loads(text)
        except ValueError:
            pass
        try:
            return text, yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DriverError(f"{self.description}: the route file {self.route_path} is not YAML: {e}") from e

    @contextlib.contextmanager
    def _about_route_file(self) -> Iterator[None]:
        """Name the driver and the route file in the errors of the module's shaping functions."""
        try:
            yield
        except DriverError as e:
            raise DriverError(f"{self.description}: {self.route_path}: {e}") from e

    def write(self, current: TargetSnapshot, state: RampState, percent: float, *, dry_run: bool) -> TargetSnapshot:
        percent = check_percent(percent)
        if dry_run:
            self.state_file.check_version(current.version)
            _, document = self._route_file()
            with self._about_route_file():
                shaped = shape_route_file(document, self.route_config_name, percent, "dry-run")
                wanted = live_mirror(route_configuration(shaped, self.route_config_name))
            return TargetSnapshot(state, percent, current.version, self._settings(wanted))
        with self.state_file.locked():
            counter = self.state_file.check_version(current.version)
            live = self._apply(percent)
            self.state_file.store(counter + 1, state)
        return TargetSnapshot(state, live.percent, str(counter + 1), self._settings(live))

    def _apply(self, percent: float) -> LiveMirror:
        """Make Envoy run the route file shaped for `percent`; on any failure the previous file is back."""
        previous, document = self._route_file()
        with self._about_route_file():
            on_file = route_configuration(document, self.route_config_name)
            on_file_token = live_mirror(on_file).token
            already_shaped = bool(on_file_token) and shape_route_config(on_file, percent, on_file_token) == on_file
        if already_shaped:
            # Only a file shaped for `percent` can make the write a no-op, and only if it is what
            # Envoy runs: config_dump is read for that case alone. A change of percent (a removal)
            # goes to the rename after one read, the counters', not two.
            live = self.live()
            if live.token == on_file_token and not live.drift and live.percent == percent:
                return live  # the file is shaped for `percent` and live: only the state changes
        token = uuid.uuid4().hex
        with self._about_route_file():
            shaped = shape_route_file(document, self.route_config_name, percent, token)
        baseline = self.rejection_counters()
        write_atomically(self.route_path, json.dumps(shaped, indent=1) + "\n")
        return self._confirm(token, percent, baseline, previous)

    def _confirm(self, token: str, percent: float, baseline: dict[str, int], previous: str) -> LiveMirror:
        """Poll config_dump until it runs `token`; a rejection counter moving fails it at once."""
        deadline = time.monotonic() + self.confirm_timeout
        last_error = ""
        while True:
            try:
                live = self.live()
                if live.token == token and live.percent == percent:
                    return live
                counters = self.rejection_counters()
            except DriverError as e:
                last_error, counters = str(e), baseline
            moved = [name for name in REJECTION_COUNTERS if counters[name] > baseline[name]]
            if moved or time.monotonic() > deadline:
                break
            time.sleep(CONFIRM_POLL_SECONDS)
        write_atomically(self.route_path, previous)
        kept = f"the previous route file is back, {self._kept_mirror()}"
        if moved:
            changes = ", ".join(f"rds.{self.route_config_name}.{n} {baseline[n]} -> {counters[n]}" for n in moved)
            raise DriverError(
                f"{self.description}: Envoy refused the route file {self.route_path} for mirror {percent:g}% "
                f"({changes}; Envoy's log says why); {kept}"
            )
        raise DriverError(
            f"{self.description}: Envoy did not run the route file {self.route_path} for mirror {percent:g}% "
            f"within {self.confirm_timeout:g}s (config_dump never showed write_token {token})"
            f"{f'; last error: {last_error}' if last_error else ''}; {kept}"
        )
