"""The Istio DestinationRule of one inventory service: its subsets and traffic policies.

One place knows how an entry of `mirror_services` becomes a DestinationRule: role mirror_istio
renders it through the filter `mirror_istio_destination_rule`, and the sandbox harness
(mirrorsandbox.harness) builds the same resource for Envoy without Ansible.

The inventory writes the policy in snake_case; the resource has Istio's camelCase, with only the
keys the inventory sets (an empty group renders nothing). A service's `load_balancer`,
`connection_pool` and `outlier_detection` are the top-level `trafficPolicy`, which applies to
every subset; a subset's own `connection_pool` and `outlier_detection` are that subset's
`trafficPolicy`, which istiod merges over the top-level one key by key (a subset's
`connectionPool` or `outlierDetection` replaces the top-level one whole, nothing inside is merged).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mirrorramp.errors import ConfigError

API_VERSION = "networking.istio.io/v1"
KIND = "DestinationRule"

# inventory key -> Istio field, per group; the kind says how a value is written.
_INTEGER, _DURATION = "integer", "duration"
_CONNECTION_POOL_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "tcp": {
        "max_connections": ("maxConnections", _INTEGER),
        "connect_timeout": ("connectTimeout", _DURATION),
    },
    "http": {
        "http1_max_pending_requests": ("http1MaxPendingRequests", _INTEGER),
        "http2_max_requests": ("http2MaxRequests", _INTEGER),
        "max_requests_per_connection": ("maxRequestsPerConnection", _INTEGER),
    },
}
_OUTLIER_DETECTION_FIELDS: dict[str, tuple[str, str]] = {
    "consecutive_5xx_errors": ("consecutive5xxErrors", _INTEGER),
    "consecutive_gateway_errors": ("consecutiveGatewayErrors", _INTEGER),
    "interval": ("interval", _DURATION),
    "base_ejection_time": ("baseEjectionTime", _DURATION),
    "max_ejection_percent": ("maxEjectionPercent", _INTEGER),
}


def destination_rule(
    service: Mapping[str, Any], *, host: str, namespace: str, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The DestinationRule of `service` (an entry of `mirror_services`) for `host` in `namespace`,
    labelled `labels`: every subset with its labels (and its own traffic policy, if any), and the
    service's traffic policy when it sets one. ConfigError names the first value it cannot write."""
    name = _required(service, "name", "service: ")
    where = f"service {name!r}: "
    subsets = service.get("subsets")
    if not isinstance(subsets, list) or not subsets:
        raise ConfigError(f"{where}subsets = {subsets!r}: must be a non-empty list of {{name, labels}}")
    spec: dict[str, Any] = {
        "host": host,
        "subsets": [_subset(subset, f"{where}subsets[{index}]") for index, subset in enumerate(subsets)],
    }
    policy = traffic_policy(service, where)
    if policy:
        spec["trafficPolicy"] = policy
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": spec,
    }


def traffic_policy(settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The `trafficPolicy` of a service's `load_balancer`, `connection_pool` and `outlier_detection`
    ({} when it sets none); `where` starts the paths in the messages ("service 'user-service': ")."""
    policy = _pool_and_ejection(settings, where)
    header = _group(settings, "load_balancer", where).get("consistent_hash_header")
    if header is not None:
        header_name = _string(header, "load_balancer.consistent_hash_header", where)
        policy["loadBalancer"] = {"consistentHash": {"httpHeaderName": header_name}}
    return policy


def _subset(subset: object, path: str) -> dict[str, Any]:
    if not isinstance(subset, Mapping):
        raise ConfigError(f"{path} = {subset!r}: must be a mapping {{name, labels}}")
    where = f"{path}."
    labels = _required(subset, "labels", where)
    if not isinstance(labels, Mapping):
        raise ConfigError(f"{where}labels = {labels!r}: must be a mapping of pod labels")
    entry: dict[str, Any] = {"name": _required(subset, "name", where), "labels": dict(labels)}
    policy = _pool_and_ejection(subset, where)
    if policy:
        entry["trafficPolicy"] = policy
    return entry


def _pool_and_ejection(settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`connectionPool` and `outlierDetection`, the part of a traffic policy a subset may set too."""
    policy: dict[str, Any] = {}
    pool_settings = _group(settings, "connection_pool", where)
    pool = {}
    for group, fields in _CONNECTION_POOL_FIELDS.items():
        path = f"connection_pool.{group}"
        values = _fields(_group(pool_settings, group, where, path), fields, path, where)
        if values:
            pool[group] = values
    if pool:
        policy["connectionPool"] = pool
    outlier_settings = _group(settings, "outlier_detection", where)
    outlier = _fields(outlier_settings, _OUTLIER_DETECTION_FIELDS, "outlier_detection", where)
    if outlier:
        policy["outlierDetection"] = outlier
    return policy


def _group(settings: Mapping[str, Any], key: str, where: str, path: str | None = None) -> Mapping[str, Any]:
    """settings[key] as a mapping ({} when absent or null); `path` names it in the message."""
    value = settings.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}{path or key} = {value!r}: must be a mapping")
    return value


def _fields(group: Mapping[str, Any], fields: Mapping[str, tuple[str, str]], path: str, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (field, kind) in fields.items():
        if key in group:
            value, key_path = group[key], f"{path}.{key}"
            out[field] = _integer(value, key_path, where) if kind == _INTEGER else _string(value, key_path, where)
    return out


def _integer(value: object, path: str, where: str) -> int:
    """A whole number; a string of digits counts (an extra var given as key=value is one)."""
    if isinstance(value, bool) or not isinstance(value, int | str) or (isinstance(value, str) and not value.isdigit()):
        raise ConfigError(f"{where}{path} = {value!r}: must be a whole number")
    return int(value)


def _string(value: object, path: str, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}{path} = {value!r}: must be a string")
    return str(value)  # a plain str: the YAML writer gets no subclass of the caller's


def _required(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ConfigError(f"{where}{key} is missing")
    return mapping[key]
