"""From a service's HTTPRoute and its version Services to Envoy routes and clusters, as Envoy Gateway translates them.

The Gateway API twin of envoy_config's `sidecar_config`: one function, `httproute_config`, turns
the HTTPRoute the project renders with `mirror_mesh_api: gateway-api` and the version Services
its backendRefs and RequestMirror filters name into the same SidecarConfig shape (a
RouteConfiguration, static clusters on the sandbox's loopback backends), so the sandbox and the
`envoy` driver run a service through either API.

Followed from Envoy Gateway's translator (internal/gatewayapi/filters.go and route.go,
internal/xds/translator/route.go):

- one Envoy route per rule and match entry, in order, named
  `httproute/<namespace>/<name>/rule/<i>/match/<j>`; a PathPrefix "/" is the prefix "/", any
  other PathPrefix a `path_separated_prefix` without its trailing "/" (Gateway API prefixes match
  whole path segments); headers as exact header matchers, the method as an exact `:method`;
- the route timeout: `timeouts.backendRequest` when set (Envoy Gateway uses it as the route
  timeout while the rule has no retry), else `timeouts.request`, else none (Envoy's default);
- one `request_mirror_policies` entry per RequestMirror filter, in filter order, none for a
  filter at 0 %, 100 % when neither `percent` nor `fraction` is set.

Where this translation departs from Envoy Gateway, on purpose:

- clusters are one per referenced Service and port, named as istiod names a Service's cluster in
  Istio's own Gateway API (GAMMA) mode, `outbound|<port>||<Service FQDN>`: Envoy Gateway names a
  cluster after the rule (`httproute/<ns>/<name>/rule/<i>`, a mirror's `...-mirror-<j>`) and
  puts every backendRef of the rule in it, so its names move with rule and filter order and a
  version's traffic cannot be read per Service;
- a fraction is converted exactly, in integers, to millionths (5/1000 is 5,000 over MILLION) and
  a fraction Envoy cannot say in millionths is refused; Envoy Gateway goes through float32
  (0.39 % from 39/10000 becomes 3,899);
- every policy is written as the `envoy` driver writes one (`numerator` over MILLION,
  `trace_sampled: false`, no `-shadow` Host suffix), so the driver's read-back finds no drift;
  Envoy Gateway sets neither flag and says 100 % as 100 over HUNDRED.

The rule the ramp owns is the one named `mirror`; its routes carry the marker the `envoy` driver
reads (`metadata.filter_metadata.mirror_ramp.mirror_clusters`): the clusters of the HTTPRoute's
targets annotation (which holds them at 0 %, when the route has no mirror filter), else of its
mirror filters. Any field the project does not render is refused by its path.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mirrorramp.drivers.envoy import MILLION, POLICY_FIELDS
from mirrorramp.errors import ConfigError, DriverError
from mirrorramp.httproute import mirror_targets
from mirrorramp.routes import MIRROR_RULE_NAME, TARGETS_ANNOTATION, annotated_targets
from mirrorsandbox.envoy_config import (
    METADATA_SHAPE,
    MIRROR_MARKER_KEY,
    STR,
    Names,
    SidecarConfig,
    backend_endpoints,
    check_kind,
    check_shape,
    envoy_duration,
    outbound_cluster,
    require,
)

GATEWAY_GROUP = "gateway.networking.k8s.io"
REQUEST_MIRROR = "RequestMirror"
PATH_PREFIX = "PathPrefix"
HEADER_EXACT = "Exact"
# Gateway API Duration (GEP-2257): a subset of Go's durations, no fractions, no µs.
_GATEWAY_DURATION = re.compile(r"([0-9]{1,5}(h|m|s|ms)){1,4}")
_GATEWAY_API_DEFAULT_WEIGHT = 1
_FRACTION_DEFAULT_DENOMINATOR = 100

_BACKEND_REF = {"name": STR, "port": int}
_HTTP_ROUTE = {
    "apiVersion": STR,
    "kind": STR,
    "metadata": METADATA_SHAPE,
    "spec": {
        "parentRefs": [{"group": STR, "kind": STR, "name": STR, "namespace": STR, "port": int, "sectionName": STR}],
        "rules": [
            {
                "name": STR,
                "matches": [
                    {
                        "path": {"type": STR, "value": STR},
                        "method": STR,
                        "headers": [{"name": STR, "value": STR, "type": STR}],
                    }
                ],
                "backendRefs": [{**_BACKEND_REF, "weight": int}],
                "timeouts": {"request": STR, "backendRequest": STR},
                "filters": [
                    {
                        "type": STR,
                        "requestMirror": {
                            "backendRef": _BACKEND_REF,
                            "percent": int,
                            "fraction": {"numerator": int, "denominator": int},
                        },
                    }
                ],
            }
        ],
    },
}
_SERVICE = {
    "apiVersion": STR,
    "kind": STR,
    "metadata": METADATA_SHAPE,
    "spec": {
        "type": STR,
        "selector": Names(STR),
        "ports": [{"name": STR, "port": int, "targetPort": (int, str), "protocol": STR, "appProtocol": STR}],
    },
}


def httproute_config(
    http_route: Mapping[str, Any],
    services: Sequence[Mapping[str, Any]],
    backends: Mapping[str, str],
    *,
    domain_suffix: str = "cluster.local",
) -> SidecarConfig:
    """The Envoy routes and clusters for `http_route`, its backends the version `services`.

    `backends` maps every Service name to the loopback "127.0.0.1:port" that serves it (all
    ports of a Service reach the same backend). ConfigError names the first field the project
    does not render, or a reference that does not resolve (Service, port).
    """
    check_shape(http_route, _HTTP_ROUTE, "HTTPRoute")
    check_kind(http_route, "HTTPRoute")
    for index, service in enumerate(services):
        check_shape(service, _SERVICE, f"Service[{index}]")
        check_kind(service, "Service")
    route = _Route.of(http_route, services, domain_suffix)
    endpoints = backend_endpoints(backends, tuple(route.service_ports), what="version Service")

    rules = require(http_route["spec"], "rules", "HTTPRoute.spec")
    if not rules:
        raise ConfigError("HTTPRoute.spec.rules is empty: nothing to route")
    routes = [
        envoy_route
        for index, rule in enumerate(rules)
        for envoy_route in _routes(rule, index, f"HTTPRoute.spec.rules[{index}]", route, http_route)
    ]
    referenced = {cluster for envoy_route in routes for cluster in _route_clusters(envoy_route)}
    clusters = [
        outbound_cluster(route.cluster_name(name, port), endpoints[name], {})
        for name, ports in route.service_ports.items()
        for port in ports
        if route.cluster_name(name, port) in referenced
    ]
    route_configuration = {
        # As the istio translation names it (istiod: after the listener's port), so the sandbox's
        # route file keeps its name when a service switches API.
        "name": str(route.http_port(rules[-1], f"HTTPRoute.spec.rules[{len(rules) - 1}]")),
        "virtual_hosts": [
            {
                "name": route.parent_label,
                # The sandbox's clients call Envoy by its loopback address, not a hostname.
                "domains": ["*"],
                "routes": routes,
            }
        ],
        # A typo in a mirror cluster's name is otherwise accepted and mirrors nothing.
        "validate_clusters": True,
    }
    return SidecarConfig(route_configuration=route_configuration, clusters=clusters, http_filters=[])


def fraction_millionths(numerator: int, denominator: int, path: str) -> int:
    """numerator/denominator of the requests in millionths, exactly; ConfigError when it is not whole."""
    if denominator < 1 or not 0 <= numerator <= denominator:
        raise ConfigError(
            f"{path}: {numerator}/{denominator}: a fraction needs 0 <= numerator <= denominator, 1 <= denominator"
        )
    millionths, remainder = divmod(numerator * MILLION, denominator)
    if remainder:
        raise ConfigError(
            f"{path}: {numerator}/{denominator} is not a whole number of millionths: Envoy cannot mirror it exactly"
        )
    return millionths


@dataclass(frozen=True)
class _Route:
    """What the translation resolves references against: the route's namespace and parent,
    the version Services and their ports."""

    name: str
    namespace: str
    parent_label: str
    service_ports: dict[str, tuple[int, ...]]
    domain_suffix: str

    @classmethod
    def of(cls, http_route: Mapping[str, Any], services: Sequence[Mapping[str, Any]], domain_suffix: str) -> _Route:
        metadata = require(http_route, "metadata", "HTTPRoute")
        name = require(metadata, "name", "HTTPRoute.metadata")
        # Gateway API resolves a backendRef without namespace in the route's own namespace.
        namespace = require(metadata, "namespace", "HTTPRoute.metadata")
        service_ports: dict[str, tuple[int, ...]] = {}
        for index, service in enumerate(services):
            path = f"Service[{index}]"
            service_name = require(require(service, "metadata", path), "name", f"{path}.metadata")
            service_namespace = service["metadata"].get("namespace", namespace)
            if service_namespace != namespace:
                raise ConfigError(
                    f"{path}.metadata.namespace {service_namespace!r}: the HTTPRoute's backendRefs reach its own namespace {namespace!r} only"
                )
            if service_name in service_ports:
                raise ConfigError(f"{path}: a second Service named {service_name!r}")
            ports = require(require(service, "spec", path), "ports", f"{path}.spec")
            service_ports[service_name] = tuple(
                require(port, "port", f"{path}.spec.ports[{i}]") for i, port in enumerate(ports)
            )
        parent_label = _parent_label(
            require(http_route["spec"], "parentRefs", "HTTPRoute.spec"), namespace, domain_suffix
        )
        return cls(name, namespace, parent_label, service_ports, domain_suffix)

    def fqdn(self, service: str) -> str:
        return f"{service}.{self.namespace}.svc.{self.domain_suffix}"

    def cluster_name(self, service: str, port: int) -> str:
        return f"outbound|{port}||{self.fqdn(service)}"

    def backend_cluster(self, backend_ref: Mapping[str, Any], path: str) -> str:
        service = require(backend_ref, "name", path)
        if service not in self.service_ports:
            raise ConfigError(f"{path}.name {service!r} is not one of the version Services {list(self.service_ports)}")
        port = require(backend_ref, "port", path)
        if port not in self.service_ports[service]:
            raise ConfigError(
                f"{path}.port {port} is not a port of Service {service!r} {list(self.service_ports[service])}"
            )
        return self.cluster_name(service, port)

    def http_port(self, rule: Mapping[str, Any], path: str) -> int:
        backend_refs = require(rule, "backendRefs", path)
        if not backend_refs:
            raise ConfigError(f"{path}.backendRefs is empty: the last rule is the catch-all, it needs a backend")
        return int(require(backend_refs[0], "port", f"{path}.backendRefs[0]"))


def _parent_label(parent_refs: list[Mapping[str, Any]], namespace: str, domain_suffix: str) -> str:
    """The virtual host's name: the parent Service as istiod names a sidecar's (`<FQDN>:<port>`),
    or the Gateway and listener as Envoy Gateway names a listener (`<ns>/<gateway>/<listener>`)."""
    if len(parent_refs) != 1:
        raise ConfigError(
            f"HTTPRoute.spec.parentRefs: {len(parent_refs)} parents: the sandbox translates exactly one (a Service or a Gateway)"
        )
    parent = parent_refs[0]
    path = "HTTPRoute.spec.parentRefs[0]"
    name = require(parent, "name", path)
    parent_namespace = parent.get("namespace", namespace)
    kind = parent.get("kind", "Gateway")  # Gateway API's defaults
    group = parent.get("group", GATEWAY_GROUP)
    if kind == "Service" and group == "":
        # GAMMA: the route applies to calls to this Service, wherever they come from.
        if "sectionName" in parent:
            raise ConfigError(f"{path}.sectionName: not supported for a Service parent (mesh routing)")
        port = parent.get("port")
        fqdn = f"{name}.{parent_namespace}.svc.{domain_suffix}"
        return f"{fqdn}:{port}" if port is not None else fqdn
    if kind == "Gateway" and group == GATEWAY_GROUP:
        if "port" in parent:
            raise ConfigError(f"{path}.port: not supported for a Gateway parent (name the listener with sectionName)")
        return f"{parent_namespace}/{name}/{parent.get('sectionName', '*')}"
    raise ConfigError(
        f'{path}: kind {kind!r} of group {group!r}: a parent is a Service (group "") or a Gateway ({GATEWAY_GROUP})'
    )


def _routes(
    rule: Mapping[str, Any], index: int, path: str, route: _Route, http_route: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The Envoy routes of one rule: one per match entry (entries are OR-ed), each a full copy."""
    action = _route_action(rule, path, route)
    mirrors = _mirror_policies(rule.get("filters", []), f"{path}.filters", route)
    policies = [policy for _, policy in mirrors if policy is not None]
    if policies:
        action["request_mirror_policies"] = policies
    marker: dict[str, Any] | None = None
    if rule.get("name") == MIRROR_RULE_NAME:
        marker = {"mirror_clusters": _marked_clusters(http_route, route, [cluster for cluster, _ in mirrors], path)}
    elif mirrors:
        raise ConfigError(
            f"{path} (name {rule.get('name')!r}) mirrors, but the ramp owns only the mirror of the rule named {MIRROR_RULE_NAME!r}"
        )
    matches = rule.get("matches") or [{}]
    routes = []
    for match_index, match in enumerate(matches):
        envoy_route: dict[str, Any] = {
            "name": f"httproute/{route.namespace}/{route.name}/rule/{index}/match/{match_index}",
            "match": _route_match(match, f"{path}.matches[{match_index}]"),
            # Every route owns its dicts: the driver edits each route's action on its own.
            "route": copy.deepcopy(action),
        }
        if marker is not None:
            envoy_route["metadata"] = {"filter_metadata": {MIRROR_MARKER_KEY: copy.deepcopy(marker)}}
        routes.append(envoy_route)
    return routes


def _route_action(rule: Mapping[str, Any], path: str, route: _Route) -> dict[str, Any]:
    backend_refs = require(rule, "backendRefs", path)
    weighted = [
        (route.backend_cluster(ref, f"{path}.backendRefs[{i}]"), ref.get("weight", _GATEWAY_API_DEFAULT_WEIGHT))
        for i, ref in enumerate(backend_refs)
    ]
    serving = [(cluster, weight) for cluster, weight in weighted if weight > 0]
    if not serving:
        raise ConfigError(
            f"{path}.backendRefs: no backend with a weight above 0 (Gateway API answers every request 500)"
        )
    action: dict[str, Any] = (
        {"cluster": serving[0][0]}
        if len(serving) == 1
        else {"weighted_clusters": {"clusters": [{"name": cluster, "weight": weight} for cluster, weight in serving]}}
    )
    timeouts = {
        field: _gateway_duration(value, f"{path}.timeouts.{field}") for field, value in rule.get("timeouts", {}).items()
    }
    if (
        "request" in timeouts
        and "backendRequest" in timeouts
        and _seconds(timeouts["backendRequest"]) > _seconds(timeouts["request"])
    ):
        raise ConfigError(f"{path}.timeouts: backendRequest must not exceed request (a CEL rule of the CRD)")
    # Envoy Gateway: backendRequest is the route timeout while the rule has no retry.
    if "backendRequest" in timeouts or "request" in timeouts:
        action["timeout"] = timeouts.get("backendRequest", timeouts.get("request"))
    return action


def _gateway_duration(duration: str, path: str) -> str:
    """A Gateway API duration in protobuf JSON ("250ms" -> "0.25s")."""
    if not _GATEWAY_DURATION.fullmatch(duration):
        raise ConfigError(f"{path}: {duration!r} is not a Gateway API duration like 5s, 250ms or 1m30s (GEP-2257)")
    return envoy_duration(duration, path)


def _seconds(envoy_duration: str) -> float:
    return float(envoy_duration.removesuffix("s"))


def _route_match(match: Mapping[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = _path_match(match.get("path", {"type": PATH_PREFIX, "value": "/"}), f"{path}.path")
    headers = []
    for index, header in enumerate(match.get("headers", [])):
        header_path = f"{path}.headers[{index}]"
        if header.get("type", HEADER_EXACT) != HEADER_EXACT:
            raise ConfigError(f"{header_path}.type {header['type']!r}: the sandbox translates {HEADER_EXACT} only")
        headers.append(
            {
                "name": require(header, "name", header_path),
                "string_match": {"exact": require(header, "value", header_path)},
            }
        )
    if "method" in match:
        headers.append({"name": ":method", "string_match": {"exact": match["method"]}})
    if headers:
        out["headers"] = headers
    return out


def _path_match(path_match: Mapping[str, Any], path: str) -> dict[str, Any]:
    kind = path_match.get("type", PATH_PREFIX)
    if kind != PATH_PREFIX:
        raise ConfigError(f"{path}.type {kind!r}: the sandbox translates {PATH_PREFIX} only")
    value = path_match.get("value", "/")
    if not value.startswith("/"):
        raise ConfigError(f"{path}.value {value!r}: a path prefix starts with '/'")
    if value == "/":
        return {"prefix": "/"}
    # Gateway API prefixes match whole path segments: /api matches /api and /api/x, not /apix.
    return {"path_separated_prefix": value.rstrip("/")}


def _mirror_policies(
    filters: list[Mapping[str, Any]], path: str, route: _Route
) -> list[tuple[str, dict[str, Any] | None]]:
    """(cluster, policy or None at 0 %) per RequestMirror filter, in filter order."""
    mirrors = []
    for index, entry in enumerate(filters):
        filter_path = f"{path}[{index}]"
        kind = require(entry, "type", filter_path)
        if kind != REQUEST_MIRROR:
            raise ConfigError(f"{filter_path}.type {kind!r}: the sandbox translates {REQUEST_MIRROR} filters only")
        mirror = require(entry, "requestMirror", filter_path)
        mirror_path = f"{filter_path}.requestMirror"
        cluster = route.backend_cluster(require(mirror, "backendRef", mirror_path), f"{mirror_path}.backendRef")
        millionths = _mirror_millionths(mirror, mirror_path)
        mirrors.append((cluster, _policy(cluster, millionths) if millionths > 0 else None))
    return mirrors


def _mirror_millionths(mirror: Mapping[str, Any], path: str) -> int:
    if "percent" in mirror and "fraction" in mirror:
        raise ConfigError(f"{path}: both percent and fraction (Gateway API allows one)")
    if "percent" in mirror:
        percent = mirror["percent"]
        if not 0 <= percent <= 100:
            raise ConfigError(f"{path}.percent {percent}: a percent between 0 and 100")
        return percent * (MILLION // 100)
    if "fraction" in mirror:
        fraction = mirror["fraction"]
        return fraction_millionths(
            require(fraction, "numerator", f"{path}.fraction"),
            fraction.get("denominator", _FRACTION_DEFAULT_DENOMINATOR),
            f"{path}.fraction",
        )
    return MILLION


def _policy(cluster: str, millionths: int) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "runtime_fraction": {"default_value": {"numerator": millionths, "denominator": "MILLION"}},
        **POLICY_FIELDS,
    }


def _marked_clusters(http_route: Mapping[str, Any], route: _Route, mirrored: list[str], path: str) -> list[str]:
    """The clusters the ramp mirrors to: the targets annotation, which holds them even at 0 %."""
    annotations = http_route.get("metadata", {}).get("annotations", {})
    if TARGETS_ANNOTATION not in annotations:
        if not mirrored:
            raise ConfigError(
                f"{path}: the rule {MIRROR_RULE_NAME!r} has no RequestMirror filter and the HTTPRoute no annotation {TARGETS_ANNOTATION}"
            )
        return mirrored
    annotation_path = f"HTTPRoute.metadata.annotations.{TARGETS_ANNOTATION}"
    try:
        # Read as the gateway-api driver reads them: entries {name, port, namespace?} as the
        # renderer writes them (`host` taken for `name`).
        entries = annotated_targets(dict(http_route), "{name, port, namespace}")
        targets = mirror_targets(dict(http_route))
    except DriverError as e:
        raise ConfigError(f"{annotation_path}: {e}") from e
    annotated = []
    for index, (entry, target) in enumerate(zip(entries, targets, strict=True)):
        target_path = f"{annotation_path}[{index}]"
        if "subset" in entry:
            raise ConfigError(
                f"{target_path}: subset {entry['subset']!r}: Gateway API has no subsets, name the version Service"
            )
        if target.namespace not in (None, route.namespace):
            raise ConfigError(
                f"{target_path}.namespace {target.namespace!r}: the HTTPRoute's backendRefs reach its own namespace {route.namespace!r} only"
            )
        annotated.append(route.backend_cluster({"name": target.name, "port": target.port}, target_path))
    if mirrored and mirrored != annotated:
        raise ConfigError(f"{path}: mirrors to {mirrored} but the annotation {TARGETS_ANNOTATION} names {annotated}")
    return annotated


def _route_clusters(envoy_route: Mapping[str, Any]) -> list[str]:
    action = envoy_route["route"]
    clusters = (
        [action["cluster"]] if "cluster" in action else [c["name"] for c in action["weighted_clusters"]["clusters"]]
    )
    clusters += [policy["cluster"] for policy in action.get("request_mirror_policies", [])]
    clusters += (
        envoy_route.get("metadata", {}).get("filter_metadata", {}).get(MIRROR_MARKER_KEY, {}).get("mirror_clusters", [])
    )
    return clusters
