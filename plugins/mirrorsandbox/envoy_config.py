"""From a service's VirtualService and DestinationRule to the Envoy config istiod would push to a sidecar.

One function, `sidecar_config`, turns the two resources that the role mirror_istio renders into
the RouteConfiguration and the clusters of an outbound sidecar (istiod's
pilot/pkg/networking/core/route/route.go, retry/retry.go and the cluster builder), with the
sandbox's loopback backends as the clusters' only endpoints:

- clusters `outbound|<port>|<subset>|<host FQDN>`, one per DestinationRule subset and service
  port, each from the subset's traffic policy merged over the top-level one as istiod merges
  them (MergeSubsetTrafficPolicy: a subset's connectionPool, outlierDetection or loadBalancer
  replaces the top-level one whole): the connection pool as circuit breakers (istiod's
  defaults: 2^32-1 each) and connect timeout, the outlier detection (panic threshold 0, as
  istiod sets it), the consistent hash as a ring hash (and the route's hash policy, from the
  policy of the subset the route goes to);
- one route per http route and match entry, in order: the match (uri, method, headers, query
  parameters, case sensitive), the cluster, the timeout (0s = none when unset), the retry policy (istiod's default
  when unset, none at 0 attempts), the fault as the fault filter's per-route config;
- the mirror as `request_mirror_policies` (one per target, numerator = percent x 10000 truncated
  as Go's uint32() does, over MILLION, `trace_sampled: false`, none at 0 %) without Envoy's
  `-shadow` Host suffix, as Istio >= 1.28 does;
- the route the ramp owns (named `mirror`) carries the marker the `envoy` driver reads:
  `metadata.filter_metadata.mirror_ramp.mirror_clusters`, the clusters of the targets annotation.

It covers exactly the fields the role renders; any other field is refused by its path, so a new
field in the template cannot be dropped silently from the sandbox.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from mirrorramp.errors import ConfigError, DriverError
from mirrorramp.virtualservice import MIRROR_ROUTE_NAME, TARGETS_ANNOTATION, mirror_targets

MIRROR_MARKER_KEY = "mirror_ramp"  # filter_metadata namespace shared with the envoy driver
FAULT_FILTER_NAME = "envoy.filters.http.fault"
_FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
_HTTP_PROTOCOL_OPTIONS_NAME = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HTTP_PROTOCOL_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_PREVIOUS_HOSTS_TYPE = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
# istiod's values when the resources leave them unset.
_UNLIMITED = 2**32 - 1
_DEFAULT_CONNECT_TIMEOUT = "10s"
_DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
_DEFAULT_RETRIES = 2
_HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5
_RING_HASH_MINIMUM_SIZE = 1024
_GO_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")


@dataclass(frozen=True)
class SidecarConfig:
    """What an outbound sidecar listener needs: its routes, its clusters and the HTTP filters
    (before the router) the routes rely on."""

    route_configuration: dict[str, Any]
    clusters: list[dict[str, Any]]
    http_filters: list[dict[str, Any]]


# --- the shapes the role renders: a dict is a mapping with exactly these optional keys, a list
# [shape] a list of that shape, Names(shape) a mapping from free names (headers) to shape.


@dataclass(frozen=True)
class Names:
    """The shape of a mapping from free names (labels, headers) to values of `shape`."""

    shape: Any


STR = str
_NUMBER = (int, float)
_STRING_MATCH = {"exact": STR, "prefix": STR, "regex": STR}
_DESTINATION = {"host": STR, "subset": STR, "port": {"number": int}}
_PERCENTAGE = {"value": _NUMBER}
METADATA_SHAPE = {"name": STR, "namespace": STR, "labels": Names(STR), "annotations": Names(STR)}
_HTTP_ROUTE = {
    "name": STR,
    "match": [
        {
            "method": _STRING_MATCH,
            "uri": _STRING_MATCH,
            "headers": Names(_STRING_MATCH),
            "queryParams": Names(_STRING_MATCH),
        }
    ],
    "route": [{"destination": _DESTINATION}],
    "timeout": STR,
    "retries": {"attempts": int, "perTryTimeout": STR, "retryOn": STR},
    "fault": {
        "delay": {"percentage": _PERCENTAGE, "fixedDelay": STR},
        "abort": {"percentage": _PERCENTAGE, "httpStatus": int},
    },
    "mirror": _DESTINATION,
    "mirrorPercentage": _PERCENTAGE,
    "mirrors": [{"destination": _DESTINATION, "percentage": _PERCENTAGE}],
}
_VIRTUAL_SERVICE = {
    "apiVersion": STR,
    "kind": STR,
    "metadata": METADATA_SHAPE,
    "spec": {"hosts": [STR], "http": [_HTTP_ROUTE]},
}
_TRAFFIC_POLICY = {
    "loadBalancer": {"consistentHash": {"httpHeaderName": STR}},
    "connectionPool": {
        "tcp": {"maxConnections": int, "connectTimeout": STR},
        "http": {"http1MaxPendingRequests": int, "http2MaxRequests": int, "maxRequestsPerConnection": int},
    },
    "outlierDetection": {
        "consecutive5xxErrors": int,
        "consecutiveGatewayErrors": int,
        "interval": STR,
        "baseEjectionTime": STR,
        "maxEjectionPercent": int,
    },
}
_DESTINATION_RULE = {
    "apiVersion": STR,
    "kind": STR,
    "metadata": METADATA_SHAPE,
    "spec": {
        "host": STR,
        "subsets": [{"name": STR, "labels": Names(STR), "trafficPolicy": _TRAFFIC_POLICY}],
        "trafficPolicy": _TRAFFIC_POLICY,
    },
}
_TOP_POLICY_PATH = "DestinationRule.spec.trafficPolicy"


def sidecar_config(
    virtual_service: Mapping[str, Any],
    destination_rule: Mapping[str, Any],
    backends: Mapping[str, str],
    *,
    domain_suffix: str = "cluster.local",
) -> SidecarConfig:
    """The Envoy routes and clusters istiod would give a sidecar calling this service.

    `backends` maps every DestinationRule subset to the loopback "127.0.0.1:port" that serves it
    (all service ports of a subset reach the same backend). ConfigError names the first field
    the role does not render, or a reference that does not resolve (subset, host, port).
    """
    check_shape(virtual_service, _VIRTUAL_SERVICE, "VirtualService")
    check_shape(destination_rule, _DESTINATION_RULE, "DestinationRule")
    check_kind(virtual_service, "VirtualService")
    check_kind(destination_rule, "DestinationRule")
    service = _Service.of(virtual_service, destination_rule, domain_suffix)
    endpoints = backend_endpoints(backends, service.subsets, what="DestinationRule subset")
    policies = subset_policies(destination_rule)

    http_routes = require(virtual_service["spec"], "http", "VirtualService.spec")
    routes = [
        route
        for index, http_route in enumerate(http_routes)
        for route in _routes(http_route, f"VirtualService.spec.http[{index}]", service, virtual_service, policies)
    ]
    ports = sorted({port for route in routes for port in _route_ports(route)})
    clusters = [
        outbound_cluster(
            service.cluster_name(port, subset), endpoints[subset], policies[subset].policy, policies[subset].paths
        )
        for port in ports
        for subset in service.subsets
    ]
    # The catch-all (last) route goes to the service's HTTP port: istiod names the route
    # configuration of an outbound HTTP listener after its port.
    service_port = _route_ports(routes[-1])[0]
    route_configuration = {
        "name": str(service_port),
        "virtual_hosts": [
            {
                "name": f"{service.fqdn}:{service_port}",
                # The sandbox's clients call Envoy by its loopback address, not the service name.
                "domains": ["*"],
                "routes": routes,
            }
        ],
        # A typo in a mirror cluster's name is otherwise accepted and mirrors nothing.
        "validate_clusters": True,
    }
    fault_filter = {"name": FAULT_FILTER_NAME, "typed_config": {"@type": _FAULT_TYPE}}
    # istiod puts the fault filter on every sidecar HTTP listener; without per-route config it does nothing.
    return SidecarConfig(route_configuration=route_configuration, clusters=clusters, http_filters=[fault_filter])


@dataclass(frozen=True)
class SubsetPolicy:
    """The traffic policy istiod applies to one subset's clusters, where each of its keys was
    written (the messages name that path), and the header the routes to the subset hash."""

    policy: dict[str, Any]
    paths: dict[str, str]
    hash_header: str | None


def subset_policies(destination_rule: Mapping[str, Any]) -> dict[str, SubsetPolicy]:
    """Each subset's traffic policy as istiod merges it (pilot/pkg/networking/util
    MergeSubsetTrafficPolicy): the top-level policy, with each of connectionPool, outlierDetection
    and loadBalancer that the subset sets replacing the top-level one whole, nothing merged inside.
    The routes' hash (route.go hashForHTTPDestination) is the subset's consistent hash if it sets
    one, else the top-level one."""
    top = destination_rule["spec"].get("trafficPolicy", {})
    policies = {}
    for index, subset in enumerate(destination_rule["spec"]["subsets"]):
        own = subset.get("trafficPolicy", {})
        paths = {key: f"{_TOP_POLICY_PATH}.{key}" for key in top}
        paths.update({key: f"DestinationRule.spec.subsets[{index}].trafficPolicy.{key}" for key in own})
        hash_header = _hash_header(own) or _hash_header(top)
        policies[subset["name"]] = SubsetPolicy(policy={**top, **own}, paths=paths, hash_header=hash_header)
    return policies


def _hash_header(policy: Mapping[str, Any]) -> str | None:
    return policy.get("loadBalancer", {}).get("consistentHash", {}).get("httpHeaderName")


def mirror_numerator(percent: float) -> int:
    """Envoy's numerator over MILLION for `percent`, truncated as istiod's uint32(p * 10000)."""
    return int(percent * 10000)


@dataclass(frozen=True)
class _Service:
    host: str
    fqdn: str
    subsets: tuple[str, ...]

    @classmethod
    def of(
        cls, virtual_service: Mapping[str, Any], destination_rule: Mapping[str, Any], domain_suffix: str
    ) -> _Service:
        hosts = require(virtual_service["spec"], "hosts", "VirtualService.spec")
        if len(hosts) != 1:
            raise ConfigError(
                f"VirtualService.spec.hosts: {hosts!r}: the sandbox translates one host per VirtualService"
            )
        host = hosts[0]
        rule_host = require(destination_rule["spec"], "host", "DestinationRule.spec")
        if rule_host != host:
            raise ConfigError(f"DestinationRule.spec.host {rule_host!r} is not the VirtualService's host {host!r}")
        subsets = tuple(
            require(subset, "name", f"DestinationRule.spec.subsets[{index}]")
            for index, subset in enumerate(require(destination_rule["spec"], "subsets", "DestinationRule.spec"))
        )
        namespace = virtual_service.get("metadata", {}).get("namespace")
        if "." in host:
            fqdn = host
        elif namespace:
            fqdn = f"{host}.{namespace}.svc.{domain_suffix}"  # istiod resolves a short name in the VirtualService's namespace
        else:
            raise ConfigError(
                f"VirtualService.metadata.namespace is missing: needed to resolve the short host {host!r}"
            )
        return cls(host=host, fqdn=fqdn, subsets=subsets)

    def cluster_name(self, port: int, subset: str) -> str:
        return f"outbound|{port}|{subset}|{self.fqdn}"

    def destination_cluster(self, destination: Mapping[str, Any], path: str) -> str:
        host = require(destination, "host", path)
        if host != self.host:
            raise ConfigError(f"{path}.host {host!r}: the sandbox translates destinations of {self.host!r} only")
        subset = require(destination, "subset", path)
        if subset not in self.subsets:
            raise ConfigError(f"{path}.subset {subset!r} is not a DestinationRule subset {list(self.subsets)}")
        port = require(require(destination, "port", path), "number", f"{path}.port")
        return self.cluster_name(port, subset)


def _routes(
    http_route: Mapping[str, Any],
    path: str,
    service: _Service,
    virtual_service: Mapping[str, Any],
    policies: Mapping[str, SubsetPolicy],
) -> list[dict[str, Any]]:
    """The Envoy routes of one http route."""
    destinations = require(http_route, "route", path)
    if len(destinations) != 1:
        raise ConfigError(
            f"{path}.route: {len(destinations)} destinations: the sandbox translates exactly one (no weights)"
        )
    destination = require(destinations[0], "destination", f"{path}.route[0]")
    cluster = service.destination_cluster(destination, f"{path}.route[0].destination")
    hash_header = policies[destination["subset"]].hash_header
    action: dict[str, Any] = {
        "cluster": cluster,
        "timeout": envoy_duration(http_route["timeout"], f"{path}.timeout") if "timeout" in http_route else "0s",
    }
    if hash_header is not None:
        action["hash_policy"] = [{"header": {"header_name": hash_header}}]
    retry_policy = _retry_policy(
        http_route.get("retries"), consistent_hash=hash_header is not None, path=f"{path}.retries"
    )
    if retry_policy is not None:
        action["retry_policy"] = retry_policy
    mirror_percents = _mirror_percents(http_route, service, path)
    policies = [_mirror_policy(cluster, percent) for cluster, percent in mirror_percents if percent > 0]
    if policies:
        action["request_mirror_policies"] = policies

    name = http_route.get("name")
    extras: dict[str, Any] = {}
    if "fault" in http_route:
        extras["typed_per_filter_config"] = {FAULT_FILTER_NAME: _fault(http_route["fault"], f"{path}.fault")}
    if name == MIRROR_ROUTE_NAME:
        clusters = _marked_clusters(virtual_service, service, [cluster for cluster, _ in mirror_percents], path)
        extras["metadata"] = {"filter_metadata": {MIRROR_MARKER_KEY: {"mirror_clusters": clusters}}}
    elif mirror_percents:
        raise ConfigError(
            f"{path} (name {name!r}) mirrors, but the ramp owns only the mirror of the route named {MIRROR_ROUTE_NAME!r}"
        )
    # As istiod does: one Envoy route per match entry (entries are OR-ed), each a full copy, so
    # the driver can set the mirror on every marked route alike. No match: the catch-all.
    matches = http_route.get("match") or [{}]
    return [
        {
            **({"name": name} if name is not None else {}),
            "match": _route_match(match, f"{path}.match[{index}]"),
            "route": copy.deepcopy(action),
            **copy.deepcopy(extras),
        }
        for index, match in enumerate(matches)
    ]


def _route_match(match: Mapping[str, Any], path: str) -> dict[str, Any]:
    uri = match.get("uri")
    out: dict[str, Any] = _uri_match(uri, f"{path}.uri") if uri else {"prefix": "/"}
    out["case_sensitive"] = True
    headers = []
    if "method" in match:
        headers.append({"name": ":method", "string_match": _string_match(match["method"], f"{path}.method")})
    for name, string_match in match.get("headers", {}).items():
        headers.append({"name": name, "string_match": _string_match(string_match, f"{path}.headers.{name}")})
    if headers:
        out["headers"] = headers
    query = [
        {"name": name, "string_match": _string_match(string_match, f"{path}.queryParams.{name}")}
        for name, string_match in match.get("queryParams", {}).items()
    ]
    if query:
        out["query_parameters"] = query
    return out


def _uri_match(uri: Mapping[str, str], path: str) -> dict[str, Any]:
    kind, value = _one_string_match(uri, path)
    return {"exact": {"path": value}, "prefix": {"prefix": value}, "regex": {"safe_regex": {"regex": value}}}[kind]


def _string_match(string_match: Mapping[str, str], path: str) -> dict[str, Any]:
    kind, value = _one_string_match(string_match, path)
    return {"safe_regex": {"regex": value}} if kind == "regex" else {kind: value}


def _one_string_match(string_match: Mapping[str, str], path: str) -> tuple[str, str]:
    if len(string_match) != 1:
        raise ConfigError(f"{path}: exactly one of exact, prefix, regex (got {sorted(string_match)})")
    ((kind, value),) = string_match.items()
    return kind, value


def _retry_policy(retries: Mapping[str, Any] | None, *, consistent_hash: bool, path: str) -> dict[str, Any] | None:
    """istiod's retry.ConvertPolicy: the default policy, overridden field by field."""
    policy: dict[str, Any] = {
        "retry_on": _DEFAULT_RETRY_ON,
        "num_retries": _DEFAULT_RETRIES,
        "retriable_status_codes": [503],
        "host_selection_retry_max_attempts": _HOST_SELECTION_RETRY_MAX_ATTEMPTS,
    }
    if not consistent_hash:  # retries stay on the hashed host
        policy["retry_host_predicate"] = [
            {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": _PREVIOUS_HOSTS_TYPE}}
        ]
    if retries is None:
        return policy
    attempts = retries.get("attempts", 0)
    if attempts <= 0:
        return None  # istiod: an explicit policy without attempts disables retries
    policy["num_retries"] = attempts
    if "retryOn" in retries:
        parts = [part.strip() for part in retries["retryOn"].split(",") if part.strip()]
        codes = [int(part) for part in parts if _is_status_code(part)]
        conditions = [part for part in parts if not _is_status_code(part)]
        if codes and "retriable-status-codes" not in conditions:
            conditions.append("retriable-status-codes")
        policy["retry_on"] = ",".join(conditions)
        policy["retriable_status_codes"] = codes
        if not codes:
            del policy["retriable_status_codes"]
    if "perTryTimeout" in retries:
        policy["per_try_timeout"] = envoy_duration(retries["perTryTimeout"], f"{path}.perTryTimeout")
    return policy


def _is_status_code(part: str) -> bool:
    """What istiod's parseRetryOn takes for a status code: a number Go's http.StatusText knows."""
    return part.isdigit() and int(part) in HTTPStatus._value2member_map_


def _fault(fault: Mapping[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {"@type": _FAULT_TYPE}
    if "delay" in fault:
        delay = fault["delay"]
        out["delay"] = {
            "fixed_delay": envoy_duration(require(delay, "fixedDelay", f"{path}.delay"), f"{path}.delay.fixedDelay"),
            "percentage": _fractional_percent(
                require(delay, "percentage", f"{path}.delay"), f"{path}.delay.percentage"
            ),
        }
    if "abort" in fault:
        abort = fault["abort"]
        out["abort"] = {
            "http_status": require(abort, "httpStatus", f"{path}.abort"),
            "percentage": _fractional_percent(
                require(abort, "percentage", f"{path}.abort"), f"{path}.abort.percentage"
            ),
        }
    if len(out) == 1:
        raise ConfigError(f"{path}: neither delay nor abort")
    return out


def _mirror_percents(http_route: Mapping[str, Any], service: _Service, path: str) -> list[tuple[str, float]]:
    """(cluster, percent) per mirror target in `mirrors` order; an absent percentage is 100 %."""
    if "mirror" in http_route and "mirrors" in http_route:
        raise ConfigError(f"{path}: both mirror and mirrors (Istio refuses them together)")
    if "mirrorPercentage" in http_route and "mirror" not in http_route:
        raise ConfigError(f"{path}.mirrorPercentage without mirror")
    if "mirror" in http_route:
        entries = [(http_route["mirror"], http_route.get("mirrorPercentage"), f"{path}.mirror")]
    else:
        entries = [
            (
                require(entry, "destination", f"{path}.mirrors[{index}]"),
                entry.get("percentage"),
                f"{path}.mirrors[{index}]",
            )
            for index, entry in enumerate(http_route.get("mirrors", []))
        ]
    return [
        (
            service.destination_cluster(destination, entry_path),
            _percent(percentage, f"{entry_path}.percentage") if percentage is not None else 100.0,
        )
        for destination, percentage, entry_path in entries
    ]


def _mirror_policy(cluster: str, percent: float) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "runtime_fraction": {"default_value": {"numerator": mirror_numerator(percent), "denominator": "MILLION"}},
        "trace_sampled": False,
        # Istio >= 1.28 (DISABLE_SHADOW_HOST_SUFFIX): the copy keeps the primary's Host.
        "disable_shadow_host_suffix_append": True,
    }


def _marked_clusters(
    virtual_service: Mapping[str, Any], service: _Service, mirrored: list[str], path: str
) -> list[str]:
    """The clusters the ramp mirrors to: the targets annotation, which holds them even at 0 %."""
    annotations = virtual_service.get("metadata", {}).get("annotations", {})
    if TARGETS_ANNOTATION not in annotations:
        if not mirrored:
            raise ConfigError(
                f"{path}: the route {MIRROR_ROUTE_NAME!r} has no mirror and the VirtualService no annotation {TARGETS_ANNOTATION}"
            )
        return mirrored
    try:
        targets = mirror_targets(dict(virtual_service))
    except DriverError as e:
        raise ConfigError(f"VirtualService.metadata.annotations.{TARGETS_ANNOTATION}: {e}") from e
    annotated = [
        service.destination_cluster(
            target.destination(), f"VirtualService.metadata.annotations.{TARGETS_ANNOTATION}[{index}]"
        )
        for index, target in enumerate(targets)
    ]
    if mirrored and mirrored != annotated:
        raise ConfigError(f"{path}: mirrors to {mirrored} but the annotation {TARGETS_ANNOTATION} names {annotated}")
    return annotated


def outbound_cluster(
    name: str,
    endpoint: tuple[str, int],
    traffic_policy: Mapping[str, Any],
    paths: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A STATIC cluster on one endpoint with the connection pool, load balancer and outlier
    detection of a DestinationRule `traffic_policy` ({} gives istiod's defaults); `paths` says
    where each key of the policy was written (default: the top-level trafficPolicy)."""
    paths = {key: f"{_TOP_POLICY_PATH}.{key}" for key in traffic_policy} | dict(paths or {})
    pool = traffic_policy.get("connectionPool", {})
    tcp, http = pool.get("tcp", {}), pool.get("http", {})
    address, port = endpoint
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": envoy_duration(
            tcp.get("connectTimeout", _DEFAULT_CONNECT_TIMEOUT),
            f"{paths.get('connectionPool', _TOP_POLICY_PATH + '.connectionPool')}.tcp.connectTimeout",
        ),
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}
                    ]
                }
            ],
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": tcp.get("maxConnections", _UNLIMITED),
                    "max_pending_requests": http.get("http1MaxPendingRequests", _UNLIMITED),
                    "max_requests": http.get("http2MaxRequests", _UNLIMITED),
                    "max_retries": _UNLIMITED,
                    "track_remaining": True,
                }
            ]
        },
    }
    if "maxRequestsPerConnection" in http:
        cluster["typed_extension_protocol_options"] = {
            _HTTP_PROTOCOL_OPTIONS_NAME: {
                "@type": _HTTP_PROTOCOL_OPTIONS_TYPE,
                "common_http_protocol_options": {"max_requests_per_connection": http["maxRequestsPerConnection"]},
                "explicit_http_config": {"http_protocol_options": {}},
            }
        }
    if "consistentHash" in traffic_policy.get("loadBalancer", {}):
        cluster["lb_policy"] = "RING_HASH"
        cluster["ring_hash_lb_config"] = {"minimum_ring_size": _RING_HASH_MINIMUM_SIZE}
    if "outlierDetection" in traffic_policy:
        cluster["outlier_detection"] = _outlier_detection(traffic_policy["outlierDetection"], paths["outlierDetection"])
        # istiod: with outlier detection the panic threshold is 0, so ejected hosts stay ejected.
        cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}
    return cluster


def _outlier_detection(outlier: Mapping[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {"enforcing_success_rate": 0}  # istiod turns success-rate ejection off
    # istiod: each count given is enforced at 100 %, or not at all at 0. One left unset keeps
    # Envoy's default: consecutive_5xx 5 enforced, so gateway errors alone need consecutive5xxErrors 0.
    if "consecutive5xxErrors" in outlier:
        errors = outlier["consecutive5xxErrors"]
        out["consecutive_5xx"] = errors
        out["enforcing_consecutive_5xx"] = 100 if errors > 0 else 0
    if "consecutiveGatewayErrors" in outlier:
        # 502, 503, 504 and, as Envoy does not split locally originated errors by default, a
        # refused or timed-out connect (counted as a 503).
        errors = outlier["consecutiveGatewayErrors"]
        out["consecutive_gateway_failure"] = errors
        out["enforcing_consecutive_gateway_failure"] = 100 if errors > 0 else 0
    if "interval" in outlier:
        out["interval"] = envoy_duration(outlier["interval"], f"{path}.interval")
    if "baseEjectionTime" in outlier:
        out["base_ejection_time"] = envoy_duration(outlier["baseEjectionTime"], f"{path}.baseEjectionTime")
    if outlier.get("maxEjectionPercent", 0) > 0:
        out["max_ejection_percent"] = outlier["maxEjectionPercent"]
    return out


def _route_ports(route: Mapping[str, Any]) -> list[int]:
    action = route["route"]
    clusters = [action["cluster"], *(policy["cluster"] for policy in action.get("request_mirror_policies", []))]
    clusters += (
        route.get("metadata", {}).get("filter_metadata", {}).get(MIRROR_MARKER_KEY, {}).get("mirror_clusters", [])
    )
    return [int(cluster.split("|")[1]) for cluster in clusters]


def backend_endpoints(backends: Mapping[str, str], names: tuple[str, ...], *, what: str) -> dict[str, tuple[str, int]]:
    """Each of `names` (the `what`s: DestinationRule subsets, version Services) -> the loopback
    (address, port) that `backends` gives it; ConfigError when one is missing, unknown or not loopback."""
    unknown = sorted(set(backends) - set(names))
    missing = [name for name in names if name not in backends]
    if unknown or missing:
        raise ConfigError(f"backends: every {what} {list(names)} needs one (missing {missing}, unknown {unknown})")
    endpoints = {}
    for name, backend in backends.items():
        host, _, port = backend.rpartition(":")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback or not port.isdigit():
            raise ConfigError(
                f"backends[{name!r}]: {backend!r} is not a loopback 'address:port' (the sandbox listens on loopback only)"
            )
        endpoints[name] = (host, int(port))
    return endpoints


def _percent(percentage: Mapping[str, Any], path: str) -> float:
    value = float(require(percentage, "value", path))
    if not 0 <= value <= 100:
        raise ConfigError(f"{path}.value {value}: a percentage between 0 and 100")
    return value


def _fractional_percent(percentage: Mapping[str, Any], path: str) -> dict[str, Any]:
    return {"numerator": mirror_numerator(_percent(percentage, path)), "denominator": "MILLION"}


def envoy_duration(duration: str, path: str) -> str:
    """A Go duration as Istio accepts it ("2s", "1m30s", "250ms") in protobuf JSON ("0.250s")."""
    parts = _GO_DURATION.findall(duration)
    if not parts or "".join(number + unit for number, unit in parts) != duration:
        raise ConfigError(f"{path}: {duration!r} is not a duration like 5s, 250ms or 1m30s")
    seconds = sum(float(number) * _GO_DURATION_UNITS[unit] for number, unit in parts)
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def check_kind(resource: Mapping[str, Any], kind: str) -> None:
    """ConfigError unless `resource` is a `kind`."""
    if resource.get("kind") != kind:
        raise ConfigError(f"{kind}: kind is {resource.get('kind')!r}")


def require(mapping: Mapping[str, Any], key: str, path: str) -> Any:
    """mapping[key]; ConfigError naming `path.key` when it is missing."""
    if key not in mapping:
        raise ConfigError(f"{path}.{key} is missing")
    return mapping[key]


def check_shape(value: Any, shape: Any, path: str) -> None:
    """ConfigError at the first field of `value` that `shape` does not have, or of another type."""
    if isinstance(shape, dict):
        _check_mapping(value, shape, path)
    elif isinstance(shape, list):
        _check_list(value, shape[0], path)
    elif isinstance(shape, Names):
        _check_names(value, shape.shape, path)
    elif isinstance(value, bool) or not isinstance(value, shape):
        expected = " or ".join(t.__name__ for t in shape) if isinstance(shape, tuple) else shape.__name__
        raise ConfigError(f"{path}: {value!r} is not a {expected}")


def _check_mapping(value: Any, shape: dict[str, Any], path: str) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: {value!r} is not a mapping")
    for key, item in value.items():
        if key not in shape:
            raise ConfigError(
                f"{path}.{key}: not supported by the sandbox's Envoy translation (supported here: {', '.join(shape)})"
            )
        check_shape(item, shape[key], f"{path}.{key}")


def _check_list(value: Any, shape: Any, path: str) -> None:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: {value!r} is not a list")
    for index, item in enumerate(value):
        check_shape(item, shape, f"{path}[{index}]")


def _check_names(value: Any, shape: Any, path: str) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: {value!r} is not a mapping")
    for name, item in value.items():
        check_shape(item, shape, f"{path}.{name}")
