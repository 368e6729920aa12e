"""Pure filter: the inputs of role mirror_preflight flattened into the rows its checks read.

The rows were lazy Jinja variables in roles/mirror_preflight/vars/main.yml, built with quadratic
list appends and templated again by every check that read them (about 1 s a check at 100
services), and the unique-name check compared each service with every earlier one. Here they are
one pass in Python, set once by the preflight: the same rows in the same order, each with the
inventory path that the messages name, plus whether a name is taken by an earlier one.

The tests below follow Jinja's: a mapping is a `Mapping`, a list is what Jinja's `sequence` test
takes (a length and items: a mapping too) and is not a string, a key left out reads as absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Number
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible.plugins.filter.core import to_bool
from jinja2.tests import test_sequence

# The documentation is mirror_preflight_rows.yml beside this file (ansible-doc -t filter).

# Each service's and each subset's optional durations, in the order of Jinja's dictsort of the keys.
_SERVICE_DURATION_KEYS = ("retries.per_try_timeout", "timeout")
_POLICY_DURATION_KEYS = (
    "connection_pool.tcp.connect_timeout",
    "outlier_detection.base_ejection_time",
    "outlier_detection.interval",
)
_SEVERITIES = ("warning", "critical")
# The lists of argument gateway_api: the keys of an HTTPRouteMatch, the settings only Istio renders.
_GATEWAY_API_KEYS = ("http_route_match_keys", "istio_only_keys", "istio_only_subset_keys")


def _get(value: Any, key: str) -> Any:
    """`value.key | default(none)`: None where value is not a mapping or has no such key."""
    return value.get(key) if isinstance(value, Mapping) else None


def _is_list(value: Any) -> bool:
    """Jinja's `value is sequence and value is not string` (a mapping passes, as in Jinja)."""
    return not isinstance(value, str) and test_sequence(value)


def _entries(holder: Any, key: str) -> list[Any]:
    """The entries of list `key` of `holder`, none where it is absent or not a list."""
    value = _get(holder, key)
    return list(value) if _is_list(value) else []


def _name_taken(names: list[Any]) -> list[bool]:
    """For each name, whether an earlier entry has the same name (one pass, not a pair per entry).
    Only a string can be taken: any other name fails the name check before it is compared."""
    seen: set[str] = set()
    taken = []
    for name in names:
        is_name = isinstance(name, str)
        taken.append(is_name and name in seen)
        if is_name:
            seen.add(name)
    return taken


def _policy_durations(path: str, settings: Any) -> list[dict[str, Any]]:
    """The durations of a connection pool and an outlier detection (a service's or a subset's own)."""
    pool = _get(settings, "connection_pool")
    outlier = _get(settings, "outlier_detection")
    values = {
        "connection_pool.tcp.connect_timeout": _get(_get(pool, "tcp"), "connect_timeout"),
        "outlier_detection.base_ejection_time": _get(outlier, "base_ejection_time"),
        "outlier_detection.interval": _get(outlier, "interval"),
    }
    return [{"path": f"{path}.{key}", "value": values[key]} for key in _POLICY_DURATION_KEYS if values[key] is not None]


def _baseline_row(path: str, svc: Mapping[str, Any]) -> dict[str, Any] | None:
    """A service whose baseline and primary subsets both exist with labels, with the labels that
    the two set to different values; None otherwise (the other checks report the rest)."""
    named = [
        sub
        for sub in _entries(svc, "subsets")
        if isinstance(sub, Mapping) and isinstance(sub.get("labels"), Mapping) and "name" in sub
    ]
    baseline = next((sub["labels"] for sub in named if sub["name"] == svc["baseline_subset"]), None)
    primary = next((sub["labels"] for sub in named if sub["name"] == svc.get("primary_subset")), None)
    if baseline is None or primary is None or svc["baseline_subset"] == svc.get("primary_subset"):
        return None
    # Jinja compared the values as strings: `version: 1` and `version: "1"` select the same pods.
    conflicts = [key for key, value in primary.items() if key in baseline and str(baseline[key]) != str(value)]
    return {
        "path": path,
        "subset": svc["baseline_subset"],
        "baseline_labels": baseline,
        "primary_labels": primary,
        "conflicts": conflicts,
    }


def _threshold_rows(thresholds: Any) -> list[dict[str, Any]]:
    """`thresholds | dictsort` (keys without regard to case), each value {} where it is not a mapping."""
    if not isinstance(thresholds, Mapping):
        return []
    return [
        {"path": f"mirror_thresholds.{key}", "key": key, "value": value if isinstance(value, Mapping) else {}}
        for key, value in sorted(thresholds.items(), key=lambda item: _sort_key(item[0]))
    ]


def _sort_key(key: Any) -> Any:
    """Jinja's sort of keys: strings without regard to case."""
    return key.lower() if isinstance(key, str) else key


def _percent_rows(steps: Any, services: list[Any]) -> list[dict[str, Any]]:
    """The percentages the ramp driver sets, where they are numbers: every step's, then every
    service's mirror_percent (its percent until the ramp first runs)."""
    values = [
        (f"mirror_ramp_steps[{index}].percent", step["percent"])
        for index, step in enumerate(steps if _is_list(steps) else [])
        if isinstance(step, Mapping) and "percent" in step
    ] + [
        (f"mirror_services[{index}].mirror_percent", svc["mirror_percent"])
        for index, svc in enumerate(services)
        if isinstance(svc, Mapping) and "mirror_percent" in svc
    ]
    return [
        {"path": path, "value": value}
        for path, value in values
        if isinstance(value, Number) and not isinstance(value, bool)
    ]


def _envoy_duration_rows(proxy_features: Any, envoy_minimums: Any) -> list[dict[str, Any]]:
    """The Envoy durations where they are set, each with the least value Envoy takes (seconds)."""
    rows = []
    for bound in envoy_minimums if _is_list(envoy_minimums) else []:
        settings = _get(proxy_features, bound["feature"])
        if isinstance(settings, Mapping) and bound["key"] in settings:
            rows.append(
                {
                    "path": f"mirror_proxy.{bound['feature']}.{bound['key']}",
                    "value": settings[bound["key"]],
                    "minimum": bound["minimum"],
                    "inclusive": bound["inclusive"],
                }
            )
    return rows


def _bad_route_matches(path: str, svc: Mapping[str, Any], match_keys: list[Any]) -> list[dict[str, Any]]:
    """The mirror_match entries of a gateway-api service that are not HTTPRouteMatch entries: a
    key outside `match_keys` (and method, with mirror_all_methods), or headers or queryParams given
    as a mapping or a string instead of a list."""
    match = svc.get("mirror_match", [])
    if isinstance(match, Mapping):
        entries = [(f"{path}.mirror_match", match)]
    elif _is_list(match):
        entries = [(f"{path}.mirror_match[{index}]", entry) for index, entry in enumerate(match)]
    else:
        entries = []
    all_methods = to_bool(svc.get("mirror_all_methods", False))
    allowed = [*match_keys, *(["method"] if all_methods else [])]
    return [
        {"path": entry_path, "value": entry, "all_methods": all_methods}
        for entry_path, entry in entries
        if not isinstance(entry, Mapping)
        or any(key not in allowed for key in entry)
        or any(isinstance(entry.get(key), Mapping | str) for key in ("headers", "queryParams"))
    ]


def _gateway_api_row(
    path: str, svc: Mapping[str, Any], gateway_api: Mapping[str, Any], fault_enabled: bool
) -> dict[str, Any]:
    """A gateway-api service: its mirror targets naming a host, its mirror_match entries that are
    not HTTPRouteMatch entries, and its settings (its subsets' too) that only Istio renders."""
    subset_keys = [
        f"subsets[{position}].{key}"
        for position, sub in enumerate(_entries(svc, "subsets"))
        if isinstance(sub, Mapping)
        for key in gateway_api["istio_only_subset_keys"]
        if key in sub
    ]
    return {
        "path": path,
        "name": svc.get("name", "?"),
        # The mirror's own index (the Jinja loop counted only the mirrors that named a host).
        "mirror_hosts": [
            {"path": f"{path}.mirrors[{position}]", "host": mirror["host"]}
            for position, mirror in enumerate(_entries(svc, "mirrors"))
            if isinstance(mirror, Mapping) and "host" in mirror
        ],
        "bad_matches": _bad_route_matches(path, svc, gateway_api["http_route_match_keys"]),
        "unrendered": [key for key in gateway_api["istio_only_keys"] if key in svc]
        + subset_keys
        + (["mirror_proxy.fault"] if fault_enabled else []),
    }


def mirror_preflight_rows(
    services: Any,
    namespace: Any = None,
    mesh_api: Any = None,
    gateway_hpa: Any = None,
    alert_window: Any = None,
    no_traffic_for: Any = None,
    alert_for: Any = None,
    monitoring: Any = None,
    fault: Any = None,
    thresholds: Any = None,
    ramp_steps: Any = None,
    proxy_features: Any = None,
    envoy_minimums: Any = None,
    gateway_api: Any = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every kind of row of the preflight, by kind: services, subsets, mirrors, baselines,
    namespaces, mesh_apis, ports, durations, thresholds, percents, envoy_durations and gateway_apis."""
    if not _is_list(services) or isinstance(services, Mapping):
        raise AnsibleFilterError(
            f"mirror_preflight_rows: services = {services!r}: must be a list (mirror_preflight_services)"
        )
    if not isinstance(alert_for, Mapping):
        raise AnsibleFilterError(
            f"mirror_preflight_rows: alert_for = {alert_for!r}: must be a mapping (mirror_preflight_alert_for)"
        )
    if gateway_api is not None and not (
        isinstance(gateway_api, Mapping) and all(_is_list(gateway_api.get(key)) for key in _GATEWAY_API_KEYS)
    ):
        raise AnsibleFilterError(
            f"mirror_preflight_rows: gateway_api = {gateway_api!r}: must be a mapping of the lists "
            f"{', '.join(_GATEWAY_API_KEYS)}"
        )
    services = list(services)
    rows: dict[str, list[dict[str, Any]]] = {
        "services": [],
        "subsets": [],
        "mirrors": [],
        "baselines": [],
        "namespaces": [{"path": "mirror_namespace", "value": namespace}],
        "mesh_apis": [{"path": "mirror_mesh_api", "value": mesh_api}],
        "ports": [],
        "durations": [
            {"path": "mirror_alert_window", "value": alert_window},
            {"path": "mirror_no_traffic_for", "value": no_traffic_for},
            {"path": "mirror_monitoring.interval", "value": _get(monitoring, "interval")},
            *({"path": f"mirror_alert_for.{key}", "value": alert_for.get(key)} for key in _SEVERITIES),
            *(
                {"path": f"mirror_alert_for.{key}", "value": alert_for[key]}
                for key in sorted((key for key in alert_for if key not in _SEVERITIES), key=_sort_key)
            ),
        ],
        "thresholds": _threshold_rows(thresholds),
        "percents": _percent_rows(ramp_steps, services),
        "envoy_durations": _envoy_duration_rows(proxy_features, envoy_minimums),
        "gateway_apis": [],
    }
    # `fault.enabled | default(false) | bool`: every value that is false reads as false (a null too,
    # without the bool filter's warning). The fault renders for no gateway-api service.
    fault_enabled = to_bool(_get(fault, "enabled") or False)
    # The services' own connection pools and outlier detections come before every subset's.
    service_policy_durations: list[dict[str, Any]] = []
    subset_policy_durations: list[dict[str, Any]] = []
    for index, (svc, name_taken) in enumerate(
        zip(services, _name_taken([_get(svc, "name") for svc in services]), strict=True)
    ):
        path = f"mirror_services[{index}]"
        rows["services"].append({"path": path, "index": index, "svc": svc, "name_taken": name_taken})
        service_policy_durations.extend(_policy_durations(path, svc))

        subsets = _entries(svc, "subsets")
        subset_names = [_get(sub, "name") for sub in subsets]
        for position, (sub, subset_name_taken) in enumerate(zip(subsets, _name_taken(subset_names), strict=True)):
            sub_path = f"{path}.subsets[{position}]"
            settings = sub if isinstance(sub, Mapping) else {}
            rows["subsets"].append({"path": sub_path, "sub": settings, "name_taken": subset_name_taken})
            subset_policy_durations.extend(_policy_durations(sub_path, settings))

        names_of_mapping_subsets = [sub.get("name") for sub in subsets if isinstance(sub, Mapping)]
        for position, mirror in enumerate(_entries(svc, "mirrors")):
            rows["mirrors"].append(
                {
                    "path": f"{path}.mirrors[{position}]",
                    "subset": _get(mirror, "subset"),
                    "subset_names": names_of_mapping_subsets,
                    "primary": _get(svc, "primary_subset"),
                }
            )

        # The path is the service's own index (the Jinja loops counted only the services that set the key).
        if isinstance(svc, Mapping) and "baseline_subset" in svc and (baseline := _baseline_row(path, svc)):
            rows["baselines"].append(baseline)
        if isinstance(svc, Mapping) and "namespace" in svc:
            rows["namespaces"].append({"path": f"{path}.namespace", "value": svc["namespace"]})
        if isinstance(svc, Mapping) and "mesh_api" in svc:
            rows["mesh_apis"].append({"path": f"{path}.mesh_api", "value": svc["mesh_api"]})
        if gateway_api is not None and isinstance(svc, Mapping) and svc.get("mesh_api", mesh_api) == "gateway-api":
            rows["gateway_apis"].append(_gateway_api_row(path, svc, gateway_api, fault_enabled))

        rows["ports"].append({"path": f"{path}.port", "value": _get(svc, "port")})
        grpc = _get(svc, "grpc")
        if isinstance(grpc, Mapping) and "port" in grpc:
            rows["ports"].append({"path": f"{path}.grpc.port", "value": grpc["port"]})

        service_durations = {
            "retries.per_try_timeout": _get(_get(svc, "retries"), "per_try_timeout"),
            "timeout": _get(svc, "timeout"),
        }
        rows["durations"].extend(
            {"path": f"{path}.{key}", "value": service_durations[key]}
            for key in _SERVICE_DURATION_KEYS
            if service_durations[key] is not None
        )
    rows["durations"] += service_policy_durations + subset_policy_durations
    # As the Jinja rows read it (`{% if enabled %}`): the value's truth.
    if _get(gateway_hpa, "enabled"):
        rows["namespaces"].append({"path": "mirror_gateway_hpa.namespace", "value": _get(gateway_hpa, "namespace")})
    delay = _get(fault, "delay")
    if isinstance(delay, Mapping) and "fixed_delay" in delay:
        rows["durations"].append({"path": "mirror_proxy.fault.delay.fixed_delay", "value": delay["fixed_delay"]})
    return rows


class FilterModule:
    def filters(self):
        return {"mirror_preflight_rows": mirror_preflight_rows}
