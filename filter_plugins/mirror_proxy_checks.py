"""Pure filter: the failures of the checks of role mirror_proxy, as its messages.

Each check was an assert task of its own: about 0.05 s a task even when nothing failed (a forked
worker, plugin loading, the task's expressions compiled afresh), more where a Jinja loop walked the
services through Ansible's lazy containers (about 1.3 s for the eight at 100 services). Here every
check is one function, in the order the tasks had, and the role loops one assert over the messages:
a good inventory has none.

Each message is the one the Jinja check gave, word for word, with its values written by Ansible's
own to_json filter and tested by Ansible's own match test. The conditions follow Jinja's tests:
`integer` is an int and not a boolean, `number` any number (a boolean too, as in Jinja), a list is
what Jinja's `sequence` test takes (a mapping too) and is not a string, a key left out is absent.

The tasks stopped at the first check that failed; here every check runs. A check that reads what an
earlier one guards looks only at the services that passed it (a service without a name has no name
to word; one without a primary subset with labels has no labels to compare).
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Number
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible.plugins.filter.core import to_json
from ansible.plugins.test.core import match
from jinja2.tests import test_sequence

# The documentation is mirror_proxy_checks.yml beside this file (ansible-doc -t filter).

# A service's name (the pods' app label) and a namespace: DNS-1123 labels. A Deployment's name: a
# DNS-1123 subdomain (dots allowed).
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DEPLOYMENT_NAME = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"
# The sidecar container of every pod, which an autoscaler cannot target.
_SIDECAR_CONTAINER = "istio-proxy"
# The smallest durations Envoy takes, in seconds.
_MIN_FILL_INTERVAL = 0.05
_MIN_RTT_INTERVAL = 0.001


def _is_integer(value: Any) -> bool:
    """Jinja's `integer` test: an int that is not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list(value: Any) -> bool:
    """Jinja's `value is sequence and value is not string` (a mapping passes, as in Jinja)."""
    return not isinstance(value, str) and test_sequence(value)


def _text(value: Any) -> str:
    """A value as a Jinja template in Ansible writes it into text: null as nothing."""
    return "" if value is None else str(value)


def _seconds_at_least(value: Any, duration_pattern: str, minimum: float, *, inclusive: bool = True) -> bool:
    """An Envoy duration (`1s`, `0.1s`) of at least `minimum` seconds (above it where not inclusive)."""
    if not (isinstance(value, str) and match(value, duration_pattern)):
        return False
    seconds = float(value[:-1])
    return seconds >= minimum if inclusive else seconds > minimum


def _has_name_and_namespace(svc: Any, namespace: Any) -> bool:
    name = svc.get("name") if isinstance(svc, Mapping) else None
    # `namespace | default(mirror_proxy_namespace, true)`: an empty or null one is the environment's.
    own_namespace = (svc.get("namespace") if isinstance(svc, Mapping) else None) or namespace
    return isinstance(name, str) and match(name, _DNS_LABEL) and match(own_namespace, _DNS_LABEL)


def _primary_labels(svc: Mapping[str, Any]) -> Any:
    """The labels of the first subset named as the primary; None where there is none or it has none."""
    subsets = svc.get("subsets")
    entries = subsets if _is_list(subsets) and not isinstance(subsets, str | Mapping) else []
    primary = next(
        (
            sub
            for sub in entries
            if isinstance(sub, Mapping) and "name" in sub and sub["name"] == svc.get("primary_subset")
        ),
        {},
    )
    return primary.get("labels")


def _has_primary_labels(svc: Mapping[str, Any]) -> bool:
    labels = _primary_labels(svc)
    return isinstance(labels, Mapping) and len(labels) > 0


def _names_failures(services: list[Any], namespace: Any) -> list[str]:
    return [
        "mirror_services: every service needs a name (a DNS label, the pods' app label) and a namespace (its own "
        # `item.name | default(item)`: the whole service where it has no name.
        f"or mirror_namespace); fix {_text(svc['name']) if isinstance(svc, Mapping) and 'name' in svc else svc}."
        for svc in services
        if not _has_name_and_namespace(svc, namespace)
    ]


def _primary_subset_failures(services: list[Mapping[str, Any]]) -> list[str]:
    return [
        f"mirror_proxy.filter_workloads is primary, so the EnvoyFilters of {svc['name']} select its primary "
        f"subset's pods: primary_subset ({to_json(svc.get('primary_subset'))}) must name one of its subsets, "
        "with labels. Fix mirror_services, or set mirror_proxy.filter_workloads to service to put the filters "
        "on every pod of the service, mirror targets included."
        for svc in services
        if not _has_primary_labels(svc)
    ]


def _overlapping_subsets(svc: Mapping[str, Any], primary_labels: Mapping[str, Any]) -> list[Any]:
    """The other subsets that set none of the primary's labels to another value: the same rule as
    mirror_preflight's baseline check (disjoint pods need one label with different values)."""
    overlapping = []
    for sub in svc["subsets"]:
        sub_name = sub.get("name") if isinstance(sub, Mapping) else None
        if sub_name == svc["primary_subset"]:
            continue
        labels = sub.get("labels") if isinstance(sub, Mapping) else None
        labels = labels if isinstance(labels, Mapping) else {}
        if not any(key in labels and labels[key] != value for key, value in primary_labels.items()):
            overlapping.append(sub_name)
    return overlapping


def _overlap_failures(services: list[Mapping[str, Any]]) -> list[str]:
    failures = []
    for svc in services:
        primary_labels = _primary_labels(svc)
        if overlapping := _overlapping_subsets(svc, primary_labels):
            failures.append(
                f"mirror_proxy.filter_workloads is primary, but the subsets {to_json(overlapping)} of {svc['name']} "
                f"set none of the primary subset's labels {to_json(primary_labels)} to another value, so the "
                "EnvoyFilters of the primary would select their pods too: give each subset a label the primary "
                "sets to another value (such as version: v2)."
            )
    return failures


def _rate_limit_failures(rate_limit: Mapping[str, Any], duration_pattern: str) -> list[str]:
    max_tokens = rate_limit.get("max_tokens")
    tokens_per_fill = rate_limit.get("tokens_per_fill")
    if (
        _is_integer(max_tokens)
        and max_tokens > 0
        and _is_integer(tokens_per_fill)
        and tokens_per_fill > 0
        and _seconds_at_least(rate_limit.get("fill_interval"), duration_pattern, _MIN_FILL_INTERVAL)
    ):
        return []
    return [
        "mirror_proxy.rate_limit: max_tokens and tokens_per_fill must be positive integers and fill_interval an "
        'Envoy duration in seconds of at least 0.05s (for example "1s"); got '
        f"{to_json(rate_limit)}."
    ]


def _adaptive_failures(adaptive: Mapping[str, Any], duration_pattern: str) -> list[str]:
    percentile = adaptive.get("sample_percentile")
    request_count = adaptive.get("min_rtt_request_count")
    if (
        isinstance(percentile, Number)
        and 0 < percentile <= 100
        and _seconds_at_least(adaptive.get("concurrency_update_interval"), duration_pattern, 0, inclusive=False)
        and _seconds_at_least(adaptive.get("min_rtt_interval"), duration_pattern, _MIN_RTT_INTERVAL)
        and _is_integer(request_count)
        and request_count > 0
    ):
        return []
    return [
        "mirror_proxy.adaptive_concurrency: sample_percentile must be in (0, 100], concurrency_update_interval "
        'and min_rtt_interval Envoy durations in seconds ("0.1s", "60s"; min_rtt_interval at least 0.001s) and '
        f"min_rtt_request_count a positive integer; got {to_json(adaptive)}."
    ]


def _cache_failures(environment: Any) -> list[str]:
    if environment != "prod":
        return []
    return [
        "mirror_proxy.cache is enabled in prod: Envoy marks its cache filter and the in-memory SimpleHttpCache work "
        "in progress, and that storage has no size limit. Set mirror_proxy.cache.enabled to false in inventories/prod."
    ]


def _authorization_failures(authorization: Mapping[str, Any]) -> list[str]:
    # `principals | default([])`: absent is none; each must be a non-empty string.
    principals = authorization.get("principals", [])
    if _is_list(principals) and len(principals) > 0 and all(isinstance(p, str) and p for p in principals):
        return []
    return [
        "mirror_proxy.authorization.principals must list at least one peer identity "
        '("cluster.local/ns/<namespace>/sa/<service account>"); with none the ALLOW policy would deny every '
        f"caller. Got {to_json(principals)}."
    ]


def _gateway_hpa_failures(hpa: Mapping[str, Any]) -> list[str]:
    min_replicas = hpa.get("min_replicas")
    max_replicas = hpa.get("max_replicas")
    cpu_utilization = hpa.get("cpu_utilization")
    if (
        match(hpa.get("namespace", ""), _DNS_LABEL)
        and match(hpa.get("deployment", ""), _DEPLOYMENT_NAME)
        and hpa.get("deployment") != _SIDECAR_CONTAINER
        and _is_integer(min_replicas)
        and _is_integer(max_replicas)
        and min_replicas >= 1
        and max_replicas >= min_replicas
        and _is_integer(cpu_utilization)
        and cpu_utilization > 0
    ):
        return []
    return [
        "mirror_gateway_hpa: needs the namespace and name of the ingress gateway Deployment (istio-proxy is the "
        "sidecar container, not a Deployment), 1 <= min_replicas <= max_replicas and a positive cpu_utilization; "
        f"got {to_json(hpa)}."
    ]


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AnsibleFilterError(f"mirror_proxy_checks: {name} = {value!r}: must be a mapping")
    return value


def mirror_proxy_checks(
    services: Any,
    namespace: Any,
    environment: Any,
    settings: Any,
    filter_workloads: Any,
    enabled_features: Any,
    enabled_keys: Any,
    duration_pattern: str,
    gateway_hpa: Any = None,
    gateway_hpa_enabled: bool = False,
) -> list[str]:
    """The message of every failed check of role mirror_proxy, in the order of its checks, then of the services."""
    if not _is_list(services) or isinstance(services, Mapping):
        raise AnsibleFilterError(
            f"mirror_proxy_checks: services = {services!r}: must be a list (mirror_proxy_services)"
        )
    settings = _mapping(settings, "settings")
    services = list(services)
    failures = _names_failures(services, namespace)
    named = [svc for svc in services if _has_name_and_namespace(svc, namespace)]
    envoy_filters_on_primary = filter_workloads == "primary" and any(
        isinstance(feature, Mapping) and feature.get("kind") == "EnvoyFilter" for feature in enabled_features
    )
    if envoy_filters_on_primary:
        failures += _primary_subset_failures(named)
        failures += _overlap_failures([svc for svc in named if _has_primary_labels(svc)])
    if "rate_limit" in enabled_keys:
        failures += _rate_limit_failures(_mapping(settings["rate_limit"], "settings.rate_limit"), duration_pattern)
    if "adaptive_concurrency" in enabled_keys:
        failures += _adaptive_failures(
            _mapping(settings["adaptive_concurrency"], "settings.adaptive_concurrency"), duration_pattern
        )
    if "cache" in enabled_keys:
        failures += _cache_failures(environment)
    if "authorization" in enabled_keys:
        failures += _authorization_failures(_mapping(settings["authorization"], "settings.authorization"))
    if gateway_hpa_enabled:
        failures += _gateway_hpa_failures(_mapping(gateway_hpa, "gateway_hpa"))
    return failures


class FilterModule:
    def filters(self):
        return {"mirror_proxy_checks": mirror_proxy_checks}
